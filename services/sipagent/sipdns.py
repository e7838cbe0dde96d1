"""RFC 3263 lookups with dnspython's asyncio resolver, under one deadline.

``SipResolver.resolve`` asks NAPTR, SRV and A/AAAA as ``resolve.py`` says
and returns the targets in the order to try them, with a trail of what was
asked (``bridge probe`` prints it). ``SIP_DNS_SERVERS`` replaces
/etc/resolv.conf; without it, A/AAAA go through the system (``getaddrinfo``,
so /etc/hosts applies) and NAPTR/SRV through the resolv.conf servers.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver

from services.common.sipaddr import is_ip
from services.sipagent.resolve import (
    Naptr,
    Srv,
    Target,
    default_port,
    naptr_choices,
    needs_srv,
    srv_order,
    srv_queries,
)

log = logging.getLogger(__name__)

RESOLVE_TIMEOUT = 5.0
"Seconds allowed to all the lookups of one resolution."


class ResolveError(Exception):
    """No target: the message says what was asked and why it failed."""


@dataclass
class Resolution:
    targets: list[Target]
    trail: list[str] = field(default_factory=list)
    "What was asked and found, one line each (``SRV _sip._udp.example.com: a:5060, b:5060``)."


class SipResolver:
    """Finds the targets of a SIP server name (trunk or outbound proxy)."""

    def __init__(
        self,
        servers: Sequence[tuple[str, int]] = (),
        *,
        ipv6: bool = False,
        timeout: float = RESOLVE_TIMEOUT,
        rng: random.Random | None = None,
    ) -> None:
        self._servers = tuple(servers)
        self._ipv6 = ipv6
        self._timeout = timeout
        self._rng = rng or random.Random()
        self._dns: dns.asyncresolver.Resolver | None = None
        "Built on first use: reading resolv.conf is I/O."

    def _resolver(self) -> dns.asyncresolver.Resolver | None:
        if self._dns is None:
            if self._servers:
                resolver = dns.asyncresolver.Resolver(configure=False)
                resolver.nameservers = [
                    dns.nameserver.Do53Nameserver(host, port) for host, port in self._servers
                ]
            else:
                try:
                    resolver = dns.asyncresolver.Resolver()
                except dns.resolver.NoResolverConfiguration:
                    return None  # no resolv.conf: no NAPTR/SRV, addresses via the system
            # Half the budget a query: a dead server still leaves time for the address.
            resolver.lifetime = self._timeout / 2
            resolver.cache = dns.resolver.Cache()
            self._dns = resolver
        return self._dns

    async def resolve(
        self, host: str, port: int, transport: str, *, explicit: bool = True
    ) -> Resolution:
        """The targets of ``host`` in order; ``ResolveError`` if none, or after the timeout."""
        try:
            async with asyncio.timeout(self._timeout):
                return await self._resolve(host, port, transport, explicit)
        except TimeoutError:
            raise ResolveError(f"{host} did not resolve in {self._timeout:g} s") from None

    async def _resolve(self, host: str, port: int, transport: str, explicit: bool) -> Resolution:
        host = host.strip("[]")
        trail: list[str] = []
        if is_ip(host):
            port = port or default_port(transport)
            return Resolution([Target(host, port, transport, host)], trail)
        if needs_srv(host, port):
            try:
                targets = await self._service_targets(host, transport, explicit, trail)
            except ResolveError as exc:
                # NAPTR/SRV are optional: a server that fails them may still know the address.
                trail.append(f"{exc}; using the address of {host}")
                targets = []
            if targets:
                return Resolution(targets, trail)
        port = port or default_port(transport)
        addresses = await self._addresses(host)
        if not addresses:
            raise ResolveError(f"{host} has no address")
        return Resolution([Target(a, port, transport, host) for a in addresses], trail)

    async def _service_targets(
        self, host: str, transport: str, explicit: bool, trail: list[str]
    ) -> list[Target]:
        """NAPTR (unless ``explicit``) then SRV: the targets of the first SRV name with some."""
        choices: list[tuple[str, str]] = []
        if not explicit:
            naptrs = await self._naptr(host)
            choices = naptr_choices(naptrs, ("udp", "tcp", "tls"))
            if choices:
                found = ", ".join(f"{name} ({t})" for t, name in choices)
                trail.append(f"NAPTR {host}: {found}")
        for choice_transport, name in choices or srv_queries(host, transport, explicit):
            records = srv_order(await self._srv(name), self._rng)
            if not records:
                continue
            found = ", ".join(f"{r.target.rstrip('.')}:{r.port}" for r in records)
            trail.append(f"SRV {name}: {found}")
            targets: list[Target] = []
            for record in records:
                target_name = record.target.rstrip(".")
                try:
                    addresses = await self._addresses(target_name)
                except ResolveError as exc:
                    # One SRV target without an address must not hide the others.
                    trail.append(str(exc))
                    continue
                for address in addresses:
                    targets.append(
                        Target(address, record.port, choice_transport, host, f"SRV {name}")
                    )
            if targets:
                return targets
        return []

    async def _naptr(self, host: str) -> list[Naptr]:
        answer = await self._query(host, "NAPTR")
        return [
            Naptr(
                r.order,
                r.preference,
                r.flags.decode("ascii", "replace"),
                r.service.decode("ascii", "replace"),
                r.replacement.to_text(),
            )
            for r in answer
        ]

    async def _srv(self, name: str) -> list[Srv]:
        answer = await self._query(name, "SRV")
        return [Srv(r.priority, r.weight, r.port, r.target.to_text()) for r in answer]

    async def _query(self, name: str, rdtype: str) -> list:  # type: ignore[type-arg]
        """The records, or none when the name has none (or no DNS is configured)."""
        resolver = self._resolver()
        if resolver is None:
            return []
        try:
            answer = await resolver.resolve(name, rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers):
            return []
        except dns.exception.DNSException as exc:
            # A server that does not answer is a failure, not "no records".
            raise ResolveError(f"{rdtype} {name}: {exc}") from None
        return list(answer)

    async def _addresses(self, name: str) -> list[str]:
        """A (and AAAA when IPv6 is in use) of ``name``, in the order found."""
        if not self._servers:
            loop = asyncio.get_running_loop()
            family = socket.AF_UNSPEC if self._ipv6 else socket.AF_INET
            try:
                infos = await loop.getaddrinfo(name, None, family=family, type=socket.SOCK_DGRAM)
            except OSError as exc:
                raise ResolveError(f"cannot resolve {name}: {exc.strerror or exc}") from None
            addresses: list[str] = []
            for info in infos:
                address = str(info[4][0])
                if address not in addresses:
                    addresses.append(address)
            return addresses
        found: list[str] = []
        for rdtype in ("A", "AAAA") if self._ipv6 else ("A",):
            found += [r.address for r in await self._query(name, rdtype)]
        return found
