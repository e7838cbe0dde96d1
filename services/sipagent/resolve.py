"""RFC 3263 target selection, pure: what to ask DNS and in which order to try the answers.

No I/O here: ``services/sipagent/sipdns.py`` runs the queries and feeds the
records in. A trunk host with an explicit port, or an IP literal, is only
looked up (A/AAAA); a name without a port goes through NAPTR (unless the
transport was set), then SRV, then A/AAAA on the transport's default port.
``Backoff`` keeps the targets that answered 503 with ``Retry-After`` out of
the way for that long, process-wide.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from services.common.digits import number
from services.common.sipaddr import DEFAULT_PORTS, host_literal, is_ip

NAPTR_SERVICES = {"SIP+D2U": "udp", "SIP+D2T": "tcp", "SIPS+D2T": "tls"}
"RFC 3263 4.1 services, by the transport they mean."
SRV_PREFIXES = {"udp": "_sip._udp", "tcp": "_sip._tcp", "tls": "_sips._tcp"}
SRV_PREFERENCE = ("udp", "tcp", "tls")
"Without NAPTR and an explicit transport: the SRV names tried, in this order."
MAX_RETRY_AFTER = 3600.0
"Longest a Retry-After keeps a target aside, in seconds."


@dataclass(frozen=True)
class Target:
    """One place to send an INVITE: an address, a port and a transport."""

    host: str
    "IP address."
    port: int
    transport: str
    server_name: str
    "The name the TLS certificate must carry (RFC 5922: the host that was resolved)."
    via: str = ""
    "How it was found, for logs and the probe (``SRV _sip._udp.example.com``)."

    @property
    def addr(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.host, self.port, self.transport)

    def __str__(self) -> str:
        return f"{host_literal(self.host)}:{self.port}/{self.transport}"


@dataclass(frozen=True)
class Naptr:
    order: int
    preference: int
    flags: str
    service: str
    replacement: str


@dataclass(frozen=True)
class Srv:
    priority: int
    weight: int
    port: int
    target: str


def needs_srv(host: str, port: int) -> bool:
    """Whether NAPTR/SRV apply (RFC 3263 4.2): a name, and no port given."""
    return not port and not is_ip(host)


def naptr_choices(records: Iterable[Naptr], transports: Sequence[str]) -> list[tuple[str, str]]:
    """``(transport, SRV name)`` of the usable NAPTR records, best first (RFC 3263 4.1).

    Usable: flag ``s`` (an SRV follows) and a SIP service over one of ``transports``.
    """
    usable = [
        record
        for record in records
        if record.flags.lower() == "s"
        and NAPTR_SERVICES.get(record.service.upper()) in transports
        and record.replacement.rstrip(".")
    ]
    usable.sort(key=lambda r: (r.order, r.preference))
    choices: list[tuple[str, str]] = []
    for record in usable:
        choice = (NAPTR_SERVICES[record.service.upper()], record.replacement.rstrip("."))
        if choice not in choices:
            choices.append(choice)
    return choices


def srv_queries(host: str, transport: str, explicit: bool) -> list[tuple[str, str]]:
    """``(transport, SRV name)`` to ask when NAPTR gave nothing (RFC 3263 4.1, last paragraph)."""
    transports = (transport,) if explicit else SRV_PREFERENCE
    return [(name, f"{SRV_PREFIXES[name]}.{host.rstrip('.')}") for name in transports]


def srv_order(records: Iterable[Srv], rng: random.Random) -> list[Srv]:
    """RFC 2782 order: lowest priority first, weighted random within a priority.

    A single ``.`` target means the service is not offered here: no record then.
    """
    records = [r for r in records if r.target.rstrip(".")]
    ordered: list[Srv] = []
    for priority in sorted({r.priority for r in records}):
        # Weight 0 first, as RFC 2782 asks, so they keep a small chance.
        group = sorted((r for r in records if r.priority == priority), key=lambda r: r.weight != 0)
        while group:
            total = sum(r.weight for r in group)
            pick = rng.randint(0, total) if total else 0
            running = 0
            for index, record in enumerate(group):
                running += record.weight
                if running >= pick:
                    ordered.append(group.pop(index))
                    break
    return ordered


def default_port(transport: str) -> int:
    return DEFAULT_PORTS.get(transport, 5060)


class Backoff:
    """Targets that asked for a pause (503 with Retry-After), until when.

    One per process: every call of the agent honours what any call learnt.
    """

    def __init__(self) -> None:
        self._until: dict[tuple[str, int, str], float] = {}

    def hold(self, target: Target, seconds: float, now: float) -> None:
        self._until[target.key] = now + min(max(seconds, 0.0), MAX_RETRY_AFTER)

    def held(self, target: Target, now: float) -> bool:
        until = self._until.get(target.key)
        if until is None:
            return False
        if until <= now:
            del self._until[target.key]
            return False
        return True

    def usable(self, targets: Sequence[Target], now: float) -> list[Target]:
        """``targets`` minus the held ones; all of them if every one is held.

        A call is better tried on a target that asked for a pause than not at all.
        """
        free = [t for t in targets if not self.held(t, now)]
        return free or list(targets)


def retry_after(value: str | None) -> float | None:
    """Seconds of a ``Retry-After`` header (``120``, ``120 (busy);duration=60``); None if absent."""
    if not value:
        return None
    head = value.strip().split(";", 1)[0].split("(", 1)[0].strip()
    seconds = number(head)
    return float(seconds) if seconds is not None else None
