"""One call of a browser socket, from its admission to its end: sans I/O.

``Call`` is the state machine of ``states.py`` for one call: it asks the
limits for a place, then media for the call (``MediaRequest``), then either
dials out (``OutboundSetup``) or has the SIP agent answer the trunk
(``InboundSetup``); once connected ``InCall`` carries the controls. Each
waiting state has one timer (``timers.py``). Whatever happens it ends with an
``ended`` message to the browser, its place and subscriptions given back, an
audit line, and ``IDLE``: the session (``session.py``) then lets go of it.
"""

from __future__ import annotations

import logging

from proto import errors, subjects
from proto.events import (
    AnyEvent,
    CallAnswered,
    CallClaimed,
    CallDeclined,
    CallEnded,
    CallRequested,
    CallStatsReported,
    DtmfReceived,
    HangupRequested,
    HoldFailed,
    IceCandidateReceived,
    InviteSent,
    MediaFailed,
    MediaPrepared,
    ProgressReceived,
    SessionUpdated,
)
from services.signaling import admission, audit, messages
from services.signaling.actions import Subscribe, Unsubscribe
from services.signaling.admission import NOT_ADMITTED
from services.signaling.attempt import Attempt
from services.signaling.in_call import InCall, not_connected
from services.signaling.inbound_setup import InboundSetup
from services.signaling.media_request import MediaRequest
from services.signaling.messages import Dtmf, Hold, Ice
from services.signaling.outbound_setup import OutboundSetup
from services.signaling.outbox import Outbox
from services.signaling.states import IN_CALL, State
from services.signaling.timers import EXPIRY, HANGUP_GRACE, Expiry, Waits

log = logging.getLogger(__name__)

MAX_BUFFERED_CANDIDATES = 64
"ICE candidates kept until a media worker has taken the call."

