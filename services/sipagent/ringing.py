"""One inbound call while it rings: who listens, who declines, who wins. Sans I/O.

``Ringing`` is fed the time and what happens (the signaling instances'
``RingingStarted``, ``RingingStopped``, ``AcceptRequested``, the winner's
``AnswerRequested`` or hang-up, the SIP call's end) and says what to do:
``Ring`` the trunk (180, once), ``Reject`` it with a final status, ``Answer``
it with media's SDP, ``Publish`` an event on the call's ``sipagent`` subject.
The decisions, in order of the call:

- nobody rings within ``LISTEN_WAIT`` of the arrival → 480, ``not_listening``;
- the first ``RingingStarted`` → 180;
- every instance that rang stopped → 486 (or the entry's 603) if someone
  declined, else 480 (``rejected`` / ``no_answer``); not before
  ``LISTEN_WAIT``, so a slower instance still gets to ring;
- the first ``AcceptRequested`` → ``CallClaimed`` for that instance; later
  ones (and instances that ring late, also after the answer) hear
  ``CallClaimed`` again, so their browsers stop ringing;
- no ``AnswerRequested`` within ``answer_wait`` of the claim → 480,
  ``setup_failed`` (``answer_wait_for``: signaling's media set-up with its
  retries); an ``AnswerRequested`` without SDP, the winner's hang-up or
  media's failure first → 480 too;
- ``ring_timeout`` without a claim → 480, ``no_answer``;
- an operator's hang-up (``bridge calls hangup``, cause ``operator``) → 480;
- the trunk's CANCEL (the call's ``Ended``) → ``cancelled``.

Every state before the answer has its deadline: ``WAITING``/``RINGING`` the
listen wait and ``ring_timeout``, ``CLAIMED`` ``answer_wait``. Once it has
said ``Answer`` the call is handed over (``answering``): from the 200 on it
runs as an outbound call does; ``late_claim`` answers the late rings then.
Before the claim, other hang-ups on the bus are ignored: the instances that
rang speak with ``RingingStopped``, and only the winner may end a call it set up.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from enum import Enum

from proto import errors, subjects
from proto.events import (
    AcceptRequested,
    AnswerRequested,
    CallClaimed,
    CallEnded,
    HangupRequested,
    MediaFailed,
    RingingStarted,
    RingingStopped,
)
from services.sipagent.events import CallEvent, Ended

log = logging.getLogger(__name__)

LISTEN_WAIT = 2.0
"Seconds after the arrival within which some signaling instance must ring, else 480."
ANSWER_WAIT = 45.0
(
    "Seconds after the claim within which media must be ready (``AnswerRequested``), else"
    " 480: ``answer_wait_for`` the default ``SETUP_TIMEOUT``."
)
SETUP_RETRIES = 35.0
(
    "Seconds signaling may spend past ``SETUP_TIMEOUT`` on media set-up: its retries after"
    " declines take up to 32 s, and the ``AnswerRequested`` still has to travel."
)

REASONS = {480: "Temporarily Unavailable", 486: "Busy Here", 603: "Decline"}


def answer_wait_for(setup_timeout: float) -> float:
    """How long a claimed call waits for media (``AnswerRequested``): signaling's
    ``SETUP_TIMEOUT`` and its retries after declines."""
    return setup_timeout + SETUP_RETRIES


def late_claim(event: object, call_id: str, winner: str) -> CallClaimed | None:
    """After the answer: the ``CallClaimed`` that stops a late ring (a ``RingingStarted`` or
    ``AcceptRequested`` of a slow instance) at its browsers; None for other events."""
    if isinstance(event, RingingStarted | AcceptRequested) and winner:
        return CallClaimed(call_id=call_id, signaling_id=winner)
    return None


BusEvent = (
    RingingStarted
    | RingingStopped
    | AcceptRequested
    | AnswerRequested
    | HangupRequested
    | CallEnded
    | MediaFailed
)
"What the core hears from the bus (signaling's and media's call subjects)."


@dataclass(frozen=True)
class Publish:
    """Publish ``event`` on ``subject`` (the call's ``sipagent`` subject)."""

    subject: str
    event: CallClaimed | CallEnded


@dataclass(frozen=True)
class Ring:
    """Tell the trunk it rings: 180 (said once)."""


@dataclass(frozen=True)
class Reject:
    """End the INVITE with this final status (a ``Publish`` of ``CallEnded`` follows)."""

    status: int
    reason: str


@dataclass(frozen=True)
class Answer:
    """Answer the trunk: 200 with ``sdp`` until its ACK; the call is handed over."""

    sdp: str
    media_id: str


Action = Publish | Ring | Reject | Answer


class State(Enum):
    WAITING = "waiting"
    "Arrived; no instance rang yet."
    RINGING = "ringing"
    "At least one instance rings browsers (the trunk heard 180)."
    CLAIMED = "claimed"
    "A browser accepted; its instance sets the media up."
    ANSWERING = "answering"
    "The 200 is on its way: the call is handed over."
    ENDED = "ended"


class Ringing:
    """The decisions of one inbound call from its arrival to its answer or end."""

    def __init__(
        self,
        call_id: str,
        now: float,
        *,
        ring_timeout: float,
        reject_status: int = 486,
        listen_wait: float = LISTEN_WAIT,
        answer_wait: float = ANSWER_WAIT,
    ) -> None:
        """``now``: when the arrival was published (the waits count from there)."""
        self.call_id = call_id
        self.state = State.WAITING
        self.claimed_by = ""
        "The signaling instance that won the call."
        self.identity = ""
        "Who accepted (the listening user)."
        self.media_id = ""
        "The media worker that answers (from ``AnswerRequested``)."
        self._subject = subjects.call_events(call_id, "sipagent")
        self._reject_status = reject_status
        self._answer_wait = answer_wait
        self._listen_deadline = now + listen_wait
        self._ring_deadline = now + ring_timeout
        self._answer_deadline: float | None = None
        self._rang: set[str] = set()
        "Instances that rang."
        self._stopped: dict[str, bool] = {}
        "Instances whose browsers all stopped ringing: whether one declined."
        self._actions: deque[Action] = deque()

    # --- what the adapter asks ---------------------------------------------------------

    @property
    def finished(self) -> bool:
        """Nothing more to decide: ended, or handed over with the answer."""
        return self.state in (State.ENDED, State.ANSWERING)

    @property
    def answering(self) -> bool:
        return self.state is State.ANSWERING

    def next_action(self) -> Action | None:
        return self._actions.popleft() if self._actions else None

    def get_timer(self) -> float | None:
        if self.state in (State.WAITING, State.RINGING):
            if not self._rang or self._all_stopped():
                # Nobody rang yet, or everyone stopped early: the listen wait decides.
                return min(self._listen_deadline, self._ring_deadline)
            return self._ring_deadline
        if self.state is State.CLAIMED:
            return self._answer_deadline
        return None

    # --- what happens ------------------------------------------------------------------

    def receive(self, event: BusEvent, now: float) -> None:
        """An event from signaling's (or media's) subject of this call."""
        if self.state is State.ANSWERING and late_claim(event, self.call_id, self.claimed_by):
            self._publish_claim()  # a slow instance rings late: it lost
            return
        if self.finished:
            return
        if isinstance(event, HangupRequested) and event.cause == errors.OPERATOR:
            self._reject(480, errors.OPERATOR, "an operator hung up")
            return
        if isinstance(event, RingingStarted):
            self._ringing_started(event)
        elif isinstance(event, RingingStopped):
            self._ringing_stopped(event, now)
        elif isinstance(event, AcceptRequested):
            self._accept(event, now)
        elif isinstance(event, AnswerRequested):
            self._answer(event)
        elif isinstance(event, HangupRequested | CallEnded | MediaFailed):
            self._hung_up(event)

    def sip_event(self, event: CallEvent, now: float) -> None:
        """An event of the SIP call before the answer: only its end matters (CANCEL)."""
        if self.finished or not isinstance(event, Ended):
            return
        cause = event.cause
        reason = event.reason or ("Cancelled" if cause == errors.CANCELLED else "")
        log.info("%s: the trunk ended the call while it rang (%s)", self.call_id, cause)
        self._ended(
            CallEnded(call_id=self.call_id, cause=cause, status=event.status, reason=reason)
        )

    def handle_timer(self, now: float) -> None:
        if self.state in (State.WAITING, State.RINGING):
            if now >= self._listen_deadline and not self._rang:
                self._reject(480, errors.NOT_LISTENING, "nobody listening")
            elif now >= self._listen_deadline and self._all_stopped():
                self._everyone_stopped()
            elif now >= self._ring_deadline:
                self._reject(480, errors.NO_ANSWER, "nobody answered")
        elif self.state is State.CLAIMED:
            assert self._answer_deadline is not None
            if now >= self._answer_deadline:
                self._reject(480, errors.SETUP_FAILED, "media was not ready in time")

    # --- decisions ---------------------------------------------------------------------

    def _ringing_started(self, event: RingingStarted) -> None:
        if self.state is State.CLAIMED:
            # It subscribed after the claim went out: tell it again.
            self._publish_claim()
            return
        self._rang.add(event.signaling_id)
        self._stopped.pop(event.signaling_id, None)
        if self.state is State.WAITING:
            self.state = State.RINGING
            self._actions.append(Ring())

    def _ringing_stopped(self, event: RingingStopped, now: float) -> None:
        if self.state is State.CLAIMED:
            return
        self._rang.add(event.signaling_id)
        self._stopped[event.signaling_id] = event.declined
        if self._all_stopped() and now >= self._listen_deadline:
            self._everyone_stopped()

    def _accept(self, event: AcceptRequested, now: float) -> None:
        if self.state is State.CLAIMED:
            self._publish_claim()  # the later one loses
            return
        self.state = State.CLAIMED
        self.claimed_by = event.signaling_id
        self.identity = event.identity
        self._answer_deadline = now + self._answer_wait
        log.info("%s: claimed by %s", self.call_id, event.signaling_id)
        self._publish_claim()

    def _answer(self, event: AnswerRequested) -> None:
        if self.state is not State.CLAIMED:
            log.debug("%s: AnswerRequested before any claim, ignored", self.call_id)
            return
        if not event.answer_sdp.strip():
            self._reject(480, errors.SETUP_FAILED, "media's answer has no SDP")
            return
        self.state = State.ANSWERING
        self.media_id = event.media_id
        self._actions.append(Answer(event.answer_sdp, event.media_id))

    def _hung_up(self, event: HangupRequested | CallEnded | MediaFailed) -> None:
        if self.state is not State.CLAIMED:
            return
        cause = errors.MEDIA_FAILED if isinstance(event, MediaFailed) else event.cause
        self._reject(480, cause, "the call was not set up")

    def _everyone_stopped(self) -> None:
        if any(self._stopped.values()):
            status = self._reject_status
            self._reject(status, errors.REJECTED, REASONS[status])
        else:
            self._reject(480, errors.NO_ANSWER, "every listener went away")

    # --- helpers -----------------------------------------------------------------------

    def _all_stopped(self) -> bool:
        return bool(self._rang) and self._rang <= self._stopped.keys()

    def _publish_claim(self) -> None:
        claim = CallClaimed(call_id=self.call_id, signaling_id=self.claimed_by)
        self._actions.append(Publish(self._subject, claim))

    def _reject(self, status: int, cause: str, why: str) -> None:
        reason = REASONS.get(status, "Temporarily Unavailable")
        log.info("%s: %d %s to the trunk: %s", self.call_id, status, reason, why)
        self._actions.append(Reject(status, reason))
        self._ended(CallEnded(call_id=self.call_id, cause=cause, status=status, reason=reason))

    def _ended(self, ended: CallEnded) -> None:
        self.state = State.ENDED
        self._actions.append(Publish(self._subject, ended))
