"""The SIP agent's hosting decisions, sans-I/O: which call a message is for, and what else to do.

``AgentCore`` hosts many calls by SIP Call-ID and is driven like them: bytes
in (``receive``), timers (``handle_timer``/``get_timer``) and the service's
requests (``dial``, ``hangup``, ``drive``, ``adopt_bye``), every one with
``now``. What it wants done is pulled: ``actions_to_send()`` (``Transmit`` a
message, or ``Connect``: get a transport ready for a target first),
``next_event()`` (a call's event) and ``inbound_calls()`` (calls hosted from a
trunk's INVITE). It never reads a clock, opens a socket or resolves a name:
the adapter (``SipAgent``) resolves a trunk and hands the targets to ``dial``.

What happens when...
- an INVITE gets no response at all (Timer B, a connection that could not be
  opened) or a 503 before any provisional response: the call is placed again,
  as a new INVITE, on the next target (``_fail_over``); a 503's Retry-After
  keeps that target aside for every call (``Backoff``).
- a 2xx comes to an INVITE of a call already forgotten (the trunk answered as
  our CANCEL crossed it, after Timer B, after a failover moved on): it is ACKed
  and BYEd for ``LATE_ANSWER_WINDOW`` seconds (``_end_late_answer``).
- an INVITE outside a dialog arrives for no call: ``on_invite`` decides (a call
  to host, a response, or nothing), and screens its source itself (the
  ``Screen`` sees every other request); without ``on_invite``, 481.
- any other request of no call: OPTIONS 200, ACK nothing, others 481.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import TypeGuard

from sipmessage import Request, Response

from proto import errors
from proto.fleet import SipDialogRecord
from services.common.providers import Trunk
from services.common.sip.auth import DigestAuthenticator
from services.common.sip.message import (
    SipMessage,
    SipParseError,
    bad_request,
    parse_message,
    summary,
    tag_of,
    top_branch,
)
from services.common.sip.next_hop import Hops
from services.common.sipaddr import OutboundProxy
from services.sipagent.agent_ports import Action, Connect, Hosts, OnInvite, Screen, SentBy, Transmit
from services.sipagent.attempt import DialPlan, fails_over, invite_for, request_uri_for
from services.sipagent.call import CallState, OutboundCall
from services.sipagent.config import AgentConfig, DialError, UnreachableError
from services.sipagent.events import CallEvent, Ended
from services.sipagent.hosted import Addr, HostedCall, SipObserver
from services.sipagent.no_call import Expiring, stateless_reply
from services.sipagent.recovery import RecoveredBye, RecoveryError, answered_record, late_ack
from services.sipagent.resolve import Backoff, Target, retry_after
from services.sipagent.transfer import TransferringCall

log = logging.getLogger(__name__)

LATE_ANSWER_WINDOW = 300.0
"Seconds after a call is forgotten during which a 2xx to its INVITE is still ACKed and BYEd."
MAX_FORGOTTEN = 10000
"Forgotten Call-IDs (and INVITEs answered without a call) remembered at most."
ANSWERED_INVITE_TIME = 64
"In T1: how long an INVITE answered without a call gets its response again when retransmitted."


class AgentCore:
    """Every call of one SIP agent by SIP Call-ID, and what to do with what belongs to none."""

    def __init__(
        self,
        config: AgentConfig,
        sent_by: SentBy,
        *,
        backoff: Backoff | None = None,
        screen: Screen | None = None,
        registrations: Hosts | None = None,
    ) -> None:
        self.config = config
        self.backoff = backoff or Backoff()
        "Targets that answered 503 with Retry-After, for every call of the process."
        self.on_invite: OnInvite | None = None
        "Decides on an INVITE outside a dialog for no call (None: 481)."
        self._sent_by = sent_by
        self._screen = screen
        self._registrations = registrations
        self._calls: dict[str, HostedCall] = {}
        self._forgotten: Expiring[str, str] = Expiring(MAX_FORGOTTEN)
        "SIP Call-IDs no longer hosted, until a late 2xx is no longer ended: the bridge call id."
        self._answered: Expiring[tuple[str, str], bytes] = Expiring(MAX_FORGOTTEN)
        "INVITEs answered without a call, by Call-ID and branch: the response, for a while."
        self._actions: list[Action] = []
        self._events: deque[tuple[HostedCall, CallEvent]] = deque()
        self._inbound: list[HostedCall] = []
        self._now = 0.0
        "The time of the latest input (a transfer places its INVITE from within a call)."

    # --- what the adapter pulls --------------------------------------------------

    def actions_to_send(self) -> list[Action]:
        """What to do, in order: get a transport ready for a target, send bytes."""
        actions, self._actions = self._actions, []
        return actions

    def next_event(self) -> tuple[HostedCall, CallEvent] | None:
        """The next event of a call, with the call it is for (never of a retired attempt)."""
        return self._events.popleft() if self._events else None

    def inbound_calls(self) -> list[HostedCall]:
        """Calls hosted from a trunk's INVITE since last asked (before their events)."""
        calls, self._inbound = self._inbound, []
        return calls

    def get_timer(self) -> float | None:
        """The earliest timer of any call or registration."""
        timers = [hosted.call.get_timer() for hosted in self._calls.values()]
        if self._registrations is not None:
            timers.append(self._registrations.get_timer())
        return min((t for t in timers if t is not None), default=None)

    @property
    def active_calls(self) -> int:
        """SIP Call-IDs hosted (clean-up of ended calls included)."""
        return len(self._calls)

    def hosted(self, sip_call_id: str) -> HostedCall | None:
        """The call hosted under ``sip_call_id``, if any."""
        return self._calls.get(sip_call_id)

    def in_dialog(self, sip_call_id: str, now: float) -> bool:
        """Whether ``sip_call_id`` is one of our calls, or of one forgotten lately."""
        return sip_call_id in self._calls or self._forgotten.get(sip_call_id, now) is not None

    # --- inputs ------------------------------------------------------------------

    def receive(self, data: bytes, addr: Addr, transport: str, now: float) -> None:
        """Handle one message received from ``addr`` over ``transport`` (its name)."""
        self._now = now
        screen = self._screen
        # The source's rate first, on its address alone: a flood is dropped unread.
        if screen is not None and not screen.admit(addr, now):
            return
        try:
            message = parse_message(data)
        except SipParseError as exc:
            if screen is not None and not screen.unparsable(addr, now):
                return
            log.debug("dropped bad message from %s:%d: %s", addr[0], addr[1], exc)
            reply = bad_request(data, str(exc))
            if reply is not None:
                self._send(reply, addr, transport)
            return
        hosted = self._calls.get(message.call_id)
        if (
            isinstance(message, Request)
            and screen is not None
            and not self._offered(message, hosted)
            and not screen.request(
                message, addr, transport, now, self.in_dialog(message.call_id, now)
            )
        ):
            return
        if hosted is None:
            self._receive_unhosted(message, addr, transport, now)
            return
        if isinstance(message, Response) and message.cseq.method == "INVITE":
            self._note_invite_response(hosted, message, now)
        if hosted.observer is not None:
            hosted.observer("<", summary(message))
        hosted.call.receive(message, now)
        self._service(hosted, addr, now)

    def handle_timer(self, now: float) -> None:
        """Run the timers due by ``now``."""
        self._now = now
        for hosted in list(self._calls.values()):
            deadline = hosted.call.get_timer()
            if deadline is not None and deadline <= now:
                hosted.call.handle_timer(now)
                self._service(hosted, None, now)
        if self._registrations is not None:
            self._registrations.handle_timer(now)

    def usable(self, targets: Sequence[Target], now: float) -> list[Target]:
        """``targets`` but those resting after a 503's Retry-After (all if every one is)."""
        return self.backoff.usable(targets, now)

    def dial(
        self,
        call_id: str,
        trunk: Trunk,
        destination: str,
        offer_sdp: str,
        targets: Sequence[Target],
        now: float,
        *,
        headers: Sequence[tuple[str, str]] = (),
        proxy: OutboundProxy | None = None,
        observer: SipObserver | None = None,
    ) -> HostedCall:
        """Send the INVITE of a new call to the first usable one of ``targets``.

        ``DialError`` for a destination that cannot be a SIP user part,
        ``UnreachableError`` without any target. The transports the targets
        name must be open (the adapter opens them: a failover cannot wait).
        """
        self._now = now
        try:
            request_uri_for(destination, trunk.realm_domain)
        except ValueError as exc:
            raise DialError(f"invalid destination: {exc}") from None
        usable = self.usable(targets, now)
        if not usable:
            raise UnreachableError(f"no address for trunk {trunk.name!r}")
        timeout = self.config.invite_timeout
        plan = DialPlan(
            trunk,
            destination,
            offer_sdp,
            list(headers),
            usable,
            now + timeout,
            proxy,
            invite_timeout=timeout,
        )
        target = plan.targets.pop(0)
        call = self._call_for(call_id, plan, target, now)
        hosted = HostedCall(call, target.addr, target.transport, dial=plan, observer=observer)
        self._attempt(hosted, target, now)
        return hosted

    def adopt_bye(self, call_id: str, record: SipDialogRecord, now: float) -> HostedCall:
        """End a confirmed dialog this agent does not hold (a dead agent's) with a BYE.

        ``RecoveryError`` if the record holds no whole dialog. Its one ``Ended``
        is for logs: whoever adopted the dialog reports the call's end.
        """
        self._now = now
        config = self.config
        trunk = (record.trunk_host, record.trunk_port)
        if self._screen is not None:
            self._screen.allow(record.trunk_host)
        authenticator = DigestAuthenticator(config.username, config.password)
        bye = RecoveredBye(
            call_id,
            record,
            sent_by=self._sent_by(trunk, record.transport),
            authenticator=authenticator if config.username else None,
            t1=config.t1,
        )
        hosted = HostedCall(bye, trunk, record.transport)
        self._host(hosted, now)
        return hosted

    def hangup(self, hosted: HostedCall, cause: str, now: float) -> None:
        """End a call from our side (CANCEL, BYE, or a reject for an inbound one)."""
        self._now = now
        if hosted.closed:
            return
        hosted.hung_up = True
        hosted.call.hangup(cause, now)
        self._service(hosted, None, now)

    def drive(self, hosted: HostedCall, action: Callable[[float], None], now: float) -> None:
        """Run ``action(now)`` on a call (hold, DTMF, ring, answer), then take what it queued."""
        self._now = now
        if hosted.closed:
            return
        action(now)
        self._service(hosted, None, now)

    def transport_failed(self, transport: str, addr: Addr, reason: str, now: float) -> None:
        """A connection to ``addr`` could not be opened: calls whose INVITE waited on it move on.

        Only calls still in Calling: their INVITE never left, so no dialog can
        exist. Those with no target left end with ``reason``.
        """
        self._now = now
        for hosted in list({id(h): h for h in self._calls.values()}.values()):
            call = hosted.call
            if hosted.retired or hosted.closed or hosted.transport != transport:
                continue
            if hosted.trunk != addr:
                continue
            invite = call.call if isinstance(call, TransferringCall) else call
            if not isinstance(invite, OutboundCall) or invite.state is not CallState.CALLING:
                continue
            ended = Ended(errors.UNREACHABLE, None, reason)
            if self._fail_over(hosted, ended, now, reason):
                continue
            if self._calls.get(call.sip_call_id) is hosted:
                del self._calls[call.sip_call_id]
            hosted.closed = True
            self._events.append((hosted, ended))
            log.info("%s: ended (%s)", call.call_id, reason)

    # --- hosting -----------------------------------------------------------------

    def _host(self, hosted: HostedCall, now: float) -> None:
        """Take ``hosted`` among the calls and start it."""
        self._calls[hosted.call.sip_call_id] = hosted
        hosted.call.start(now)
        self._service(hosted, None, now)

    def _service(self, hosted: HostedCall, reply_to: Addr | None, now: float) -> None:
        """Queue what the call wants sent and its events; forget it once finished."""
        call = hosted.call
        for message in call.messages_to_send():
            # Responses go back where the request came from (rport: its source address).
            if isinstance(message, Response):
                dest = reply_to or hosted.trunk
            else:
                dest = hosted.destination(message)
            if hosted.observer is not None:
                hosted.observer(">", summary(message))
            self._send(bytes(message), dest, hosted.transport)
        while (event := call.next_event()) is not None:
            if hosted.retired:
                continue
            if isinstance(event, Ended) and self._fail_over(hosted, event, now):
                continue
            self._events.append((hosted, event))
        if hosted.call is not call:
            return  # failed over: the old attempt is hosted apart, or gone
        # A transfer adds a dialog with a Call-ID of its own to the same call.
        if isinstance(call, TransferringCall):
            for sip_call_id in call.sip_call_ids:
                self._calls.setdefault(sip_call_id, hosted)
            while call.dropped:
                sip_call_id = call.dropped.pop()
                if self._calls.get(sip_call_id) is hosted:
                    self._forget(sip_call_id, call.call_id, now)
        if call.finished and self._calls.get(call.sip_call_id) is hosted:
            for sip_call_id in [k for k, h in self._calls.items() if h is hosted]:
                self._forget(sip_call_id, call.call_id, now)

    def _forget(self, sip_call_id: str, call_id: str, now: float) -> None:
        """Stop hosting a Call-ID, remembering it a while for a 2xx that comes late."""
        del self._calls[sip_call_id]
        self._forgotten.put(sip_call_id, call_id, now + LATE_ANSWER_WINDOW, now)

    def _send(self, data: bytes, addr: Addr, transport: str) -> None:
        self._actions.append(Transmit(data, addr, transport))

    # --- failover ----------------------------------------------------------------

    def _call_for(
        self, call_id: str, plan: DialPlan, target: Target, now: float
    ) -> TransferringCall:
        """The call toward ``target``, able to follow the trunk's REFER through it."""

        def place(uri: str) -> OutboundCall:
            return self._invite_for(call_id, plan, target, self._now, uri)

        return TransferringCall(self._invite_for(call_id, plan, target, now), place)

    def _invite_for(
        self, call_id: str, plan: DialPlan, target: Target, now: float, uri: str = ""
    ) -> OutboundCall:
        return invite_for(
            call_id,
            plan,
            target,
            target.transport,
            self._sent_by(target.addr, target.transport),
            self.config.t1,
            now,
            keepalive=self.config.keepalive_interval,
            request_uri=uri,
        )

    def _attempt(self, hosted: HostedCall, target: Target, now: float) -> None:
        """Make ``target`` the call's current one and send its INVITE."""
        hosted.target = target
        hosted.trunk = target.addr
        hosted.transport = target.transport
        hosted.provisional = False
        plan = hosted.dial
        # In-dialog requests go to their next hop (Route set, remote target), except
        # through an outbound proxy (every request goes to it) and over TLS (the
        # connection whose certificate was checked carries the whole dialog).
        proxied = plan is not None and plan.proxy is not None
        hosted.hops = None if proxied or target.transport == "tls" else Hops(target.addr)
        # The trunk's ``tls_ca``, else SIP_TLS_CA.
        self._actions.append(Connect(target, plan.trunk.tls_ca if plan else ""))
        log.info("%s: INVITE to %s", hosted.call.call_id, target)
        self._host(hosted, now)

    def _note_invite_response(self, hosted: HostedCall, response: Response, now: float) -> None:
        """Remember a provisional response; honour a 503's Retry-After for every call."""
        if 100 < response.code < 200:
            # A 100 is only the next hop's; ringing or early media may have reached the caller.
            hosted.provisional = True
        elif response.code == 503 and hosted.target is not None:
            seconds = retry_after(response.headers.get("Retry-After"))
            if seconds:
                call_id = hosted.call.call_id
                log.info("%s: %s asks for %g s of rest", call_id, hosted.target, seconds)
                self.backoff.hold(hosted.target, seconds, now)

    def _fail_over(self, hosted: HostedCall, ended: Ended, now: float, reason: str = "") -> bool:
        """Place the call on the next target instead of ending it; False if it must end."""
        plan = hosted.dial
        if plan is None:
            return False
        if not fails_over(
            ended,
            provisional=hosted.provisional,
            hung_up=hosted.hung_up,
            transport_failed=bool(reason),
        ):
            return False
        if not plan.targets or now >= plan.deadline:
            return False
        old = hosted.call
        why = reason or ("no response" if ended.status == 408 else f"{ended.status} {ended.reason}")
        target = plan.targets.pop(0)
        log.info("%s: %s (%s): trying %s", old.call_id, hosted.target, why, target)
        # The old INVITE stays hosted until its transaction ends (ACK retransmissions).
        if not old.finished and not reason:
            retired = HostedCall(
                old, hosted.trunk, hosted.transport, hops=hosted.hops, retired=True
            )
            self._calls[old.sip_call_id] = retired
        elif self._calls.get(old.sip_call_id) is hosted:
            self._forget(old.sip_call_id, old.call_id, now)
        hosted.call = self._call_for(old.call_id, plan, target, now)
        self._attempt(hosted, target, now)
        return True

    # --- what belongs to no call -------------------------------------------------

    def _receive_unhosted(
        self, message: SipMessage, addr: Addr, transport: str, now: float
    ) -> None:
        if _is_invite_2xx(message) and self._end_late_answer(message, addr, transport, now):
            return
        if self._registrations is not None and self._registrations.receive(message, now):
            return
        if isinstance(message, Request) and self._offer_invite(message, addr, transport, now):
            return
        self._stateless(message, addr, transport)

    def _offered(self, request: Request, hosted: HostedCall | None) -> bool:
        """Whether ``request`` is a new INVITE for ``on_invite``, which then screens its source."""
        return (
            hosted is None
            and self.on_invite is not None
            and request.method == "INVITE"
            and not tag_of(request.headers.get("To") or "")
            and request.call_id not in self._forgotten
        )

    def _offer_invite(self, request: Request, addr: Addr, transport: str, now: float) -> bool:
        """Hand a new INVITE to ``on_invite``; False if it is none or nobody takes them."""
        if self.on_invite is None or not self._offered(request, None):
            return False
        key = (request.call_id, top_branch(request))
        answered = self._answered.get(key, now)
        if answered is not None:
            self._send(answered, addr, transport)  # a retransmission: the same answer
            return True
        result = self.on_invite(request, addr, transport, now)
        if result is None:
            log.debug("dropped %s from %s:%d", summary(request), addr[0], addr[1])
        elif isinstance(result, Response):
            data = bytes(result)
            self._answered.put(key, data, now + ANSWERED_INVITE_TIME * self.config.t1, now)
            self._send(data, addr, transport)
        else:
            hosted = HostedCall(result, addr, transport, inbound=True)
            log.info("%s: INVITE from %s:%d", result.call_id, addr[0], addr[1])
            self._inbound.append(hosted)
            self._host(hosted, now)
        return True

    def _stateless(self, message: SipMessage, addr: Addr, transport: str) -> None:
        """Answer what belongs to no call: OPTIONS 200, other requests 481."""
        reply = stateless_reply(message)
        if reply is None:
            log.debug("dropped %s for no call", summary(message))
        else:
            self._send(bytes(reply), addr, transport)

    def _end_late_answer(self, response: Response, addr: Addr, transport: str, now: float) -> bool:
        """ACK and BYE a 2xx to one of our INVITEs whose call was already over.

        Without this the trunk's dialog would stay up (and billing). False if
        the 2xx is none of ours, or came after ``LATE_ANSWER_WINDOW``.
        """
        call_id = self._forgotten.pop(response.call_id, now)
        if call_id is None:
            return False
        try:
            record = answered_record(response, transport=transport, trunk=addr)
            ack = late_ack(response, record, sent_by=self._sent_by(addr, transport))
            log.info("%s: %s after the call ended: ACK and BYE", call_id, summary(response))
            self._send(bytes(ack), addr, transport)
            self.adopt_bye(call_id, record, now)
        except RecoveryError as exc:
            log.warning("%s: cannot end a late 2xx: %s", call_id, exc)
        return True


def _is_invite_2xx(message: SipMessage) -> TypeGuard[Response]:
    return (
        isinstance(message, Response)
        and 200 <= message.code < 300
        and message.cseq.method == "INVITE"
    )