REASONS = {
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
"Reasons shown to people when the bridge itself ends a call."

Setup = OutboundSetup | InboundSetup


class Call:
    """One call attempt of a browser and, once admitted, its call."""

    def __init__(
        self,
        attempt: Attempt,
        setup: Setup,
        offer_sdp: str,
        *,
        outbox: Outbox,
        media: MediaRequest,
        waits: Waits,
    ) -> None:
        self.call_id = attempt.call_id
        self._attempt: Attempt | None = attempt
        self._setup = setup
        self._offer_sdp = offer_sdp
        "The browser's offer, until media has been asked for the call."
        self._outbox = outbox
        self._media = media
        self._waits = waits
        self._state = State.IDLE
        self._deadline: float | None = None
        self._answered = False
        self._hangup_cause = ""
        self._candidates: list[Ice] = []
        self._in_call: InCall | None = None
        "Hold and DTMF, once the call is connected."

    # --- what the session reads ---------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def over(self) -> bool:
        """The call ended (or was never admitted): the session lets go of it."""
        return self._state == State.IDLE

    @property
    def deadline(self) -> float | None:
        """When ``handle_timer()`` should next be called, or None."""
        return self._deadline

    @property
    def attempt(self) -> Attempt | None:
        """The attempt as the audit and the registry see it; None once over."""
        return self._attempt

    @property
    def answered(self) -> bool:
        return self._answered

    @property
    def inbound(self) -> bool:
        """A call from the trunk the browser accepted."""
        return self._setup.inbound

    # --- admission ------------------------------------------------------------------

    def begin(self, now: float) -> None:
        """Ask the limits for a place."""
        log.debug("call %s: browser offer\n%s", self.call_id, self._offer_sdp)
        assert self._attempt is not None
        self._outbox.add(admission.admit(self._attempt))
        self._set_state(State.ADMITTING, now + self._waits.setup)

    def admitted(self, refusal: str | None, now: float) -> bool:
        """The limits' answer (None: admitted). False when refused: the call is over."""
        attempt = self._attempt
        assert attempt is not None
        if refusal is not None:
            self._attempt = None
            self._set_state(State.IDLE, None)
            admission.refuse(self._outbox, attempt, admission.limit_refusal(refusal), now)
            return False
        attempt.admitted = True
        setup = self._setup
        if isinstance(setup, InboundSetup):
            self._accept(setup, now)
        else:
            self._start_media(setup.call_requested(self.call_id, self._offer_sdp), now)
        return True

    def drop(self, cause: str, now: float) -> None:
        """Given up while the limits were asked: nothing was published."""
        attempt = self._attempt
        assert attempt is not None
        self._outbox.add(attempt.audit(audit.FAILED, cause, now))
        if isinstance(self._setup, InboundSetup):
            self._setup.withdraw(now)
        self._attempt = None
        self._candidates = []
        self._set_state(State.IDLE, None)

    # --- set-up ---------------------------------------------------------------------

    def _accept(self, setup: InboundSetup, now: float) -> None:
        """Admitted: ask the SIP agent for the call, unless another browser here was first.

        The subscription is made before ``AcceptRequested`` goes out, so the
        claim and what follows it reach us; a ``CallEnded`` published before it
        (the trunk's CANCEL) reaches us through the ring, which hands on what
        it hears until the claim (``ringing.Forward``).
        """
        event = setup.accept(now)
        if event is None:
            self.finish(None, "", errors.ANSWERED_ELSEWHERE, now, tell=False)
            return
        self._outbox.add(Subscribe(subjects.call_events(self.call_id, "sipagent")))
        self._outbox.publish(subjects.call_events(self.call_id, "signaling"), event)
        self._set_state(State.ACCEPTING, now + self._waits.claim)

    def _on_claimed(self, event: CallClaimed, now: float) -> None:
        setup = self._setup
        if self._state != State.ACCEPTING or not isinstance(setup, InboundSetup):
            return
        request = setup.claimed(event, self._offer_sdp, now)
        if request is None:
            self.finish(None, "Answered elsewhere", errors.ANSWERED_ELSEWHERE, now)
            return
        self._start_media(request, now)

    def _start_media(self, request: CallRequested, now: float) -> None:
        """Ask a media worker for the call (an accepted one listens to its SIP agent already)."""
        self._outbox.add(Subscribe(subjects.call_events(self.call_id, "media")))
        if not self.inbound:
            self._outbox.add(Subscribe(subjects.call_events(self.call_id, "sipagent")))
        self._offer_sdp = ""
        self._outbox.publish(self._media.start(request, now), request)
        self._set_state(State.WAITING_MEDIA, now + self._waits.setup)

    def _on_media_prepared(self, event: MediaPrepared, now: float) -> None:
        if self._state != State.WAITING_MEDIA:
            return
        log.debug("call %s: browser answer\n%s", self.call_id, event.answer_sdp)
        self._media.taken(event.call_id)
        self._outbox.send(messages.answer(event.answer_sdp))
        setup = self._setup
        if isinstance(setup, InboundSetup):
            # The SIP agent answers the trunk with media's SDP; CallAnswered once ACKed.
            signaling = subjects.call_events(event.call_id, "signaling")
            self._outbox.publish(signaling, setup.answer_requested(event))
            state, wait = State.ANSWERING, self._waits.answer
        else:
            self._outbox.publish(subjects.sipagent_work(), setup.dial_requested(event))
            state, wait = State.WAITING_INVITE, self._waits.setup
        candidates, self._candidates = self._candidates, []
        for ice in candidates:
            self._forward_candidate(ice)
        self._set_state(state, now + wait)

    def _on_declined(self, event: CallDeclined, now: float) -> None:
        request = self._media.pending
        if self._state != State.WAITING_MEDIA or request is None:
            return
        log.info("call %s: media %s declined it (%s)", self.call_id, event.media_id, event.code)
        subject = self._media.declined(event, now)
        if subject is None:
            text = "every media worker is at capacity"
            self._fail_setup(errors.AT_CAPACITY, text, errors.MEDIA_FAILED, now)
            return
        self._outbox.publish(subject, request)
        self._set_state(State.WAITING_MEDIA, now + self._waits.setup)

    def _on_media_failed(self, event: MediaFailed, now: float) -> None:
        if self._state == State.WAITING_MEDIA:
            self._fail_setup(event.code, event.reason, errors.MEDIA_FAILED, now)
        elif self._state != State.HANGING_UP:
            # A SIP agent may hold the call by now: it must CANCEL or BYE.
            self._outbox.send(messages.error(event.code, event.reason))
            self.hang_up(errors.MEDIA_FAILED, now, HANGUP_GRACE)

    def _on_invite_sent(self, event: InviteSent, now: float) -> None:
        if self._state == State.WAITING_INVITE:
            log.info("call %s: INVITE sent to %s", self.call_id, event.request_uri)
            self._set_state(State.INVITING, now + self._waits.invite)
        elif self._state == State.HANGING_UP:
            # Our HangupRequested may have gone out before this SIP agent took
            # the call and subscribed to it: say it again now that it listens.
            self._outbox.publish(
                subjects.call_events(self.call_id, "signaling"),
                HangupRequested(call_id=self.call_id, cause=self._hangup_cause or errors.CANCELLED),
            )

    def _on_progress(self, event: ProgressReceived, now: float) -> None:
        if self._state == State.WAITING_INVITE:
            # InviteSent comes first on the same subject; be lenient anyway.
            self._deadline = now + self._waits.invite
        if self._state not in (State.WAITING_INVITE, State.INVITING, State.RINGING):
            return
        self._outbox.send(messages.ringing(early_media=bool(event.early_sdp)))
        if self._state != State.RINGING:
            self._set_state(State.RINGING, self._deadline)

    def _on_answered(self, event: CallAnswered, now: float) -> None:
        if self._state in (State.WAITING_INVITE, State.INVITING, State.RINGING, State.ANSWERING):
            self._answered = True
            if self._attempt is not None:
                self._attempt.answered_at = now
            self._in_call = InCall(event.call_id, self._outbox)
            self._outbox.send(messages.connected())
            self._set_state(State.CONNECTED, now + self._waits.duration)

    # --- the browser ------------------------------------------------------------------

    def ice(self, ice: Ice) -> None:
        """A candidate of the browser: kept until a media worker took the call, then sent on."""
        if self._state in (State.ADMITTING, State.ACCEPTING, State.WAITING_MEDIA):
            # No media worker has subscribed yet: keep it until one has.
            if len(self._candidates) < MAX_BUFFERED_CANDIDATES:
                self._candidates.append(ice)
        elif self._state in IN_CALL and self._state != State.HANGING_UP:
            self._forward_candidate(ice)
        # While hanging up a candidate has nowhere to go.

    def _forward_candidate(self, ice: Ice) -> None:
        self._outbox.publish(
            subjects.call_events(self.call_id, "signaling"),
            IceCandidateReceived(
                call_id=self.call_id,
                candidate=ice.candidate,
                sdp_mid=ice.sdp_mid,
                sdp_mline_index=ice.sdp_mline_index,
            ),
        )

    def control(self, message: Hold | Dtmf) -> None:
        """``hold`` or ``dtmf``: ``MessageError`` unless the call is connected."""
        if self._in_call is None or self._state != State.CONNECTED:
            raise not_connected(message)
        self._in_call.request(message)

    def hangup(self, now: float) -> None:
        """The browser hangs up (or rejects the call it accepted)."""
        if self._state == State.ADMITTING:
            ended = self.ended(None, REASONS[errors.CANCELLED], errors.CANCELLED)
            self.drop(errors.CANCELLED, now)
            self._outbox.send(ended)
        elif self._state == State.ACCEPTING:
            self.finish(None, REASONS[errors.CANCELLED], errors.CANCELLED, now)
        elif self._state != State.HANGING_UP:  # else already on its way down
            self.hang_up(errors.NORMAL if self._answered else errors.CANCELLED, now, HANGUP_GRACE)

    def end_by_operator(self, now: float) -> None:
        """``bridge calls hangup``: as if the browser hung up, with cause ``operator``."""
        log.info("call %s: ended by an operator", self.call_id)
        if self._state == State.ADMITTING:
            ended = self.ended(None, "Ended by an operator", errors.OPERATOR)
            self.drop(errors.OPERATOR, now)
            self._outbox.send(ended)
        elif self._state == State.ACCEPTING:
            self.finish(None, "Ended by an operator", errors.OPERATOR, now)
        elif self._state != State.HANGING_UP:
            self.hang_up(errors.OPERATOR, now, HANGUP_GRACE)

    # --- bus events ---------------------------------------------------------------------

    def handle_event(self, event: AnyEvent, now: float) -> None:
        """An event of this call, which holds a call (``IN_CALL``)."""
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
                # Media gave up on the call; the SIP agent hears it too and will
                # end the call. Wait for its CallEnded, but not forever.
                if self._state != State.HANGING_UP:
                    self._hangup_cause = event.cause
                    self._set_state(State.HANGING_UP, now + HANGUP_GRACE)
            case SessionUpdated() | HoldFailed() | DtmfReceived():
                if self._in_call is not None and self._state != State.HANGING_UP:
                    self._in_call.news(event)
            case CallStatsReported():
                if self._in_call is not None and self._state == State.CONNECTED:
                    self._in_call.stats(event)
            case CallEnded():
                if event.code:
                    # The SIP agent refused the call (e.g. unknown_destination).
                    self._outbox.send(messages.error(event.code, event.reason))
                self.finish(event.status, event.reason, event.cause, now)
            case _:
                # MediaConnected and work-queue events change nothing here.
                log.debug("call %s: ignored %s", self.call_id, type(event).__name__)

    # --- timers -------------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        """Act if the current state's timer expired."""
        if self._deadline is None or now < self._deadline:
            return
        self._deadline = None
        match EXPIRY.get(self._state):
            case Expiry.NOT_ADMITTED:
                attempt = self._attempt
                assert attempt is not None
                self._attempt = None
                self._set_state(State.IDLE, None)
                admission.refuse(self._outbox, attempt, NOT_ADMITTED, now)
            case Expiry.NOT_CLAIMED:
                log.warning("call %s: accepted, but no SIP agent handed it over", self.call_id)
                self.finish(None, REASONS[errors.SETUP_FAILED], errors.SETUP_FAILED, now)
            case Expiry.NO_MEDIA_WORKER:
                text = "no media worker took the call"
                self._fail_setup(errors.NO_MEDIA_WORKER, text, errors.SETUP_FAILED, now)
            case Expiry.NO_SIP_AGENT:
                text = "no SIP agent took the call"
                self._fail_setup(errors.NO_SIP_AGENT, text, errors.SETUP_FAILED, now)
            case Expiry.NO_FINAL_ANSWER:
                # The SIP agent's own INVITE_TIMEOUT should have ended the call.
                log.warning("call %s: no final answer reported in time", self.call_id)
                self.hang_up(errors.TIMEOUT, now, HANGUP_GRACE)
            case Expiry.TIME_LIMIT:
                log.info("call %s: reached its time limit", self.call_id)
                self.hang_up(errors.MAX_DURATION, now, HANGUP_GRACE)
            case Expiry.END_UNREPORTED:
                # Nobody reported the end (e.g. no SIP agent held the call yet):
                # say it ourselves so the media worker lets go.
                cause = self._hangup_cause or errors.INTERNAL
                reason = REASONS.get(cause, "Call ended")
                self._outbox.publish(
                    subjects.call_events(self.call_id, "signaling"),
                    CallEnded(call_id=self.call_id, cause=cause, reason=reason),
                )
                self.finish(None, reason, cause, now)
            case None:
                pass

    def hurry(self, deadline: float) -> None:
        """End the current wait by ``deadline`` at the latest (the service is stopping)."""
        if self._deadline is None or self._deadline > deadline:
            self._deadline = deadline

    # --- the end ------------------------------------------------------------------------

    def hang_up(self, cause: str, now: float, grace: float) -> None:
        """Ask the call's agents to end it, and wait ``grace`` for its ``CallEnded``."""
        self._hangup_cause = cause
        self._outbox.publish(
            subjects.call_events(self.call_id, "signaling"),
            HangupRequested(call_id=self.call_id, cause=cause),
        )
        self._set_state(State.HANGING_UP, now + grace)

    def _fail_setup(self, code: str, message: str, cause: str, now: float) -> None:
        """Set-up failed before any SIP agent held the call: end it ourselves. A call
        from the trunk is held by its SIP agent from the start: it is hung up."""
        log.warning("call %s: set-up failed: %s (%s)", self.call_id, message, code)
        self._outbox.send(messages.error(code, message))
        if self.inbound:
            self.hang_up(cause, now, HANGUP_GRACE)
            return
        self._outbox.publish(
            subjects.call_events(self.call_id, "signaling"),
            CallEnded(call_id=self.call_id, cause=cause, reason=message),
        )
        self.finish(None, message, cause, now)

    def finish(
        self, status: int | None, reason: str, cause: str, now: float, *, tell: bool = True
    ) -> None:
        """The call is over: release, audit, ``ended`` (unless ``tell`` is False), ``IDLE``."""
        if self._state == State.ACCEPTING and isinstance(self._setup, InboundSetup):
            self._setup.withdraw(now)
        log.info(
            "call %s: ended: cause=%s status=%s reason=%r", self.call_id, cause, status, reason
        )
        attempt, self._attempt = self._attempt, None
        if attempt is not None:
            # The place is free before the page hears ``ended``: a next call it
            # places at once must not find it still taken.
            release = attempt.release()
            if release is not None:
                self._outbox.add(release)
            outcome = audit.ANSWERED if self._answered else audit.FAILED
            self._outbox.add(attempt.audit(outcome, cause, now, status))
        if tell:
            self._outbox.send(self.ended(status, reason, cause))
        self._outbox.add(Unsubscribe(subjects.call_events(self.call_id, "media")))
        self._outbox.add(Unsubscribe(subjects.call_events(self.call_id, "sipagent")))
        self._media.finished(self.call_id)
        self._set_state(State.IDLE, None)
        self._candidates = []
        self._in_call = None

    def ended(self, status: int | None, reason: str, cause: str) -> messages.Outgoing:
        """``ended`` for this call; one from the trunk names its id."""
        return messages.ended(status, reason, cause, self.call_id if self.inbound else None)

    def _set_state(self, state: State, deadline: float | None = None) -> None:
        """Enter ``state``; every state's timer is set here, None for no timer."""
        self._deadline = deadline
        if state != self._state:
            log.info("call %s: %s -> %s", self.call_id, self._state.name, state.name)
            self._state = state
