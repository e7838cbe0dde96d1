"""One browser's WebSocket session and the set-up of its calls, sans I/O.

``BrowserSession`` is fed what happened (a text frame, a bus event, a timer,
the socket closing) with the current time, and says what to do as action
records pulled with ``pop_actions()``. The adapter in ``app.py`` moves bytes
and re-arms one timer from ``get_timer()``; nothing here touches a socket.

A session holds at most one call at a time: its own offer, or a call from the
trunk it accepted (``listen``/``accept``: the rings themselves are the
``Desk``'s, ``switchboard.py``). Each call gets its own subscriptions and one
timer per waiting state; whatever happens, it ends with an ``ended`` message
to the browser and the session back in ``IDLE``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import ClassVar

from proto import errors, subjects
from proto.events import (
    AnyEvent,
    CallAnswered,
    CallArrived,
    CallClaimed,
    CallDeclined,
    CallEnded,
    CallRequested,
    CallStatsReported,
    DialRequested,
    DtmfReceived,
    DtmfRequested,
    HangupRequested,
    HoldFailed,
    HoldRequested,
    IceCandidateReceived,
    InviteSent,
    MediaFailed,
    MediaPrepared,
    ProgressReceived,
    SessionUpdated,
)
from services.common.fleet.placement import Placement
from services.common.settings import Settings
from services.signaling import audit, messages, pickup
from services.signaling.actions import (
    Action,
    Admit,
    Close,
    Publish,
    SendMessage,
    Subscribe,
    Unsubscribe,
)
from services.signaling.attempt import Attempt
from services.signaling.caller import Caller, Gate, MessageGate
from services.signaling.controls import CallControls
from services.signaling.destinations import Destination, Refused, resolve
from services.signaling.messages import (
    Accept,
    BrowserMessage,
    Dtmf,
    Hangup,
    Hold,
    Ice,
    Listen,
    MessageError,
    Offer,
    Reject,
    Unlisten,
)
from services.signaling.pickup import Desk
from services.signaling.ringing import CLAIM_TIMEOUT
from services.signaling.states import END_STATES, IN_CALL, State

log = logging.getLogger(__name__)

HANGUP_GRACE = 5.0
"Seconds to wait for ``CallEnded`` after asking for a hang-up."
SHUTDOWN_GRACE = 2.0
"The same wait when the service is stopping."
MAX_BUFFERED_CANDIDATES = 64
"ICE candidates kept until a media worker has taken the call."

# Reasons shown to people when the bridge itself ends a call.
_REASONS = {
    errors.NORMAL: "Call ended",
    errors.CANCELLED: "Call cancelled",
    errors.BROWSER_GONE: "Browser disconnected",
    errors.TIMEOUT: "No answer",
    errors.MEDIA_FAILED: "Media failed",
    errors.MEDIA_TIMEOUT: "No audio",
    errors.MEDIA_SHUTDOWN: "Media server stopped",
    errors.SETUP_FAILED: "Call set-up failed",
    errors.MAX_DURATION: "Call time limit reached",
    errors.INTERNAL: "Internal error",
}


_LIMIT_REFUSALS = {
    errors.RATE_LIMITED: "too many call attempts: wait a little and try again",
    errors.TOO_MANY_CALLS: "you already have as many calls as you may",
}


def new_call_id() -> str:
    return uuid.uuid4().hex


class BrowserSession:
    """The state of one browser WebSocket and of its current call."""

    def __init__(
        self,
        settings: Settings,
        *,
        make_call_id: Callable[[], str] = new_call_id,
        placement: Placement | None = None,
        caller: Caller | None = None,
        desk: Desk | None = None,
        socket_id: str = "",
    ) -> None:
        """``placement``: chooses the media worker of each call (one per process);
        without it every call goes to the media queue group. ``caller``: who is on
        the socket (source address, token claims). ``desk``: the calls from the
        trunk ringing this process's sockets (none: ``listen`` is refused);
        ``socket_id`` names this socket to it."""
        self._settings = settings
        self._caller = caller or Caller()
        self._gate = MessageGate(settings.access.ws_message_rate)
        self._attempt: Attempt | None = None
        "The current call attempt: for the limits and the audit line."
        self._offer_sdp = ""
        self._clock = 0.0
        "The time of the latest input (for the audit line's duration)."
        self._make_call_id = make_call_id
        self._placement = placement
        self._request: CallRequested | None = None
        "The current call's ``CallRequested``, until a media worker took it."
        self._state = State.IDLE
        self._actions: list[Action] = []
        self._deadline: float | None = None
        self._socket_open = True
        self._closing = False
        self._call_id: str | None = None
        self._destination = ""
        self._headers: dict[str, str] = {}
        self._answered = False
        self._hangup_cause = ""
        self._candidates: list[Ice] = []
        self._controls: CallControls | None = None
        "Hold and DTMF of the current call, once it is connected."
        self._desk = desk
        self._socket_id = socket_id or uuid.uuid4().hex
        self._user: str | None = None
        "Who the socket last listened as."
        self._arrival: CallArrived | None = None
        "The current call's ``CallArrived`` when it is one from the trunk."

    # --- what the adapter reads ------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def call_id(self) -> str | None:
        """The id of the current call, or None between calls."""
        return self._call_id

    @property
    def destination(self) -> str:
        """Where the current (or last) call goes."""
        return self._destination

    @property
    def identity(self) -> str:
        """Who is on the socket (the client token's ``sub``); empty without a token."""
        return self._caller.identity or ""

    @property
    def socket_id(self) -> str:
        return self._socket_id

    @property
    def attempt(self) -> Attempt | None:
        """The current call as the audit and the registry see it (who, from, to, trunk)."""
        return self._attempt

    def deliver(self, message: messages.Outgoing) -> None:
        """Send a message of the desk's rings (``incoming``, a ring's ``ended``)."""
        self._send(message)

    def get_timer(self) -> float | None:
        """When ``handle_timer()`` should next be called, or None."""
        return self._deadline

    def pop_actions(self) -> list[Action]:
        """What to do, in order; each action is returned once."""
        actions, self._actions = self._actions, []
        return actions

    # --- inputs ------------------------------------------------------------------

    def receive_text(self, text: str, now: float) -> None:
        """A text frame arrived from the browser."""
        if not self._socket_open:
            return
        self._clock = now
        gate = self._gate.check(now)
        if gate is not Gate.PASS and not self._is_hangup(text):
            # A hang-up always goes through: a call must never outlive its caller's wish.
            self._refuse_flood(gate, now)
            return
        try:
            message = messages.parse_message(text)
            self._handle_message(message, now)
        except MessageError as exc:
            log.info("browser message refused (call %s): %s", self._call_id, exc.code)
            self._send(messages.error(exc.code, exc.message))

    def receive_binary(self, now: float) -> None:
        """A binary frame arrived: the protocol is JSON text only."""
        if not self._socket_open:
            return
        gate = self._gate.check(now)
        if gate is not Gate.PASS:
            self._refuse_flood(gate, now)
            return
        self._send(messages.error(messages.BAD_MESSAGE, "binary frames are not supported"))

    def _is_hangup(self, text: str) -> bool:
        if self._call_id is None or "hangup" not in text[:64]:
            return False
        try:
            return isinstance(messages.parse_message(text), Hangup)
        except MessageError:
            return False

    def handle_event(self, event: AnyEvent, now: float) -> None:
        """An event arrived on one of the current call's subjects."""
        self._clock = now
        if event.call_id != self._call_id or self._state not in IN_CALL:
            # In flight when the call ended, or meant for an older call.
            log.debug("ignored %s for call %s", type(event).__name__, event.call_id)
            return
        match event:
            case MediaPrepared():
                self._on_media_prepared(event, now)
            case CallDeclined():
                self._on_declined(event, now)
            case MediaFailed():
                self._on_media_failed(event, now)
            case InviteSent():
                self._on_invite_sent(event, now)
            case ProgressReceived():
                self._on_progress(event, now)
            case CallAnswered():
                self._on_answered(event, now)
            case CallClaimed():
                self._on_claimed(event, now)
            case HangupRequested():
                self._on_hangup_requested(event, now)
            case SessionUpdated() | HoldFailed() | DtmfReceived():
                self._on_in_call_event(event)
            case CallStatsReported():
                if self._state == State.CONNECTED:
                    self._send(messages.stats(event))
            case CallEnded():
                if event.code:
                    # The SIP agent refused the call (e.g. unknown_destination).
                    self._send(messages.error(event.code, event.reason))
                self._finish_call(event.status, event.reason, event.cause)
            case _:
                # MediaConnected and work-queue events change nothing here.
                log.debug("call %s: ignored %s", self._call_id, type(event).__name__)

    def handle_timer(self, now: float) -> None:
        """Time passed; act if the current state's timer expired."""
        if self._deadline is None or now < self._deadline:
            return
        self._clock = now
        self._deadline = None
        handler = self._timer_handlers.get(self._state)
        if handler is not None:
            handler(self, now)

    def socket_closed(self, now: float) -> None:
        """The browser's WebSocket closed; hang up whatever call is left."""
        if not self._socket_open:
            return
        self._clock = now
        self._socket_open = False
        if self._desk is not None:
            self._desk.socket_closed(self._socket_id, now)
        if self._state == State.ADMITTING:
            self._drop_attempt(errors.BROWSER_GONE, now)
        elif self._state == State.ACCEPTING:
            self._finish_call(None, "", errors.BROWSER_GONE)
        if self._state == State.IDLE:
            self._set_state(State.CLOSED)
        elif self._state not in (State.HANGING_UP, State.CLOSED):
            self._hang_up(errors.BROWSER_GONE, now, HANGUP_GRACE)
        # A call already hanging up finishes on its own timer; only the
        # ``ended`` message is dropped since nobody is there to read it.

    def end_by_operator(self, now: float) -> bool:
        """An operator ends the current call (``bridge calls hangup``): as if the browser
        hung up, with cause ``operator``. False when the session holds no call."""
        if self._call_id is None or self._state not in (State.ADMITTING, *IN_CALL):
            return False
        self._clock = now
        log.info("call %s: ended by an operator", self._call_id)
        if self._state == State.ADMITTING:
            ended = self._ended(None, "Ended by an operator", errors.OPERATOR)
            self._drop_attempt(errors.OPERATOR, now)
            self._send(ended)
        elif self._state == State.ACCEPTING:
            self._finish_call(None, "Ended by an operator", errors.OPERATOR)
        elif self._state != State.HANGING_UP:
            self._hang_up(errors.OPERATOR, now, HANGUP_GRACE)
        return True

    def shutdown(self, now: float) -> None:
        """The service is stopping: end the call quickly, then close the socket."""
        if self._state in END_STATES:
            return
        self._closing = True
        if self._state == State.ADMITTING:
            self._drop_attempt(errors.SETUP_FAILED, now)
        elif self._state == State.ACCEPTING:
            self._finish_call(None, _REASONS[errors.SETUP_FAILED], errors.SETUP_FAILED)
            return
        if self._state == State.IDLE:
            self._close_socket()
        elif self._state == State.HANGING_UP:
            if self._deadline is None or self._deadline > now + SHUTDOWN_GRACE:
                self._deadline = now + SHUTDOWN_GRACE
        else:
            cause = errors.NORMAL if self._answered else errors.CANCELLED
            self._hang_up(cause, now, SHUTDOWN_GRACE)

    # --- browser messages ----------------------------------------------------------

    def _handle_message(self, message: BrowserMessage, now: float) -> None:
        if isinstance(message, Offer):
            self._handle_offer(message, now)
        elif isinstance(message, Hangup):
            self._handle_hangup(now)
        elif isinstance(message, Ice):
            self._handle_ice(message)
        elif isinstance(message, Listen | Unlisten):
            self._handle_listen(message, now)
        elif isinstance(message, Accept):
            self._handle_accept(message, now)
        elif isinstance(message, Reject):
            self._handle_reject(message, now)
        else:
            self._handle_control(message)

    def _handle_offer(self, offer: Offer, now: float) -> None:
        if self._state != State.IDLE:
            raise MessageError(messages.CALL_IN_PROGRESS, "a call is already in progress")
        if self._closing:
            raise MessageError(errors.SETUP_FAILED, "the bridge is shutting down")
        caller = self._caller
        attempt = Attempt(self._make_call_id(), caller, offer.destination)
        if caller.token_expired(now):
            text = "your token has expired: connect again with a new one"
            self._refuse(attempt, errors.UNAUTHORIZED, text, now)
            return
        try:
            target = resolve(self._settings, offer.destination, offer.headers, caller.claims)
        except Refused as exc:
            attempt.target = Destination(offer.destination, exc.number, exc.trunk, {})
            self._refuse(attempt, exc.code, exc.message, now)
            return
        except MessageError as exc:
            self._refuse(attempt, exc.code, exc.message, now)
            return
        attempt.target = target
        log.info(
            "call %s: offer to %s from %s", attempt.call_id, target.number, caller.identity or "-"
        )
        self._begin(attempt, offer.sdp, None, now)

    def _begin(self, attempt: Attempt, sdp: str, arrival: CallArrived | None, now: float) -> None:
        """A call attempt (an offer, or an accept of ``arrival``) asks the limits for a place."""
        assert attempt.target is not None
        caller = attempt.caller
        self._attempt = attempt
        self._arrival = arrival
        self._call_id = attempt.call_id
        self._destination = arrival.caller if arrival is not None else attempt.target.number
        self._headers = attempt.target.headers
        self._offer_sdp = sdp
        self._answered = False
        self._hangup_cause = ""
        self._candidates = []
        log.debug("call %s: browser offer\n%s", attempt.call_id, sdp)
        max_calls = caller.claims.max_calls if caller.claims is not None else None
        self._actions.append(Admit(attempt.call_id, caller.identity, caller.source, max_calls))
        self._set_state(State.ADMITTING, now + self._settings.setup_timeout)

    def _handle_listen(self, message: Listen | Unlisten, now: float) -> None:
        desk = self._inbound_desk()
        if isinstance(message, Unlisten):
            desk.unlisten(self._socket_id, now)
            self._send(messages.listening(None))
            return
        user = pickup.listening_user(message, self._caller)
        self._user = user
        desk.listen(self._socket_id, user, now)
        log.info("browser: listening as %s", user)
        self._send(messages.listening(user))

    def _handle_accept(self, accept: Accept, now: float) -> None:
        desk = self._inbound_desk()
        if self._state != State.IDLE:
            raise MessageError(messages.CALL_IN_PROGRESS, "a call is already in progress")
        arrival = desk.ringing(self._socket_id, accept.call_id)
        if arrival is None:
            raise MessageError(messages.NO_CALL, "no call with that 'call_id' rings here")
        if self._closing:
            raise MessageError(errors.SETUP_FAILED, "the bridge is shutting down")
        attempt = pickup.attempt(arrival, self._caller, self._user or "")
        if self._caller.token_expired(now):
            text = "your token has expired: connect again with a new one"
            self._refuse(attempt, errors.UNAUTHORIZED, text, now)
            return
        log.info("call %s: accepted by %s", arrival.call_id, attempt.user or "-")
        self._begin(attempt, accept.sdp, arrival, now)

    def _handle_reject(self, reject: Reject, now: float) -> None:
        if reject.call_id == self._call_id and self._arrival is not None:
            self._handle_hangup(now)  # the call it accepted: as a hang-up
        elif not self._inbound_desk().reject(self._socket_id, reject.call_id, now):
            raise MessageError(messages.NO_CALL, "no call with that 'call_id' rings here")

    def _inbound_desk(self) -> Desk:
        if self._desk is None:
            raise MessageError(messages.UNKNOWN_TYPE, "calls from the trunk are not served here")
        return self._desk

    def admitted(self, call_id: str, refusal: str | None, now: float) -> bool:
        """The limits' answer to an ``Admit``: None to go on, else the refusal's code.

        False when the attempt is gone (the socket closed meanwhile): the
        adapter then releases the place it was given.
        """
        self._clock = now
        attempt = self._attempt
        if self._state != State.ADMITTING or attempt is None or call_id != attempt.call_id:
            return False
        if refusal is not None:
            self._call_id = None
            self._attempt = None
            self._set_state(State.IDLE, None)
            text = _LIMIT_REFUSALS.get(refusal, "the call is not allowed now")
            self._refuse(attempt, refusal, text, now)
            return False
        attempt.admitted = True
        if self._arrival is not None:
            self._accept(self._arrival, now)
            return True
        target = attempt.target
        assert target is not None
        request = CallRequested(
            call_id=call_id,
            offer_sdp=self._offer_sdp,
            destination=target.number,
            signaling_id=self._settings.instance_id,
            headers=target.headers,
            trunk=target.trunk,
        )
        self._start_call(request, now)
        return True

    def _accept(self, arrival: CallArrived, now: float) -> None:
        """Admitted: ask the SIP agent for the call, unless another browser here was first."""
        assert self._desk is not None and self._attempt is not None
        if not self._desk.accept(self._socket_id, arrival.call_id, now):
            # It stopped ringing here meanwhile; the browser was told how.
            self._finish_call(None, "", errors.ANSWERED_ELSEWHERE, tell=False)
            return
        call_id = arrival.call_id
        self._actions.append(Subscribe(subjects.call_events(call_id, "sipagent")))
        user = self._attempt.user or ""
        event = pickup.accept_requested(arrival, self._settings.instance_id, user)
        self._publish(subjects.call_events(call_id, "signaling"), event)
        self._set_state(State.ACCEPTING, now + CLAIM_TIMEOUT)

    def _on_claimed(self, event: CallClaimed, now: float) -> None:
        arrival = self._arrival
        if self._state != State.ACCEPTING or arrival is None:
            return
        if event.signaling_id != self._settings.instance_id:
            self._finish_call(None, "Answered elsewhere", errors.ANSWERED_ELSEWHERE)
            return
        log.info("call %s: claimed for this browser", event.call_id)
        assert self._desk is not None
        self._desk.claimed(self._socket_id, event.call_id, now)
        request = pickup.call_requested(arrival, self._offer_sdp, self._settings.instance_id)
        self._start_call(request, now)

    def _start_call(self, request: CallRequested, now: float) -> None:
        """Ask a media worker for the call (an accepted one listens to its SIP agent already)."""
        call_id = request.call_id
        self._actions.append(Subscribe(subjects.call_events(call_id, "media")))
        if self._arrival is None:
            self._actions.append(Subscribe(subjects.call_events(call_id, "sipagent")))
        self._request = request
        self._offer_sdp = ""
        if self._placement is None:
            subject = subjects.media_work()
        else:
            subject = self._placement.start(call_id, now).subject
        self._publish(subject, self._request)
        self._set_state(State.WAITING_MEDIA, now + self._settings.setup_timeout)

    def _handle_hangup(self, now: float) -> None:
        if self._state == State.IDLE:
            raise MessageError(messages.NO_CALL, "there is no call to hang up")
        if self._state == State.ADMITTING:
            ended = self._ended(None, _REASONS[errors.CANCELLED], errors.CANCELLED)
            self._drop_attempt(errors.CANCELLED, now)
            self._send(ended)
            return
        if self._state == State.ACCEPTING:
            self._finish_call(None, _REASONS[errors.CANCELLED], errors.CANCELLED)
            return
        if self._state == State.HANGING_UP:
            return  # Already on its way down.
        self._hang_up(errors.NORMAL if self._answered else errors.CANCELLED, now, HANGUP_GRACE)

    def _handle_ice(self, ice: Ice) -> None:
        if self._state in (State.ADMITTING, State.ACCEPTING, State.WAITING_MEDIA):
            # No media worker has subscribed yet: keep it until one has.
            if len(self._candidates) < MAX_BUFFERED_CANDIDATES:
                self._candidates.append(ice)
        elif self._state in IN_CALL and self._state != State.HANGING_UP:
            self._forward_candidate(ice)
        # Before an offer or while hanging up a candidate has nowhere to go.

    def _handle_control(self, message: Hold | Dtmf) -> None:
        controls = self._controls
        if controls is None or self._state != State.CONNECTED:
            what = "DTMF" if isinstance(message, Dtmf) else "hold"
            raise MessageError(messages.NOT_CONNECTED, f"{what} needs a connected call")
        event: DtmfRequested | HoldRequested | None
        if isinstance(message, Dtmf):
            event = controls.dtmf(message.digits)
        else:
            event = controls.hold(message.held)
        if event is not None:
            self._publish(subjects.call_events(controls.call_id, "signaling"), event)

    def _forward_candidate(self, ice: Ice) -> None:
        assert self._call_id is not None
        self._publish(
            subjects.call_events(self._call_id, "signaling"),
            IceCandidateReceived(
                call_id=self._call_id,
                candidate=ice.candidate,
                sdp_mid=ice.sdp_mid,
                sdp_mline_index=ice.sdp_mline_index,
            ),
        )

    # --- bus events --------------------------------------------------------------

    def _on_media_prepared(self, event: MediaPrepared, now: float) -> None:
        if self._state != State.WAITING_MEDIA:
            return
        log.debug("call %s: browser answer\n%s", self._call_id, event.answer_sdp)
        self._request = None
        if self._placement is not None:
            self._placement.finished(event.call_id)
        self._send(messages.answer(event.answer_sdp))
        if self._arrival is not None:
            # The SIP agent answers the trunk with media's SDP; CallAnswered once ACKed.
            signaling = subjects.call_events(event.call_id, "signaling")
            self._publish(signaling, pickup.answer_requested(event))
            state, wait = State.ANSWERING, self._settings.setup_timeout + pickup.ANSWER_TIMEOUT
        else:
            dial = DialRequested(
                call_id=event.call_id,
                destination=self._destination,
                offer_sdp=event.trunk_offer_sdp,
                media_id=event.media_id,
                signaling_id=self._settings.instance_id,
                headers=self._headers,
            )
            self._publish(subjects.sipagent_work(), dial)
            state, wait = State.WAITING_INVITE, self._settings.setup_timeout
        candidates, self._candidates = self._candidates, []
        for ice in candidates:
            self._forward_candidate(ice)
        self._set_state(state, now + wait)

    def _on_declined(self, event: CallDeclined, now: float) -> None:
        if self._state != State.WAITING_MEDIA or self._request is None:
            return
        log.info("call %s: media %s declined it (%s)", self._call_id, event.media_id, event.code)
        target = None
        if self._placement is not None:
            target = self._placement.declined(event.call_id, event.media_id, now)
        if target is None:
            self._fail_setup(
                errors.AT_CAPACITY, "every media worker is at capacity", errors.MEDIA_FAILED
            )
            return
        self._publish(target.subject, self._request)
        self._set_state(State.WAITING_MEDIA, now + self._settings.setup_timeout)

    def _on_media_failed(self, event: MediaFailed, now: float) -> None:
        if self._state == State.WAITING_MEDIA:
            self._fail_setup(event.code, event.reason, errors.MEDIA_FAILED)
        elif self._state != State.HANGING_UP:
            # A SIP agent may hold the call by now: it must CANCEL or BYE.
            self._send(messages.error(event.code, event.reason))
            self._hang_up(errors.MEDIA_FAILED, now, HANGUP_GRACE)

    def _on_invite_sent(self, event: InviteSent, now: float) -> None:
        if self._state == State.WAITING_INVITE:
            log.info("call %s: INVITE sent to %s", self._call_id, event.request_uri)
            self._set_state(State.INVITING, now + self._invite_safety())
        elif self._state == State.HANGING_UP:
            # Our HangupRequested may have gone out before this SIP agent took
            # the call and subscribed to it: say it again now that it listens.
            assert self._call_id is not None
            self._publish(
                subjects.call_events(self._call_id, "signaling"),
                HangupRequested(
                    call_id=self._call_id, cause=self._hangup_cause or errors.CANCELLED
                ),
            )

    def _on_progress(self, event: ProgressReceived, now: float) -> None:
        if self._state == State.WAITING_INVITE:
            # InviteSent comes first on the same subject; be lenient anyway.
            self._deadline = now + self._invite_safety()
        if self._state not in (State.WAITING_INVITE, State.INVITING, State.RINGING):
            return
        self._send(messages.ringing(early_media=bool(event.early_sdp)))
        if self._state != State.RINGING:
            self._set_state(State.RINGING, self._deadline)

    def _on_answered(self, event: CallAnswered, now: float) -> None:
        if self._state in (State.WAITING_INVITE, State.INVITING, State.RINGING, State.ANSWERING):
            self._answered = True
            if self._attempt is not None:
                self._attempt.answered_at = now
            self._controls = CallControls(event.call_id)
            self._send(messages.connected())
            self._set_state(State.CONNECTED, now + self._max_duration())

    def _on_in_call_event(self, event: SessionUpdated | HoldFailed | DtmfReceived) -> None:
        controls = self._controls
        if controls is None or self._state == State.HANGING_UP:
            return
        if isinstance(event, SessionUpdated):
            for message in controls.session_updated(event):
                self._send(message)
        elif isinstance(event, HoldFailed):
            self._send(controls.hold_failed(event))
        else:
            self._send(controls.dtmf_received(event))

    def _on_hangup_requested(self, event: HangupRequested, now: float) -> None:
        # Media gave up on the call; the SIP agent hears it too and will end
        # the call. Wait for its CallEnded, but not forever.
        if self._state != State.HANGING_UP:
            self._hangup_cause = event.cause
            self._set_state(State.HANGING_UP, now + HANGUP_GRACE)

    # --- timers ------------------------------------------------------------------

    def _timeout_admission(self, now: float) -> None:
        attempt = self._attempt
        assert attempt is not None
        self._call_id = None
        self._attempt = None
        self._arrival = None
        self._set_state(State.IDLE, None)
        self._refuse(attempt, errors.SETUP_FAILED, "the call could not be admitted", now)

    def _timeout_claim(self, now: float) -> None:
        log.warning("call %s: accepted, but no SIP agent handed it over", self._call_id)
        self._finish_call(None, _REASONS[errors.SETUP_FAILED], errors.SETUP_FAILED)

    def _timeout_duration(self, now: float) -> None:
        log.info("call %s: reached its time limit", self._call_id)
        self._hang_up(errors.MAX_DURATION, now, HANGUP_GRACE)

    def _timeout_media(self, now: float) -> None:
        self._fail_setup(
            errors.NO_MEDIA_WORKER, "no media worker took the call", errors.SETUP_FAILED
        )

    def _timeout_invite(self, now: float) -> None:
        self._fail_setup(errors.NO_SIP_AGENT, "no SIP agent took the call", errors.SETUP_FAILED)

    def _timeout_ringing(self, now: float) -> None:
        # The SIP agent's own INVITE_TIMEOUT should have ended the call.
        log.warning("call %s: no final answer reported in time", self._call_id)
        self._hang_up(errors.TIMEOUT, now, HANGUP_GRACE)

    def _timeout_hangup(self, now: float) -> None:
        # Nobody reported the end (e.g. no SIP agent held the call yet): say
        # it ourselves so the media worker lets go.
        assert self._call_id is not None
        cause = self._hangup_cause or errors.INTERNAL
        reason = _REASONS.get(cause, "Call ended")
        self._publish(
            subjects.call_events(self._call_id, "signaling"),
            CallEnded(call_id=self._call_id, cause=cause, reason=reason),
        )
        self._finish_call(None, reason, cause)

    _timer_handlers: ClassVar[dict[State, Callable[[BrowserSession, float], None]]] = {
        State.ADMITTING: _timeout_admission,
        State.ACCEPTING: _timeout_claim,
        State.CONNECTED: _timeout_duration,
        State.WAITING_MEDIA: _timeout_media,
        State.WAITING_INVITE: _timeout_invite,
        State.INVITING: _timeout_ringing,
        State.RINGING: _timeout_ringing,
        State.ANSWERING: _timeout_ringing,
        State.HANGING_UP: _timeout_hangup,
    }

    # --- helpers ------------------------------------------------------------------

    def _max_duration(self) -> float:
        limit = self._settings.access.max_call_duration
        claims = self._caller.claims
        if claims is not None and claims.max_duration is not None:
            limit = min(limit, claims.max_duration)
        return limit

    def _refuse(self, attempt: Attempt, code: str, text: str, now: float) -> None:
        """An offer refused before any work: ``error`` to the page, one audit line."""
        log.info("call %s: refused (%s)", attempt.call_id, code)
        self._send(messages.error(code, text))
        self._actions.append(attempt.audit(audit.REFUSED, code, now))

    def _drop_attempt(self, cause: str, now: float) -> None:
        """The socket or the page gave up while the limits were asked: nothing was published."""
        attempt = self._attempt
        assert attempt is not None
        self._actions.append(attempt.audit(audit.FAILED, cause, now))
        if self._arrival is not None and self._desk is not None:
            self._desk.withdraw(self._socket_id, attempt.call_id, now)
        self._call_id = None
        self._attempt = None
        self._arrival = None
        self._candidates = []
        self._set_state(State.IDLE, None)

    def _refuse_flood(self, gate: Gate, now: float) -> None:
        if gate is Gate.REFUSE:
            self._send(messages.error(errors.RATE_LIMITED, "too many messages: slow down"))
        elif gate is Gate.CLOSE:
            log.info("browser: closing a socket that keeps flooding")
            self._actions.append(Close(4429, "too many messages"))
            self.socket_closed(now)

    def _invite_safety(self) -> float:
        return self._settings.invite_timeout + self._settings.setup_timeout

    def _hang_up(self, cause: str, now: float, grace: float) -> None:
        assert self._call_id is not None
        self._hangup_cause = cause
        self._publish(
            subjects.call_events(self._call_id, "signaling"),
            HangupRequested(call_id=self._call_id, cause=cause),
        )
        self._set_state(State.HANGING_UP, now + grace)

    def _fail_setup(self, code: str, message: str, cause: str) -> None:
        """Set-up failed before any SIP agent held the call: end it ourselves. A call
        from the trunk is held by its SIP agent from the start: it is hung up."""
        assert self._call_id is not None
        log.warning("call %s: set-up failed: %s (%s)", self._call_id, message, code)
        self._send(messages.error(code, message))
        if self._arrival is not None:
            self._hang_up(cause, self._clock, HANGUP_GRACE)
            return
        self._publish(
            subjects.call_events(self._call_id, "signaling"),
            CallEnded(call_id=self._call_id, cause=cause, reason=message),
        )
        self._finish_call(None, message, cause)

    def _finish_call(
        self, status: int | None, reason: str, cause: str, *, tell: bool = True
    ) -> None:
        """The call is over: release, audit, ``ended`` (unless ``tell`` is False), ``IDLE``."""
        assert self._call_id is not None
        if self._state == State.ACCEPTING and self._desk is not None:
            self._desk.withdraw(self._socket_id, self._call_id, self._clock)
        log.info(
            "call %s: ended: cause=%s status=%s reason=%r", self._call_id, cause, status, reason
        )
        attempt, self._attempt = self._attempt, None
        if attempt is not None:
            # The place is free before the page hears ``ended``: a next call it
            # places at once must not find it still taken.
            release = attempt.release()
            if release is not None:
                self._actions.append(release)
            outcome = audit.ANSWERED if self._answered else audit.FAILED
            self._actions.append(attempt.audit(outcome, cause, self._clock, status))
        if tell:
            self._send(self._ended(status, reason, cause))
        self._actions.append(Unsubscribe(subjects.call_events(self._call_id, "media")))
        self._actions.append(Unsubscribe(subjects.call_events(self._call_id, "sipagent")))
        if self._placement is not None:
            self._placement.finished(self._call_id)
        self._request = None
        self._set_state(State.IDLE, None)
        self._call_id = None
        self._arrival = None
        self._candidates = []
        self._controls = None
        if not self._socket_open:
            self._set_state(State.CLOSED, None)
        elif self._closing:
            self._close_socket()

    def _close_socket(self) -> None:
        self._actions.append(Close(1001, "server shutting down"))
        self._socket_open = False
        if self._desk is not None:
            self._desk.socket_closed(self._socket_id, self._clock)
        self._set_state(State.CLOSED, None)

    def _ended(self, status: int | None, reason: str, cause: str) -> messages.Outgoing:
        """``ended`` for the current call; one from the trunk names its id."""
        call_id = self._call_id if self._arrival is not None else None
        return messages.ended(status, reason, cause, call_id)

    def _send(self, message: messages.Outgoing) -> None:
        if self._socket_open:
            self._actions.append(SendMessage(message))

    def _publish(self, subject: str, event: AnyEvent) -> None:
        self._actions.append(Publish(subject, event))

    def _set_state(self, state: State, deadline: float | None = None) -> None:
        """Enter ``state``; every state's timer is set here, None for no timer."""
        self._deadline = deadline
        if state != self._state:
            who = f"call {self._call_id}" if self._call_id else "browser"
            log.info("%s: %s -> %s", who, self._state.name, state.name)
            self._state = state
