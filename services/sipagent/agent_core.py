"""The SIP agent's hosting, sans-I/O: which call a message is for, and where a call's messages go.

``AgentCore`` hosts many calls by SIP Call-ID and is driven like them: bytes
in (``receive``), timers (``handle_timer``/``get_timer``) and the service's
requests (``dial``, ``hangup``, ``drive``, ``adopt_bye``), every one with
``now``. What it wants done is pulled: ``actions_to_send()`` (``Transmit`` a
message, or ``Connect``: get a transport ready for a target first),
``next_event()`` (a call's event) and ``inbound_calls()`` (calls hosted from a
trunk's INVITE). It never reads a clock, opens a socket or resolves a name:
the adapter (``SipAgent``) resolves a trunk and hands the targets to ``dial``.

What happens when...
- a message arrives: the ``Screen`` judges its source; a message of a hosted
  Call-ID goes to its call, whose messages then go out: responses to where the
  request came from, requests outside a dialog to the trunk (our INVITE's
  target, or the trunk's INVITE's source), in-dialog requests to their next
  hop (``hops_for``: the route set, else the remote target), both directions.
- an outbound attempt ends with no response or a 503: ``Failover``
  (``failover.py``) may place the call again on its next target; the old
  attempt stays hosted apart until its transaction is done.
- a call is over: its Call-IDs are forgotten, and a 2xx that comes late for
  one of them is ACKed and BYEd (``LateAnswers``, ``late_answer.py``).
- an INVITE outside a dialog arrives for no call: ``on_invite`` decides
  (``NewInvites``, ``no_call.py``: a call to host, a response, or nothing),
  and screens its source itself; without ``on_invite``, 481.
- any other request of no call: OPTIONS 200, ACK nothing, others 481.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence

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
)
from services.common.sipaddr import OutboundProxy
from services.sipagent.agent_ports import Action, Connect, Hosts, OnInvite, Screen, SentBy, Transmit
from services.sipagent.config import AgentConfig
from services.sipagent.events import CallEvent, Ended
from services.sipagent.failover import Failover
from services.sipagent.hosted import Addr, HostedCall, SipObserver, hops_for
from services.sipagent.late_answer import LATE_ANSWER_WINDOW as LATE_ANSWER_WINDOW
from services.sipagent.late_answer import LateAnswers, is_invite_2xx
from services.sipagent.no_call import NewInvites, stateless_reply
from services.sipagent.recovery import RecoveredBye, RecoveryError
from services.sipagent.resolve import Backoff, Target
from services.sipagent.transfer import TransferringCall

log = logging.getLogger(__name__)


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
        self._sent_by = sent_by
        self._screen = screen
        self._registrations = registrations
        self._calls: dict[str, HostedCall] = {}
        self._late = LateAnswers(sent_by)
        "SIP Call-IDs no longer hosted, until a late 2xx is no longer ended."
        self._new_invites = NewInvites(config.t1, self._late)
        self._failover = Failover(config, sent_by, backoff or Backoff(), lambda: self._now)
        self._actions: list[Action] = []
        self._events: deque[tuple[HostedCall, CallEvent]] = deque()
        self._inbound: list[HostedCall] = []
        self._now = 0.0
        "The time of the latest input (a transfer places its INVITE from within a call)."

    @property
    def backoff(self) -> Backoff:
        """Targets that answered 503 with Retry-After, for every call of the process."""
        return self._failover.backoff

    @property
    def on_invite(self) -> OnInvite | None:
        """Decides on an INVITE outside a dialog for no call (None: 481)."""
        return self._new_invites.on_invite

    @on_invite.setter
    def on_invite(self, on_invite: OnInvite | None) -> None:
        self._new_invites.on_invite = on_invite

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
        return sip_call_id in self._calls or self._late.recent(sip_call_id, now)

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
            and not (hosted is None and self._new_invites.offered(message))
            and not screen.request(
                message, addr, transport, now, self.in_dialog(message.call_id, now)
            )
        ):
            return
        if hosted is None:
            self._receive_unhosted(message, addr, transport, now)
            return
        if isinstance(message, Response) and message.cseq.method == "INVITE":
            self._failover.note_response(hosted, message, now)
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
        return self._failover.usable(targets, now)

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
        hosted, connect = self._failover.first(
            call_id,
            trunk,
            destination,
            offer_sdp,
            targets,
            now,
            headers=headers,
            proxy=proxy,
            observer=observer,
        )
        self._begin(hosted, connect, now)
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
            if not self._failover.waits_on(hosted, transport, addr):
                continue
            call = hosted.call
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
        self._late.forget(sip_call_id, call_id, now)

    def _send(self, data: bytes, addr: Addr, transport: str, *, quiet: bool = False) -> None:
        self._actions.append(Transmit(data, addr, transport, quiet))

    # --- failover ----------------------------------------------------------------

    def _begin(self, hosted: HostedCall, connect: Connect, now: float) -> None:
        """Get the transport of the call's target ready, then host it: its INVITE goes out."""
        self._actions.append(connect)
        log.info("%s: INVITE to %s", hosted.call.call_id, hosted.target)
        self._host(hosted, now)

    def _fail_over(self, hosted: HostedCall, ended: Ended, now: float, reason: str = "") -> bool:
        """Place the call on the next target instead of ending it; False if it must end."""
        target = self._failover.next_target(hosted, ended, now, reason)
        if target is None:
            return False
        old = hosted.call
        # The old INVITE stays hosted until its transaction ends (ACK retransmissions).
        if not old.finished and not reason:
            self._calls[old.sip_call_id] = hosted.retired_copy()
        elif self._calls.get(old.sip_call_id) is hosted:
            self._forget(old.sip_call_id, old.call_id, now)
        self._begin(hosted, self._failover.move_on(hosted, target, now), now)
        return True

    # --- what belongs to no call -------------------------------------------------

    def _receive_unhosted(
        self, message: SipMessage, addr: Addr, transport: str, now: float
    ) -> None:
        if is_invite_2xx(message) and self._end_late_answer(message, addr, transport, now):
            return
        if self._registrations is not None and self._registrations.receive(message, now):
            return
        if isinstance(message, Request) and self._new_invites.offered(message):
            self._offer_invite(message, addr, transport, now)
            return
        reply = stateless_reply(message)
        if reply is None:
            log.debug("dropped %s for no call", summary(message))
        else:
            self._send(bytes(reply), addr, transport)

    def _offer_invite(self, request: Request, addr: Addr, transport: str, now: float) -> None:
        """Send what ``on_invite`` answers to a new INVITE, or host the call it makes."""
        result = self._new_invites.decide(request, addr, transport, now)
        if result is None:
            log.debug("dropped %s from %s:%d", summary(request), addr[0], addr[1])
        elif isinstance(result, bytes):
            self._send(result, addr, transport, quiet=True)
        else:
            # Responses go to the INVITE's source; our in-dialog requests (BYE,
            # re-INVITE, INFO) to the dialog's next hop, like an outbound call's.
            hosted = HostedCall(
                result, addr, transport, hops=hops_for(addr, transport), inbound=True
            )
            log.info("%s: INVITE from %s:%d", result.call_id, addr[0], addr[1])
            self._inbound.append(hosted)
            self._host(hosted, now)

    def _end_late_answer(self, response: Response, addr: Addr, transport: str, now: float) -> bool:
        """ACK and BYE a 2xx to one of our INVITEs whose call was already over.

        False if the 2xx is none of ours, or came after ``LATE_ANSWER_WINDOW``.
        """
        late = self._late.end(response, addr, transport, now)
        if late is None:
            return False
        if late.record is not None:
            self._send(late.ack, addr, transport)
            try:
                self.adopt_bye(late.call_id, late.record, now)
            except RecoveryError as exc:
                log.warning("%s: cannot end a late 2xx: %s", late.call_id, exc)
        return True
