"""The asyncio side of the SIP user agent: bytes between the transports and ``AgentCore``.

``SipAgent`` feeds what its transports (``Connections``) receive to the
sans-I/O ``AgentCore`` (``agent_core.py``: calls by Call-ID, failover, late
answers, requests of no call, inbound INVITEs), does what the core asks
(``Transmit``, ``Connect``), puts each call's events in its ``CallHandle``'s
queue and keeps one ``loop.call_at`` timer at ``core.get_timer()``. The I/O a
dial needs happens here first: the trunk is resolved per RFC 3263 and the
transports of its targets are opened, then the core takes the targets.

Every message is screened by its source before anything else: see
``SourceScreen`` (``screen.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence

from proto.fleet import SipDialogRecord
from services.common.metrics import Metrics
from services.common.providers import Trunk
from services.sipagent.agent_core import AgentCore
from services.sipagent.agent_ports import Connect, OnInvite
from services.sipagent.attempt import check_destination as check_destination
from services.sipagent.attempt import request_uri_for as request_uri_for
from services.sipagent.attempt import sip_user as sip_user
from services.sipagent.config import AgentConfig as AgentConfig
from services.sipagent.config import DialError as DialError
from services.sipagent.config import UnreachableError as UnreachableError
from services.sipagent.connections import Connections
from services.sipagent.events import Ended
from services.sipagent.handle import CallHandle as CallHandle
from services.sipagent.handle import SipObserver
from services.sipagent.hosted import HostedCall
from services.sipagent.registrations import RegistrationTable
from services.sipagent.resolve import Backoff
from services.sipagent.screen import SourceScreen
from services.sipagent.sipdns import SipResolver
from services.sipagent.transport import Addr, SipTransport

log = logging.getLogger(__name__)

OnCall = Callable[[CallHandle], None]
"Told the handle of each call hosted from a trunk's INVITE (before any of its events)."


class SipAgent:
    def __init__(
        self,
        config: AgentConfig,
        transport: SipTransport | None = None,
        *,
        resolver: SipResolver | None = None,
        backoff: Backoff | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.screen = SourceScreen(config, metrics or Metrics(), self._send_unlogged)
        "Which sources the agent hears: the configured trunks' addresses are known from the start."
        self.connections = Connections(
            config, self.receive, self._on_transport_error, transport, resolver=resolver
        )
        self.connections.on_resolved = self.screen.allow_targets
        self.registrations = RegistrationTable(config, self.connections, self._send, self._pump)
        "The REGISTER bindings this agent keeps, routed like calls by Call-ID."
        self.core = AgentCore(
            config,
            self._sent_by,
            backoff=backoff,
            screen=self.screen,
            registrations=self.registrations,
        )
        self.on_call: OnCall | None = None
        "Told the handle of each call hosted from a trunk's INVITE (see ``on_invite``)."
        self._handles: dict[HostedCall, CallHandle] = {}
        "Handles by the core's record, until their call's ``Ended``."
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle = asyncio.Event()
        "Set while no call is left, CANCEL, ACK and BYE clean-up included."
        self._idle.set()

    async def start(self) -> None:
        """Bind the SIP transport (unless one was given)."""
        self._loop = asyncio.get_running_loop()
        config = self.config
        transport = await self.connections.start()
        if not config.tls_verify:
            log.warning(
                "SIP_TLS_VERIFY=false: TLS certificates of trunks and proxies are not checked;"
                " anyone on the path can pose as the trunk"
            )
        log.info(
            "sip %s on %s:%d toward %s:%s",
            transport.name,
            config.bind_host,
            transport.local_port,
            config.trunk_host or "(no trunk)",
            config.trunk_port or "(port from DNS)",
        )

    @property
    def backoff(self) -> Backoff:
        """Targets that answered 503 with Retry-After, for every call of the process."""
        return self.core.backoff

    @property
    def on_invite(self) -> OnInvite | None:
        """Decides on an INVITE outside a dialog for no call (None: 481); see ``AgentCore``."""
        return self.core.on_invite

    @on_invite.setter
    def on_invite(self, on_invite: OnInvite | None) -> None:
        self.core.on_invite = on_invite

    @property
    def local_port(self) -> int:
        transport = self.connections.primary
        return transport.local_port if transport else 0

    @property
    def active_calls(self) -> int:
        return self.core.active_calls

    def handle_of(self, sip_call_id: str) -> CallHandle | None:
        """The handle of the call hosted under ``sip_call_id`` (until its ``Ended``)."""
        hosted = self.core.hosted(sip_call_id)
        return self._handles.get(hosted) if hosted is not None else None

    async def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until every call is finished; False if some are not."""
        try:
            async with asyncio.timeout(max(timeout, 0.0)):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    def default_trunk(self) -> Trunk:
        """The configured trunk (``SIP_TRUNK_*``) as a ``Trunk``."""
        config = self.config
        transport = self.connections.primary
        return Trunk(
            name="default",
            host=config.trunk_host,
            port=config.trunk_port,
            username=config.username,
            password=config.password,
            domain=config.domain,
            transport=transport.name if transport else config.transport,
            transport_explicit=config.transport_explicit,
            tls_ca=config.tls_ca,
            outbound_proxy=config.outbound_proxy,
            transfer=config.transfer,
        )

    async def dial(
        self,
        call_id: str,
        destination: str,
        offer_sdp: str,
        observer: SipObserver | None = None,
        *,
        trunk: Trunk | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> CallHandle:
        """Send the INVITE of a new call; raise ``DialError`` if it cannot be sent.

        ``trunk``: where to (default: the configured trunk); ``destination`` is
        the user part dialled there. ``headers`` go in the INVITE only.
        """
        loop = self._loop
        if self.connections.primary is None or loop is None:
            raise DialError("SIP agent not started")
        trunk = trunk or self.default_trunk()
        if not trunk.host:
            raise DialError("no SIP trunk configured")
        try:
            request_uri_for(destination, trunk.realm_domain)
        except ValueError as exc:
            raise DialError(f"invalid destination: {exc}") from None
        proxy = trunk.outbound_proxy or self.config.outbound_proxy
        targets = await self.connections.resolve(trunk, proxy)
        # Open every transport the targets need now: a failover cannot wait.
        for name in dict.fromkeys(t.transport for t in self.core.usable(targets, loop.time())):
            await self.connections.transport_for(name)
        hosted = self.core.dial(
            call_id,
            trunk,
            destination,
            offer_sdp,
            targets,
            loop.time(),
            headers=headers,
            proxy=proxy,
            observer=observer,
        )
        handle = self._handle_for(hosted)
        self._pump()
        return handle

    def adopt_bye(self, call_id: str, record: SipDialogRecord) -> CallHandle:
        """End a dead SIP agent's confirmed dialog with a BYE from this agent.

        ``RecoveryError`` if the record holds no whole dialog. The handle's one
        ``Ended`` is for logs: whoever adopted the dialog reports the call's end.
        """
        if self.connections.primary is None or self._loop is None:
            raise DialError("SIP agent not started")
        handle = self._handle_for(self.core.adopt_bye(call_id, record, self._loop.time()))
        self._pump()
        return handle

    def hangup(self, handle: CallHandle, cause: str) -> None:
        if self._loop is None:
            return
        self.core.hangup(handle.hosted, cause, self._loop.time())
        self._pump()

    def drive(self, handle: CallHandle, action: Callable[[float], None]) -> None:
        """Run ``action(now)`` on a call, then send what it queued."""
        if self._loop is None:
            return
        self.core.drive(handle.hosted, action, self._loop.time())
        self._pump()

    # --- registrations -------------------------------------------------------------

    def register(self, trunk: Trunk) -> None:
        """Keep a REGISTER binding at ``trunk`` until ``unregister_all``.

        Returns at once: resolving the trunk and opening its transport happen
        in the background, retried with the registration's backoff meanwhile.
        """
        if self.connections.primary is None or self._loop is None:
            raise DialError("SIP agent not started")
        self.registrations.register(trunk, self._loop)

    async def unregister_all(self, timeout: float) -> bool:
        """Remove every binding (``Expires: 0``); False if some did not finish in ``timeout``."""
        if self._loop is None:
            return True
        self.registrations.unregister_all(self._loop.time())
        self._pump()
        return await self.registrations.wait_unregistered(timeout)

    # --- sources ---------------------------------------------------------------------

    def know_trunks(self, trunks: Iterable[Trunk]) -> None:
        """Take requests from ``trunks`` and their outbound proxies (and SIP_OUTBOUND_PROXY).

        IP addresses are known at once, names once resolved: ``SourceScreen.know_trunks``.
        """
        if self._loop is None:
            raise DialError("SIP agent not started")
        self.screen.know_trunks(trunks, self.connections.resolve, self._loop)

    async def close(self) -> None:
        self.registrations.close()
        self.screen.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self.connections.close()

    # --- bytes in, bytes out -----------------------------------------------------------

    def receive(self, data: bytes, addr: Addr, transport: SipTransport | None = None) -> None:
        """Handle one message from ``transport`` (None: the agent's first one)."""
        assert self._loop is not None
        self.core.receive(data, addr, self._name_of(transport), self._loop.time())
        self._pump()

    def _on_transport_error(self, transport: SipTransport, addr: Addr, reason: str) -> None:
        if self._loop is None:
            return
        self.core.transport_failed(transport.name, addr, reason, self._loop.time())
        self._pump()

    def _handle_for(self, hosted: HostedCall) -> CallHandle:
        handle = CallHandle(self, hosted)
        self._handles[hosted] = handle
        return handle

    def _pump(self) -> None:
        """Do what the core asks, hand out its events, re-arm the timer."""
        core = self.core
        for action in core.actions_to_send():
            if isinstance(action, Connect):
                target = action.target
                transport = self.connections.get(target.transport)
                self.connections.expect(transport, target, action.tls_ca)
            elif action.quiet:
                self._send_unlogged(action.data, action.addr, action.transport)
            else:
                self._send(action.data, action.addr, self.connections.get(action.transport))
        for hosted in core.inbound_calls():
            handle = self._handle_for(hosted)
            if self.on_call is not None:
                self.on_call(handle)
            else:  # nobody to ring it: it would wait for a decision forever
                handle.reject(503, "Service Unavailable")
        while (item := core.next_event()) is not None:
            hosted, event = item
            owner = self._handles.get(hosted)
            if owner is None:
                continue  # a late answer's BYE: nobody waits for it
            owner.events.put_nowait(event)
            if isinstance(event, Ended):
                del self._handles[hosted]
        if core.active_calls:
            self._idle.clear()
        else:
            self._idle.set()
        self._rearm()

    def _name_of(self, transport: SipTransport | None) -> str:
        transport = transport or self.connections.primary
        return transport.name if transport is not None else self.config.transport

    def _sent_by(self, addr: Addr, transport: str) -> str:
        return self.connections.sent_by(addr, self.connections.get(transport))

    def _send(self, data: bytes, addr: Addr, transport: SipTransport) -> None:
        log.debug("sip > %s:%d %d bytes", addr[0], addr[1], len(data))
        transport.send(data, addr)

    def _send_unlogged(self, data: bytes, addr: Addr, transport: str) -> None:
        """``_send`` without its line: the screen's and the door's refusals, one per request."""
        self.connections.get(transport).send(data, addr)

    def _rearm(self) -> None:
        """One timer for the agent, at the core's earliest."""
        if self._loop is None:
            return
        when = self.core.get_timer()
        if when == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = when
        if when is not None:
            self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        assert self._loop is not None
        # asyncio may run a timer a clock tick early: never let "now" precede it.
        now = max(self._loop.time(), self._timer_at or 0.0)
        self._timer = None
        self._timer_at = None
        self.core.handle_timer(now)
        self._pump()
