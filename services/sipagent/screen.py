"""The SIP agent's screening of what it receives, by source.

Every message is screened before anything else: over its source's rate it is
dropped unread (``admit``); a request from an address that is no trunk's,
and in none of the agent's dialogs, gets 403 (or nothing) and never reaches a
call (``request``; ``unparsable`` for what does not parse). ``SourceScreen``
asks a ``SourceGuard`` (``source_guard.py``, sans I/O) for each decision,
counts every refusal in ``bridge_sip_refused_total`` and logs them within the
guard's budget. The guard knows the configured trunks' addresses, those their
names resolve to (``know_trunks``, and every resolution of a dial or a
registration: ``allow_targets``) and those of adopted dialogs (``allow``).

Calls from the trunks: the screen also says which trunks an address is
(``trunks_at``) and lets an INVITE through from the networks of the trunks'
``inbound_from``, or from anywhere when some trunk proves itself by digest
(``open_inbound``): ``InboundDoor`` (``inbound.py``) decides on it, and
reports its refusals here (``refused_invite``), counted and logged alike.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence

from sipmessage import Request

from services.common.inbound_routes import Network, in_networks
from services.common.metrics import Metrics
from services.common.providers import Trunk
from services.common.sip.message import make_response, new_tag
from services.common.sipaddr import OutboundProxy, host_literal, is_ip
from services.sipagent.config import AgentConfig
from services.sipagent.resolve import Target
from services.sipagent.source_guard import (
    KNOWN_FACTOR,
    MAX_KNOWN,
    OVER_BUDGET,
    SourceGuard,
    Verdict,
    normalize,
)
from services.sipagent.transport import Addr

log = logging.getLogger(__name__)

TRUNK_REFRESH = 300.0
"Seconds between two resolutions of the trunks' names for the source guard."

Send = Callable[[bytes, Addr, str], None]
"Sends bytes to an address over the transport of that name (``udp``, ``tcp``, ``tls``), unlogged."
Resolve = Callable[[Trunk, OutboundProxy | None], Awaitable[Sequence[Target]]]
"Resolves a trunk, or its outbound proxy (what it finds reaches ``allow_targets``)."


class SourceScreen:
    """Which sources the agent hears, what a refusal costs them, and what is said of it."""

    def __init__(self, config: AgentConfig, metrics: Metrics, send: Send) -> None:
        self._config = config
        self._guard = SourceGuard(
            _configured_hosts(config), config.unknown_sources, config.source_rate
        )
        "Which sources may send what: the configured trunks' addresses are known from the start."
        self._send = send
        "For the 403s, straight to the transport: no log line per refusal, not even at debug."
        self._refused_unknown = metrics.sip_refused.labels("unknown_source")
        self._refused_rate = metrics.sip_refused.labels("rate")
        self._trunk_names: asyncio.Task[None] | None = None
        self._trunks_at: dict[str, tuple[str, ...]] = {}
        "Trunk names by address (the trunks' hosts and proxies, as resolved)."
        self._inbound_from: tuple[Network, ...] = ()
        self._inbound_anywhere = False

    # --- decisions -------------------------------------------------------------------

    def admit(self, addr: Addr, now: float) -> bool:
        """Whether a message from ``addr``, not parsed yet, is within its source's rate.

        False: it is dropped unread (counted, and logged within the budget).
        """
        if self._guard.rate(addr[0], now) is not Verdict.PASS:
            self._refused_rate.inc()
            self._report_rate(addr, now)
            return False
        return True

    def unparsable(self, addr: Addr, now: float) -> bool:
        """Whether a message from ``addr`` that did not parse may be answered (400).

        False (``SIP_UNKNOWN_SOURCES=drop`` and no trunk's address): say nothing.
        """
        if self._guard.source(addr[0], False) is Verdict.DROP:
            self._refused_unknown.inc()
            self._report_unknown(addr, "", now)
            return False
        return True

    def request(
        self,
        request: Request,
        addr: Addr,
        transport: str,
        now: float,
        in_dialog: bool,
    ) -> bool:
        """Whether ``request`` from ``addr`` goes on; else it was answered 403 or dropped.

        Not from a trunk: only a request of one of the agent's dialogs
        (``in_dialog``: a BYE from another server of the trunk, after
        Record-Route) goes on.
        """
        if self._guard.known(addr[0]):
            return True
        if request.method in ("INVITE", "ACK") and self._inbound(addr[0]):
            return True  # InboundDoor decides (the ACK: of its refusal)
        verdict = self._guard.source(addr[0], in_dialog)
        if verdict is Verdict.PASS:
            return True
        self._refuse(request, verdict, addr, transport, now)
        return False

    def refused_invite(self, addr: Addr, now: float) -> bool:
        """An INVITE ``InboundDoor`` refused for its source: counted and logged like the
        screen's own; True: answer it 403, False (``SIP_UNKNOWN_SOURCES=drop``): say nothing."""
        self._refused_unknown.inc()
        self._report_unknown(addr, "INVITE", now)
        return self._guard.mode == "reject"

    # --- what is known ---------------------------------------------------------------

    def trunks_at(self, host: str) -> tuple[str, ...]:
        """The trunks ``host`` is an address of (their host or outbound proxy)."""
        address = normalize(host)
        return self._trunks_at.get(address, ()) if address is not None else ()

    def open_inbound(self, networks: Iterable[Network], anywhere: bool) -> None:
        """Let INVITEs through to ``InboundDoor`` from ``networks`` (the trunks'
        ``inbound_from``), or from ``anywhere`` (a trunk has ``inbound_auth``)."""
        self._inbound_from = tuple(networks)
        self._inbound_anywhere = anywhere

    def _inbound(self, host: str) -> bool:
        return self._inbound_anywhere or in_networks(host, self._inbound_from)

    def _note_trunk(self, host: str, name: str) -> None:
        address = normalize(host)
        if address is None:
            return
        forms = [address]  # and the other form a dual-stack socket may report
        parsed = ipaddress.ip_address(address)
        if isinstance(parsed, ipaddress.IPv4Address):
            forms.append(f"::ffff:{address}")
        elif parsed.ipv4_mapped is not None:
            forms.append(str(parsed.ipv4_mapped))
        for form in forms:
            names = self._trunks_at.pop(form, ())
            self._trunks_at[form] = names if name in names else (*names, name)
        while len(self._trunks_at) > 2 * MAX_KNOWN:
            del self._trunks_at[next(iter(self._trunks_at))]

    def known(self, host: str) -> bool:
        """Whether ``host`` (an address as the transports report it) is a trunk's."""
        return self._guard.known(host)

    def allow(self, host: str) -> None:
        """Take requests from ``host`` (the trunk of an adopted dialog, say)."""
        self._guard.allow(host)

    def allow_targets(self, targets: Sequence[Target]) -> None:
        """Take requests from the addresses a trunk's name resolved to."""
        for target in targets:
            if not self._guard.known(target.host):
                self._guard.allow(target.host)

    def know_trunks(
        self, trunks: Iterable[Trunk], resolve: Resolve, loop: asyncio.AbstractEventLoop
    ) -> None:
        """Take requests from ``trunks`` and their outbound proxies (and SIP_OUTBOUND_PROXY).

        IP addresses are known at once; names are resolved by ``resolve`` now and
        every ``TRUNK_REFRESH`` seconds, in a task of ``loop`` (a dial or a
        registration resolving them adds what it finds too).
        """
        named: dict[tuple[object, ...], tuple[Trunk, OutboundProxy | None]] = {}
        names: dict[tuple[object, ...], list[str]] = {}
        for trunk in trunks:
            if not trunk.host:
                continue
            proxy = trunk.outbound_proxy or self._config.outbound_proxy
            for host, via in ((trunk.host, None), (proxy.host if proxy else "", proxy)):
                if is_ip(host):
                    self._guard.allow(host, pinned=True)
                    self._note_trunk(host, trunk.name)
                elif host:
                    # The same name through the same way once (the default trunk is
                    # often among the providers' too).
                    key = (trunk.host, trunk.port, trunk.transport, trunk.transport_explicit, via)
                    named.setdefault(key, (trunk, via))
                    names.setdefault(key, []).append(trunk.name)
        if named and self._trunk_names is None:
            work = [(trunk, via, tuple(names[key])) for key, (trunk, via) in named.items()]
            self._trunk_names = loop.create_task(
                self._resolve_trunks(work, resolve), name="sip-trunk-addresses"
            )

    def close(self) -> None:
        """Stop resolving the trunks' names."""
        if self._trunk_names is not None:
            self._trunk_names.cancel()

    async def _resolve_trunks(
        self,
        named: Sequence[tuple[Trunk, OutboundProxy | None, tuple[str, ...]]],
        resolve: Resolve,
    ) -> None:
        while True:
            for trunk, proxy, names in named:
                try:
                    targets = await resolve(trunk, proxy)  # allowed by allow_targets
                except Exception as exc:  # best effort: a dial resolves it again
                    log.debug("trunk %s: no address for the source guard: %s", trunk.name, exc)
                    continue
                for target in targets:
                    for name in names:
                        self._note_trunk(target.host, name)
            await asyncio.sleep(TRUNK_REFRESH)

    # --- refusals --------------------------------------------------------------------

    def _refuse(
        self,
        request: Request,
        verdict: Verdict,
        addr: Addr,
        transport: str,
        now: float,
    ) -> None:
        """A request from an unknown source: 403 (never to an ACK) or nothing."""
        self._refused_unknown.inc()
        if verdict is Verdict.REJECT and request.method != "ACK":
            self._send(bytes(make_response(request, 403, to_tag=new_tag())), addr, transport)
        self._report_unknown(addr, request.method, now)

    def _report_unknown(self, addr: Addr, method: str, now: float) -> None:
        unlogged = self._guard.report(addr[0], now)
        if unlogged < 0:
            _over_budget(unlogged)
            return
        log.info(
            "sip: %s from %s:%d refused (%s): not a trunk, not in a dialog%s",
            method or "unreadable message",
            host_literal(addr[0]),
            addr[1],
            "403" if self._guard.mode == "reject" else "dropped",
            _unlogged(unlogged),
        )

    def _report_rate(self, addr: Addr, now: float) -> None:
        guard = self._guard
        unlogged = guard.report(addr[0], now)
        if unlogged < 0:
            _over_budget(unlogged)
            return
        rate = self._config.source_rate
        if guard.known(addr[0]):
            log.warning(
                "sip: trunk address %s is over %d x SIP_SOURCE_RATE (%s): its messages are"
                " dropped%s",
                host_literal(addr[0]),
                KNOWN_FACTOR,
                rate,
                _unlogged(unlogged),
            )
        elif guard.full and not guard.tracked(addr[0]):
            log.warning(
                "sip: %d sources sending at once: messages from new ones (%s) are dropped%s",
                guard.sources,
                host_literal(addr[0]),
                _unlogged(unlogged),
            )
        else:
            log.info(
                "sip: %s is over SIP_SOURCE_RATE (%s): its messages are dropped%s",
                host_literal(addr[0]),
                rate,
                _unlogged(unlogged),
            )


def _configured_hosts(config: AgentConfig) -> list[str]:
    """The IP addresses among SIP_TRUNK_HOST and SIP_OUTBOUND_PROXY (names resolve later)."""
    hosts = [config.trunk_host]
    if config.outbound_proxy is not None:
        hosts.append(config.outbound_proxy.host)
    return [host for host in hosts if host and is_ip(host)]


def _unlogged(count: int) -> str:
    if not count:
        return "; no more lines about it for a minute"
    return f"; {count} more of its messages refused since the last line; next line in a minute"


def _over_budget(report: int) -> None:
    if report == OVER_BUDGET:
        log.warning(
            "sip: messages refused from many sources: no more lines about them for a minute"
            " (bridge_sip_refused_total counts them all)"
        )
