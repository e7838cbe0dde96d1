"""The asyncio side of the SIP user agent: many calls over its transports.

``SipAgent`` moves bytes between the transports (``Connections``) and the
sans-I/O ``OutboundCall`` objects (found by SIP Call-ID), keeps one
``loop.call_at`` timer for all of them and for the REGISTER bindings of its
``RegistrationTable``, and answers requests that belong to no call.

A dial resolves the trunk (or its outbound proxy) per RFC 3263 into an
ordered list of targets. An INVITE that gets no response at all (Timer B, a
connection or TLS failure) or a 503 before any provisional response is
placed again, as a new INVITE, on the next target; a 503's Retry-After
keeps that target aside for every call of the process (``Backoff``).

Every message is screened by its source before anything else: see
``SourceScreen`` (``screen.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TypeGuard

from sipmessage import Request, Response

from proto import errors
from proto.fleet import SipDialogRecord
from services.common.metrics import Metrics
from services.common.providers import Trunk
from services.common.sip.auth import DigestAuthenticator
from services.common.sip.message import (
    SipParseError,
    bad_request,
    make_response,
    new_tag,
    parse_message,
    summary,
)
from services.common.sip.next_hop import Hops
from services.sipagent.attempt import DialPlan, fails_over, invite_for, request_uri_for
from services.sipagent.attempt import check_destination as check_destination
from services.sipagent.attempt import sip_user as sip_user
from services.sipagent.call import ALLOW, USER_AGENT, CallState, OutboundCall
from services.sipagent.config import AgentConfig as AgentConfig
from services.sipagent.config import DialError as DialError
from services.sipagent.config import UnreachableError as UnreachableError
from services.sipagent.connections import Connections
from services.sipagent.events import Ended
from services.sipagent.handle import CallHandle as CallHandle
from services.sipagent.handle import SipObserver
from services.sipagent.recovery import RecoveredBye, RecoveryError, answered_record, late_ack
from services.sipagent.registrations import RegistrationTable
from services.sipagent.resolve import Backoff, Target, retry_after
from services.sipagent.screen import SourceScreen
from services.sipagent.sipdns import SipResolver
from services.sipagent.transfer import TransferringCall
from services.sipagent.transport import Addr, SipTransport

log = logging.getLogger(__name__)

LATE_ANSWER_WINDOW = 300.0
"Seconds after a call is forgotten during which a 2xx to its INVITE is still ACKed and BYEd."
MAX_FORGOTTEN = 10000
"Forgotten Call-IDs remembered at most (a bound on memory under a flood of calls)."


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
        self.backoff = backoff or Backoff()
        "Targets that answered 503 with Retry-After, for every call of the process."
        self.connections = Connections(
            config, self.receive, self._on_transport_error, transport, resolver=resolver
        )
        self.connections.on_resolved = self.screen.allow_targets
        self._calls: dict[str, CallHandle] = {}
        self._forgotten: dict[str, tuple[float, str]] = {}
        "SIP Call-IDs of our INVITEs no longer hosted: until when a late 2xx is ended, call id."
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle = asyncio.Event()
        "Set while no call is left, CANCEL, ACK and BYE clean-up included."
        self._idle.set()
        self.registrations = RegistrationTable(config, self.connections, self._send, self._rearm)
        "The REGISTER bindings this agent keeps, routed like calls by Call-ID."

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
    def local_port(self) -> int:
        transport = self.connections.primary
        return transport.local_port if transport else 0

    @property
    def active_calls(self) -> int:
        return len(self._calls)

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
        if self.connections.primary is None or self._loop is None:
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
        now = self._loop.time()
        dial = DialPlan(
            trunk,
            destination,
            offer_sdp,
            list(headers),
            self.backoff.usable(targets, now),
            now + self.config.invite_timeout,
            proxy,
            invite_timeout=self.config.invite_timeout,
        )
        # Open every transport the targets need now: a failover cannot wait.
        for target in dial.targets:
            await self.connections.transport_for(target.transport)
        target = dial.targets.pop(0)
        handle = CallHandle(self, self._call_for(call_id, dial, target, now), target.addr)
        handle.observer = observer
        handle._dial = dial
        self._attempt(handle, target)
        return handle

    def _call_for(
        self, call_id: str, dial: DialPlan, target: Target, now: float
    ) -> TransferringCall:
        """The call toward ``target``, able to follow the trunk's REFER through it."""

        def place(uri: str) -> OutboundCall:
            assert self._loop is not None
            return self._invite_for(call_id, dial, target, self._loop.time(), uri)

        return TransferringCall(self._invite_for(call_id, dial, target, now), place)

    def _invite_for(
        self, call_id: str, dial: DialPlan, target: Target, now: float, uri: str = ""
    ) -> OutboundCall:
        transport = self.connections.get(target.transport)
        sent_by = self.connections.sent_by(target.addr, transport)
        return invite_for(
            call_id,
            dial,
            target,
            transport.name,
            sent_by,
            self.config.t1,
            now,
            keepalive=self.config.keepalive_interval,
            request_uri=uri,
        )

    def _attempt(self, handle: CallHandle, target: Target) -> None:
        """Make ``target`` the handle's current one and send its INVITE."""
        transport = self.connections.get(target.transport)
        handle.target = target
        handle.trunk = target.addr
        handle.transport = transport
        handle._provisional = False
        # In-dialog requests go to their next hop (Route set, remote target), except
        # through an outbound proxy (every request goes to it) and over TLS (the
        # connection whose certificate was checked carries the whole dialog).
        proxied = handle._dial is not None and handle._dial.proxy is not None
        handle.hops = None if proxied or target.transport == "tls" else Hops(target.addr)
        # The trunk's ``tls_ca``, else SIP_TLS_CA.
        tls_ca = handle._dial.trunk.tls_ca if handle._dial else ""
        self.connections.expect(transport, target, tls_ca)
        log.info("%s: INVITE to %s", handle.call.call_id, target)
        self._host_call(handle)

    def adopt_bye(self, call_id: str, record: SipDialogRecord) -> CallHandle:
        """End a dead SIP agent's confirmed dialog with a BYE from this agent.

        ``RecoveryError`` if the record holds no whole dialog. The handle's one
        ``Ended`` is for logs: whoever adopted the dialog reports the call's end.
        """
        if self.connections.primary is None or self._loop is None:
            raise DialError("SIP agent not started")
        config = self.config
        trunk = (record.trunk_host, record.trunk_port)
        self.screen.allow(record.trunk_host)
        authenticator = DigestAuthenticator(config.username, config.password)
        transport = self.connections.get(record.transport)
        bye = RecoveredBye(
            call_id,
            record,
            sent_by=self.connections.sent_by(trunk, transport),
            authenticator=authenticator if config.username else None,
            t1=config.t1,
        )
        handle = CallHandle(self, bye, trunk, transport)
        self._host_call(handle)
        return handle

    def hangup(self, handle: CallHandle, cause: str) -> None:
        if self._loop is None or handle._closed:
            return
        handle._hung_up = True
        handle.call.hangup(cause, self._loop.time())
        self._service(handle, None)
        self._rearm()

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
        self._rearm()
        return await self.registrations.wait_unregistered(timeout)

    def drive(self, handle: CallHandle, action: Callable[[float], None]) -> None:
        """Run ``action(now)`` on a call, then send what it queued."""
        if self._loop is None:
            return
        action(self._loop.time())
        self._service(handle, None)
        self._rearm()

    async def close(self) -> None:
        self.registrations.close()
        self.screen.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self.connections.close()

    # --- internals ---------------------------------------------------------------

    def _host_call(self, handle: CallHandle) -> None:
        """Take ``handle`` among the calls and start it."""
        assert self._loop is not None
        self._calls[handle.call.sip_call_id] = handle
        self._idle.clear()
        handle.call.start(self._loop.time())
        self._service(handle, None)
        self._rearm()

    def receive(self, data: bytes, addr: Addr, transport: SipTransport | None = None) -> None:
        """Handle one message from ``transport`` (None: the agent's first one)."""
        assert self._loop is not None
        now = self._loop.time()
        # The source's rate first, on its address alone: a flood is dropped unread.
        if not self.screen.admit(addr, now):
            return
        try:
            message = parse_message(data)
        except SipParseError as exc:
            if not self.screen.unparsable(addr, now):
                return
            log.debug("dropped bad message from %s:%d: %s", addr[0], addr[1], exc)
            reply = bad_request(data, str(exc))
            if reply is not None:
                self._send(reply, addr, transport)
            return
        if isinstance(message, Request) and not self.screen.request(
            message, addr, transport, now, self._in_dialog(message.call_id, now)
        ):
            return
        handle = self._calls.get(message.call_id)
        if (
            handle is None
            and _is_invite_2xx(message)
            and self._end_late_answer(message, addr, transport)
        ):
            return
        if handle is None:
            if self.registrations.receive(message, self._loop.time()):
                self._rearm()
            else:
                self._stateless(message, addr, transport)
            return
        if isinstance(message, Response) and message.cseq.method == "INVITE":
            self._note_invite_response(handle, message)
        if handle.observer is not None:
            handle.observer("<", summary(message))
        handle.call.receive(message, self._loop.time())
        self._service(handle, addr)
        self._rearm()

    def _stateless(
        self, message: Request | Response, addr: Addr, transport: SipTransport | None
    ) -> None:
        """Answer what belongs to no call: OPTIONS 200, other requests 481."""
        if isinstance(message, Response) or message.method == "ACK":
            log.debug("dropped %s for no call", summary(message))
            return
        if message.method == "OPTIONS":
            response = make_response(
                message,
                200,
                to_tag=new_tag(),
                headers=[
                    ("Allow", ALLOW),
                    ("Accept", "application/sdp"),
                    ("User-Agent", USER_AGENT),
                ],
            )
        else:
            response = make_response(message, 481, to_tag=new_tag())
        self._send(bytes(response), addr, transport)

    def _in_dialog(self, call_id: str, now: float) -> bool:
        """Whether ``call_id`` is one of our calls, or of one forgotten lately."""
        forgotten = self._forgotten.get(call_id)
        return call_id in self._calls or (forgotten is not None and forgotten[0] >= now)

    # --- sources ---------------------------------------------------------------------

    def know_trunks(self, trunks: Iterable[Trunk]) -> None:
        """Take requests from ``trunks`` and their outbound proxies (and SIP_OUTBOUND_PROXY).

        IP addresses are known at once, names once resolved: ``SourceScreen.know_trunks``.
        """
        if self._loop is None:
            raise DialError("SIP agent not started")
        self.screen.know_trunks(trunks, self.connections.resolve, self._loop)

    def _service(self, handle: CallHandle, reply_to: Addr | None) -> None:
        """Send what the call wants sent, queue its events, forget it once finished."""
        call = handle.call
        for message in call.messages_to_send():
            # Responses go back where the request came from (rport: its source address).
            if isinstance(message, Response):
                dest = reply_to or handle.trunk
            else:
                dest = handle.destination(message)
            if handle.observer is not None:
                handle.observer(">", summary(message))
            self._send(bytes(message), dest, handle.transport)
        while (event := call.next_event()) is not None:
            if handle._retired:
                continue
            if isinstance(event, Ended) and self._fail_over(handle, event):
                continue
            handle.events.put_nowait(event)
        if handle.call is not call:
            return  # failed over: the old attempt is hosted apart, or gone
        # A transfer adds a dialog with a Call-ID of its own to the same call.
        if isinstance(call, TransferringCall):
            for sip_call_id in call.sip_call_ids:
                self._calls.setdefault(sip_call_id, handle)
            while call.dropped:
                sip_call_id = call.dropped.pop()
                if self._calls.get(sip_call_id) is handle:
                    self._forget(sip_call_id, call.call_id)
        if call.finished and self._calls.get(call.sip_call_id) is handle:
            for sip_call_id in [k for k, h in self._calls.items() if h is handle]:
                self._forget(sip_call_id, call.call_id)
            if not self._calls:
                self._idle.set()

    # --- answers that come too late ----------------------------------------------

    def _forget(self, sip_call_id: str, call_id: str) -> None:
        """Stop hosting a Call-ID, remembering it a while for a 2xx that comes late."""
        assert self._loop is not None
        del self._calls[sip_call_id]
        now = self._loop.time()
        if len(self._forgotten) >= MAX_FORGOTTEN:
            self._forgotten = {k: v for k, v in self._forgotten.items() if v[0] > now}
        if len(self._forgotten) < MAX_FORGOTTEN:
            self._forgotten[sip_call_id] = (now + LATE_ANSWER_WINDOW, call_id)

    def _end_late_answer(
        self, response: Response, addr: Addr, transport: SipTransport | None
    ) -> bool:
        """ACK and BYE a 2xx to one of our INVITEs whose call was already over.

        The trunk answered as our CANCEL crossed it, after Timer B, after a
        failover moved on, or a transfer attempt gave up: without this its
        dialog would stay up (and billing). False if the 2xx is none of ours.
        """
        assert self._loop is not None
        known = self._forgotten.pop(response.call_id, None)
        if known is None or known[0] < self._loop.time():
            return False
        call_id = known[1]
        transport = transport or self.connections.primary
        assert transport is not None
        try:
            record = answered_record(response, transport=transport.name, trunk=addr)
            ack = late_ack(response, record, sent_by=self.connections.sent_by(addr, transport))
            log.info("%s: %s after the call ended: ACK and BYE", call_id, summary(response))
            self._send(bytes(ack), addr, transport)
            self.adopt_bye(call_id, record)
        except (RecoveryError, DialError) as exc:
            log.warning("%s: cannot end a late 2xx: %s", call_id, exc)
        return True

    def _send(self, data: bytes, addr: Addr, transport: SipTransport | None = None) -> None:
        transport = transport or self.connections.primary
        if transport is not None:
            log.debug("sip > %s:%d %d bytes", addr[0], addr[1], len(data))
            transport.send(data, addr)

    def _send_unlogged(self, data: bytes, addr: Addr, transport: SipTransport | None) -> None:
        """``_send`` without its line: the screen's 403s, one per refusal."""
        transport = transport or self.connections.primary
        if transport is not None:
            transport.send(data, addr)

    def _rearm(self) -> None:
        """One timer for the agent, at the earliest timer of any call or registration."""
        assert self._loop is not None
        timers = [h.call.get_timer() for h in self._calls.values()]
        timers.append(self.registrations.get_timer())
        when = min((t for t in timers if t is not None), default=None)
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
        for handle in list(self._calls.values()):
            deadline = handle.call.get_timer()
            if deadline is not None and deadline <= now:
                handle.call.handle_timer(now)
                self._service(handle, None)
        self.registrations.handle_timer(now)
        self._rearm()

    # --- failover ----------------------------------------------------------------

    def _note_invite_response(self, handle: CallHandle, response: Response) -> None:
        """Remember a provisional response; honour a 503's Retry-After for every call."""
        if 100 < response.code < 200:
            # A 100 is only the next hop's; ringing or early media may have reached the caller.
            handle._provisional = True
        elif response.code == 503 and handle.target is not None and self._loop is not None:
            seconds = retry_after(response.headers.get("Retry-After"))
            if seconds:
                call_id = handle.call.call_id
                log.info("%s: %s asks for %g s of rest", call_id, handle.target, seconds)
                self.backoff.hold(handle.target, seconds, self._loop.time())

    def _fail_over(self, handle: CallHandle, ended: Ended, reason: str = "") -> bool:
        """Place the call on the next target instead of ending it; False if it must end."""
        dial = handle._dial
        if dial is None or self._loop is None:
            return False
        if not fails_over(
            ended,
            provisional=handle._provisional,
            hung_up=handle._hung_up,
            transport_failed=bool(reason),
        ):
            return False
        now = self._loop.time()
        if not dial.targets or now >= dial.deadline:
            return False
        old = handle.call
        why = reason or ("no response" if ended.status == 408 else f"{ended.status} {ended.reason}")
        target = dial.targets.pop(0)
        log.info("%s: %s (%s): trying %s", old.call_id, handle.target, why, target)
        # The old INVITE stays hosted until its transaction ends (ACK retransmissions).
        if not old.finished and not reason:
            retired = CallHandle(self, old, handle.trunk, handle.transport)
            retired._retired = True
            self._calls[old.sip_call_id] = retired
        elif self._calls.get(old.sip_call_id) is handle:
            self._forget(old.sip_call_id, old.call_id)
        handle.call = self._call_for(old.call_id, dial, target, now)
        self._attempt(handle, target)
        return True

    def _on_transport_error(self, transport: SipTransport, addr: Addr, reason: str) -> None:
        """A connection could not be opened: calls whose INVITE waited on it move on or end.

        Only calls still in Calling: their INVITE never left, so no dialog can exist.
        """
        if self._loop is None:
            return
        for handle in list(self._calls.values()):
            call = handle.call
            if handle._retired or handle.transport is not transport or handle.trunk != addr:
                continue
            invite = call.call if isinstance(call, TransferringCall) else call
            if not isinstance(invite, OutboundCall) or invite.state is not CallState.CALLING:
                continue
            ended = Ended(errors.UNREACHABLE, None, reason)
            if self._fail_over(handle, ended, reason):
                continue
            if self._calls.get(call.sip_call_id) is handle:
                del self._calls[call.sip_call_id]
            handle._closed = True
            handle.events.put_nowait(ended)
            log.info("%s: ended (%s)", call.call_id, reason)
        if not self._calls:
            self._idle.set()
        self._rearm()


def _is_invite_2xx(message: Request | Response) -> TypeGuard[Response]:
    return (
        isinstance(message, Response)
        and 200 <= message.code < 300
        and message.cseq.method == "INVITE"
    )
