"""One browser's WebSocket session, sans I/O: messages in, routed to its call.

``BrowserSession`` is fed what happened (a text frame, a bus event, a timer,
the socket closing) with the current time, and says what to do as action
records pulled with ``pop_actions()``. The adapter in ``app.py`` moves bytes
and re-arms one timer from ``get_timer()``; nothing here touches a socket.

A session holds at most one call at a time (``call.py``): its own offer
(``outbound_setup.py``), or a call from the trunk it accepted
(``inbound_setup.py``; ``listen`` and the rings themselves are the ``Desk``'s,
``switchboard.py``). Between calls the session is ``IDLE``; once the socket
is gone and no call is left, ``CLOSED``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from proto import errors
from proto.events import AnyEvent
from services.common.fleet.placement import Placement
from services.common.settings import Settings
from services.signaling import admission, messages, pickup
from services.signaling.actions import Action, Close
from services.signaling.admission import TOKEN_EXPIRED
from services.signaling.attempt import Attempt
from services.signaling.call import REASONS, Call, Setup
from services.signaling.caller import Caller, Gate, MessageGate
from services.signaling.in_call import not_connected
from services.signaling.inbound_setup import InboundSetup
from services.signaling.media_request import MediaRequest
from services.signaling.messages import (
    Accept,
    BrowserMessage,
    Hangup,
    Ice,
    Listen,
    MessageError,
    Offer,
    Reject,
    Unlisten,
)
from services.signaling.outbound_setup import OutboundSetup, judge_offer
from services.signaling.outbox import Outbox
from services.signaling.pickup import Desk
from services.signaling.states import END_STATES, IN_CALL, State
from services.signaling.timers import HANGUP_GRACE, SHUTDOWN_GRACE, Waits

log = logging.getLogger(__name__)

__all__ = ["HANGUP_GRACE", "SHUTDOWN_GRACE", "BrowserSession", "new_call_id"]
"``HANGUP_GRACE`` and ``SHUTDOWN_GRACE`` are ``timers.py``'s, named here for the adapter."


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
        self._waits = Waits(settings, self._caller)
        self._clock = 0.0
        "The time of the latest input (for the audit line's duration)."
        self._make_call_id = make_call_id
        self._placement = placement
        self._outbox = Outbox()
        self._state = State.IDLE
        "``IDLE`` or ``CLOSED``: the session's own state, between calls."
        self._call: Call | None = None
        self._closing = False
        self._destination = ""
        self._desk = desk
        self._socket_id = socket_id or uuid.uuid4().hex
        self._user: str | None = None
        "Who the socket last listened as."

    # --- what the adapter reads ------------------------------------------------

    @property
    def state(self) -> State:
        return self._call.state if self._call is not None else self._state

    @property
    def call_id(self) -> str | None:
        """The id of the current call, or None between calls."""
        return self._call.call_id if self._call is not None else None

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
        return self._call.attempt if self._call is not None else None

    def deliver(self, message: messages.Outgoing) -> None:
        """Send a message of the desk's rings (``incoming``, a ring's ``ended``)."""
        self._outbox.send(message)

    def get_timer(self) -> float | None:
        """When ``handle_timer()`` should next be called, or None."""
        return self._call.deadline if self._call is not None else None

    def pop_actions(self) -> list[Action]:
        """What to do, in order; each action is returned once."""
        return self._outbox.pop()

    # --- inputs ------------------------------------------------------------------

    def receive_text(self, text: str, now: float) -> None:
        """A text frame arrived from the browser."""
        if not self._outbox.socket_open:
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
            log.info("browser message refused (call %s): %s", self.call_id, exc.code)
            self._outbox.send(messages.error(exc.code, exc.message))
        self._settle()

    def receive_binary(self, now: float) -> None:
        """A binary frame arrived: the protocol is JSON text only."""
        if not self._outbox.socket_open:
            return
        gate = self._gate.check(now)
        if gate is not Gate.PASS:
            self._refuse_flood(gate, now)
            return
        text = "binary frames are not supported"
        self._outbox.send(messages.error(messages.BAD_MESSAGE, text))

    def _is_hangup(self, text: str) -> bool:
        if self._call is None or "hangup" not in text[:64]:
            return False
        try:
            return isinstance(messages.parse_message(text), Hangup)
        except MessageError:
            return False

    def handle_event(self, event: AnyEvent, now: float) -> None:
        """An event arrived on one of the current call's subjects."""
        self._clock = now
        call = self._call
        if call is None or event.call_id != call.call_id or call.state not in IN_CALL:
            # In flight when the call ended, or meant for an older call.
            log.debug("ignored %s for call %s", type(event).__name__, event.call_id)
            return
        call.handle_event(event, now)
        self._settle()

    def handle_timer(self, now: float) -> None:
        """Time passed; act if the current call's timer expired."""
        call = self._call
        if call is None or call.deadline is None or now < call.deadline:
            return
        self._clock = now
        call.handle_timer(now)
        self._settle()

    def admitted(self, call_id: str, refusal: str | None, now: float) -> bool:
        """The limits' answer to an ``Admit``: None to go on, else the refusal's code.

        False when the attempt is gone (the socket closed meanwhile): the
        adapter then releases the place it was given.
        """
        self._clock = now
        call = self._call
        if call is None or call.state != State.ADMITTING or call_id != call.call_id:
            return False
        going_on = call.admitted(refusal, now)
        self._settle()
        return going_on

    def socket_closed(self, now: float) -> None:
        """The browser's WebSocket closed; hang up whatever call is left."""
        if not self._outbox.socket_open:
            return
        self._clock = now
        self._outbox.socket_gone()
        if self._desk is not None:
            self._desk.socket_closed(self._socket_id, now)
        call = self._call
        if call is not None:
            if call.state == State.ADMITTING:
                call.drop(errors.BROWSER_GONE, now)
            elif call.state == State.ACCEPTING:
                call.finish(None, "", errors.BROWSER_GONE, now)
            elif call.state != State.HANGING_UP:
                call.hang_up(errors.BROWSER_GONE, now, HANGUP_GRACE)
            # A call already hanging up finishes on its own timer; only the
            # ``ended`` message is dropped since nobody is there to read it.
        self._settle()

    def end_by_operator(self, now: float) -> bool:
        """An operator ends the current call (``bridge calls hangup``): as if the browser
        hung up, with cause ``operator``. False when the session holds no call."""
        call = self._call
        if call is None or call.state not in (State.ADMITTING, *IN_CALL):
            return False
        self._clock = now
        call.end_by_operator(now)
        self._settle()
        return True

    def shutdown(self, now: float) -> None:
        """The service is stopping: end the call quickly, then close the socket."""
        if self.state in END_STATES:
            return
        self._closing = True
        call = self._call
        if call is None:
            self._close_socket()
        elif call.state == State.ADMITTING:
            call.drop(errors.SETUP_FAILED, now)
        elif call.state == State.ACCEPTING:
            reason = REASONS[errors.SETUP_FAILED]
            call.finish(None, reason, errors.SETUP_FAILED, self._clock)
        elif call.state == State.HANGING_UP:
            call.hurry(now + SHUTDOWN_GRACE)
        else:
            cause = errors.NORMAL if call.answered else errors.CANCELLED
            call.hang_up(cause, now, SHUTDOWN_GRACE)
        self._settle()

    # --- browser messages ----------------------------------------------------------

    def _handle_message(self, message: BrowserMessage, now: float) -> None:
        call = self._call
        if isinstance(message, Offer):
            self._handle_offer(message, now)
        elif isinstance(message, Hangup):
            if call is None:
                raise MessageError(messages.NO_CALL, "there is no call to hang up")
            call.hangup(now)
        elif isinstance(message, Ice):
            if call is not None:
                call.ice(message)
            # Before an offer a candidate has nowhere to go.
        elif isinstance(message, Listen | Unlisten):
            self._handle_listen(message, now)
        elif isinstance(message, Accept):
            self._handle_accept(message, now)
        elif isinstance(message, Reject):
            self._handle_reject(message, now)
        elif call is None:
            raise not_connected(message)
        else:
            call.control(message)

    def _handle_offer(self, offer: Offer, now: float) -> None:
        if self._call is not None:
            raise MessageError(messages.CALL_IN_PROGRESS, "a call is already in progress")
        if self._closing:
            raise MessageError(errors.SETUP_FAILED, "the bridge is shutting down")
        caller = self._caller
        attempt = Attempt(self._make_call_id(), caller, offer.destination)
        refusal = judge_offer(self._settings, attempt, offer, now)
        if refusal is not None:
            admission.refuse(self._outbox, attempt, refusal, now)
            return
        assert attempt.target is not None
        log.info(
            "call %s: offer to %s from %s",
            attempt.call_id,
            attempt.target.number,
            caller.identity or "-",
        )
        self._begin(attempt, OutboundSetup(self._settings, attempt.target), offer.sdp, now)

    def _handle_listen(self, message: Listen | Unlisten, now: float) -> None:
        desk = self._inbound_desk()
        if isinstance(message, Unlisten):
            desk.unlisten(self._socket_id, now)
            self._outbox.send(messages.listening(None))
            return
        user = pickup.listening_user(message, self._caller)
        self._user = user
        desk.listen(self._socket_id, user, now)
        log.info("browser: listening as %s", user)
        self._outbox.send(messages.listening(user))

    def _handle_accept(self, accept: Accept, now: float) -> None:
        desk = self._inbound_desk()
        if self._call is not None:
            raise MessageError(messages.CALL_IN_PROGRESS, "a call is already in progress")
        arrival = desk.ringing(self._socket_id, accept.call_id)
        if arrival is None:
            raise MessageError(messages.NO_CALL, "no call with that 'call_id' rings here")
        if self._closing:
            raise MessageError(errors.SETUP_FAILED, "the bridge is shutting down")
        user = self._user or ""
        attempt = pickup.attempt(arrival, self._caller, user)
        if self._caller.token_expired(now):
            admission.refuse(self._outbox, attempt, TOKEN_EXPIRED, now)
            return
        log.info("call %s: accepted by %s", arrival.call_id, attempt.user or "-")
        setup = InboundSetup(self._settings, desk, self._socket_id, arrival, user)
        self._begin(attempt, setup, accept.sdp, now)

    def _handle_reject(self, reject: Reject, now: float) -> None:
        call = self._call
        if call is not None and call.inbound and reject.call_id == call.call_id:
            call.hangup(now)  # the call it accepted: as a hang-up
        elif not self._inbound_desk().reject(self._socket_id, reject.call_id, now):
            raise MessageError(messages.NO_CALL, "no call with that 'call_id' rings here")

    def _inbound_desk(self) -> Desk:
        if self._desk is None:
            raise MessageError(messages.UNKNOWN_TYPE, "calls from the trunk are not served here")
        return self._desk

    def _begin(self, attempt: Attempt, setup: Setup, sdp: str, now: float) -> None:
        """A call attempt (an offer, or an accept) asks the limits for a place."""
        self._destination = setup.destination
        call = Call(
            attempt,
            setup,
            sdp,
            outbox=self._outbox,
            media=MediaRequest(self._placement),
            waits=self._waits,
        )
        self._call = call
        call.begin(now)

    # --- the socket ------------------------------------------------------------------

    def _settle(self) -> None:
        """Let go of a call that is over; close what the socket's end or a shutdown asks."""
        call = self._call
        if call is not None and not call.over:
            return
        self._call = None
        if self._state != State.IDLE:
            return
        if not self._outbox.socket_open:
            self._set_state(State.CLOSED)
        elif self._closing and call is not None:
            self._close_socket()

    def _refuse_flood(self, gate: Gate, now: float) -> None:
        if gate is Gate.REFUSE:
            text = "too many messages: slow down"
            self._outbox.send(messages.error(errors.RATE_LIMITED, text))
        elif gate is Gate.CLOSE:
            log.info("browser: closing a socket that keeps flooding")
            self._outbox.add(Close(4429, "too many messages"))
            self.socket_closed(now)

    def _close_socket(self) -> None:
        self._outbox.close(1001, "server shutting down")
        if self._desk is not None:
            self._desk.socket_closed(self._socket_id, self._clock)
        self._set_state(State.CLOSED)

    def _set_state(self, state: State) -> None:
        if state != self._state:
            log.info("browser: %s -> %s", self._state.name, state.name)
            self._state = state
