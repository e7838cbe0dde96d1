"""The SIP transports of one agent and what reaching a trunk through them takes.

``Connections`` keeps every open transport by name (the configured one;
TCP on the same port when that is UDP, RFC 3261 18; TLS on SIP_TLS_PORT
with a certificate; others that trunks ask for, opened on first use), resolves a trunk or
its outbound proxy per RFC 3263 into targets, keeps one TLS context per CA
file, and says which address the trunk should see in Via and Contact.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Sequence

from services.common.providers import Trunk
from services.common.settings import SettingsError, local_address_toward
from services.common.sipaddr import OutboundProxy, host_literal
from services.sipagent.config import AgentConfig, DialError, UnreachableError
from services.sipagent.resolve import Target
from services.sipagent.sipdns import ResolveError, SipResolver
from services.sipagent.transport import (
    Addr,
    SipTransport,
    TlsTransport,
    client_context,
    open_transport,
    server_context,
)

log = logging.getLogger(__name__)

RESOLVE_TIMEOUT = 5.0
"Seconds allowed to resolve SIP_TRUNK_HOST before a dial fails."
PAIR_ATTEMPTS = 20
"Ephemeral ports tried for a UDP port whose TCP twin is free (SIP_LOCAL_PORT=0)."

Receive = Callable[[bytes, Addr, SipTransport | None], None]
"Told each message a transport received, and from where."
TransportError = Callable[[SipTransport, Addr, str], None]
"Told that ``transport`` could not reach an address, and why."
Resolved = Callable[[Sequence[Target]], None]
"Told the targets of every resolution (their addresses are the trunk's)."


class Connections:
    """Every transport of one agent by name, its resolver and its TLS contexts."""

    def __init__(
        self,
        config: AgentConfig,
        receive: Receive,
        on_error: TransportError,
        transport: SipTransport | None = None,
        *,
        resolver: SipResolver | None = None,
    ) -> None:
        self.config = config
        self.primary = transport
        "The configured transport (None: not bound yet)."
        self._receive = receive
        self._on_error = on_error
        self._resolver = resolver or SipResolver(config.dns_servers, ipv6=":" in config.bind_host)
        self._tls_contexts: dict[str, ssl.SSLContext] = {}
        self._transports: dict[str, SipTransport] = {}
        "Every open transport by name: the configured one, and others trunks asked for."
        self.on_resolved: Resolved | None = None
        "Told what each resolution found (the agent takes requests from those addresses)."

    async def start(self) -> SipTransport:
        """Bind the configured transport (unless one was given); return it."""
        config = self.config
        if self.primary is None and config.transport == "udp":
            # RFC 3261 18: a UA listening on UDP listens on TCP too, on the same port.
            self.primary, tcp = await self._open_udp_and_tcp(config.local_port)
            self._transports["tcp"] = tcp
            log.info("sip tcp on %s:%d", config.bind_host, tcp.local_port)
        elif self.primary is None:
            self.primary = await self._open(config.transport, config.local_port)
        self._transports[self.primary.name] = self.primary
        self.primary.on_error = self._on_error_of(self.primary)
        if config.tls_cert and self.primary.name != "tls":
            # A certificate: trunks may call in over TLS, on a port of its own.
            try:
                self._transports["tls"] = await self._open("tls", config.tls_port)
            except OSError as exc:
                raise OSError(f"SIP_TLS_PORT {config.tls_port}: cannot listen: {exc}") from None
            log.info("sip tls on %s:%d", config.bind_host, self._transports["tls"].local_port)
        return self.primary

    def get(self, name: str) -> SipTransport:
        """The open transport called ``name``, else the configured one."""
        transport = self._transports.get(name) or self.primary
        assert transport is not None
        return transport

    async def transport_for(self, name: str) -> SipTransport:
        """The open transport called ``name``, opened on an ephemeral port on first use."""
        assert self.primary is not None
        if self.primary.name == name:
            return self.primary
        transport = self._transports.get(name)
        if transport is None:
            try:
                transport = await self._open(name, 0)
            except OSError as exc:
                raise DialError(f"cannot open a SIP {name} transport: {exc}") from None
            self._transports[name] = transport
            log.info("sip %s on %s:%d", name, self.config.bind_host, transport.local_port)
        return transport

    async def resolve(self, trunk: Trunk, proxy: OutboundProxy | None) -> list[Target]:
        """The targets of the trunk, or of its outbound proxy, in the order to try them."""
        if proxy is not None:
            label = "SIP_OUTBOUND_PROXY"
            if trunk.name != "default" and trunk.outbound_proxy is not None:
                label = f"trunk {trunk.name!r} outbound_proxy"
            host, port = proxy.host, proxy.port
            transport = proxy.transport or trunk.transport
            explicit = bool(proxy.transport) or trunk.transport_explicit
        else:
            label = "SIP_TRUNK_HOST" if trunk.name == "default" else f"trunk {trunk.name!r} host"
            host, port = trunk.host, trunk.port
            transport, explicit = trunk.transport, trunk.transport_explicit
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT):
                resolution = await self._resolver.resolve(host, port, transport, explicit=explicit)
        except TimeoutError:
            raise UnreachableError(
                f"could not resolve {label} {host} in {RESOLVE_TIMEOUT:g} s"
            ) from None
        except ResolveError as exc:
            raise UnreachableError(f"{label}: {exc}") from None
        for line in resolution.trail:
            log.debug("resolved %s", line)
        if self.on_resolved is not None:
            self.on_resolved(resolution.targets)
        return resolution.targets

    def expect(self, transport: SipTransport, target: Target, ca: str) -> None:
        """Check ``target``'s certificate against ``ca`` if ``transport`` is TLS."""
        if isinstance(transport, TlsTransport):
            transport.expect(target.addr, target.server_name, self.context_for(ca))

    def context_for(self, ca: str) -> ssl.SSLContext:
        """One context per CA file: ``ca`` (a trunk's ``tls_ca``), else SIP_TLS_CA.

        Neither given: the system CAs.
        """
        ca = ca or self.config.tls_ca
        context = self._tls_contexts.get(ca)
        if context is None:
            context = client_context(ca, self.config.tls_verify)
            self._tls_contexts[ca] = context
        return context

    def sent_by(self, trunk: Addr, transport: SipTransport | None = None) -> str:
        """This agent's host:port as the trunk should see it (Via, Contact)."""
        transport = transport or self.primary
        assert transport is not None
        local_ip = self.config.public_ip or local_address_toward(trunk[0], trunk[1])
        return f"{host_literal(local_ip)}:{transport.local_port}"

    async def close(self) -> None:
        for transport in {*self._transports.values(), self.primary}:
            if transport is not None:
                await transport.close()

    async def _open_udp_and_tcp(self, port: int) -> tuple[SipTransport, SipTransport]:
        """UDP and TCP on ``port`` (0: an ephemeral port free for both)."""
        for attempt in range(PAIR_ATTEMPTS):
            udp = await self._open("udp", port)
            try:
                return udp, await self._open("tcp", udp.local_port)
            except OSError as exc:
                await udp.close()
                if port or attempt == PAIR_ATTEMPTS - 1:
                    raise OSError(
                        f"SIP port {udp.local_port}: cannot listen on TCP: {exc}"
                    ) from exc
        raise AssertionError("unreachable")

    async def _open(self, name: str, port: int) -> SipTransport:
        holder: list[SipTransport] = []

        def on_message(data: bytes, addr: Addr) -> None:
            self._receive(data, addr, holder[0] if holder else None)

        listen = None
        if name == "tls" and self.config.tls_cert:
            try:
                listen = server_context(self.config.tls_cert, self.config.tls_key)
            except (OSError, ValueError) as exc:
                raise SettingsError(f"SIP_TLS_CERT/SIP_TLS_KEY: cannot load: {exc}") from None
        transport = await open_transport(name, self.config.bind_host, port, on_message, listen)
        transport.on_error = self._on_error_of(transport)
        if isinstance(transport, TlsTransport):
            transport.default_context = self.context_for(self.config.tls_ca)
        holder.append(transport)
        return transport

    def _on_error_of(self, transport: SipTransport) -> Callable[[Addr, str], None]:
        def on_error(addr: Addr, reason: str) -> None:
            self._on_error(transport, addr, reason)

        return on_error
