"""One call from the trunk ringing the browsers of this instance, sans I/O.

A ``Ring`` starts from a ``CallArrived`` and the sockets listening here as
one of its users: each gets ``incoming``, the call's ``sipagent`` subject is
subscribed and ``RingingStarted`` published. From then on:

- a browser declines (``reject``) → ``ended`` cause ``rejected`` to it; when no
  browser here rings any more (declined or gone) → ``RingingStopped``;
- a browser accepts → the ring waits ``CLAIM_TIMEOUT`` for the SIP agent's
  ``CallClaimed``. The accepting socket's session publishes ``AcceptRequested``
  and carries the call on (``session.py``); the ring tells nothing to it, but
  hands it the ``CallClaimed`` or ``CallEnded`` it hears while waiting
  (``Forward``): the session subscribes to the call only as it accepts, and
  an event published just before would pass it by;
- ``CallClaimed`` (for us or another instance) → the others get ``ended`` cause
  ``answered_elsewhere``; a claim for us whose browser left is hung up, and
  the others, which the claim ended too, get ``setup_failed``: nobody answered.
  Until that claim (or the claim timer) they ring on, and one that accepts
  meanwhile gets ``setup_failed`` at once (only the first accept counts);
- ``CallEnded`` from the SIP agent (CANCEL, ``ring_timeout``, every instance
  declined) → ``ended`` with its cause to every browser still ringing;
- the arrival's ``ring_timeout`` plus ``RING_MARGIN`` bounds the whole ring
  even if the SIP agent dies silently: ``ended`` cause ``no_answer``.

Every path ends the ring (``done``); its subscription is then dropped.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from proto import errors, subjects
from proto.events import (
    AnyEvent,
    CallArrived,
    CallClaimed,
    CallEnded,
    HangupRequested,
    RingingStarted,
    RingingStopped,
)
from services.signaling import messages
from services.signaling.actions import Action, Deliver, Publish, Subscribe, Unsubscribe

log = logging.getLogger(__name__)

CLAIM_TIMEOUT = 5.0
"Seconds from a browser's ``accept`` to the SIP agent's ``CallClaimed``."
RING_MARGIN = 5.0
"Seconds past the arrival's ``ring_timeout`` before the ring ends on its own."
MAX_RING_TIMEOUT = 600.0
"The longest ``ring_timeout`` believed."

_REASONS = {
    errors.REJECTED: "Declined",
    errors.ANSWERED_ELSEWHERE: "Answered elsewhere",
    errors.NO_ANSWER: "No answer",
    errors.SETUP_FAILED: "Call set-up failed",
}


@dataclass(frozen=True, slots=True)
class Forward:
    """Hand ``event`` of a ringing call to the session of ``socket``, the one that accepted it."""

    socket: str
    event: AnyEvent


RingAction = Action | Forward
"What a ring (and the switchboard) asks its adapter to do."


class Phase(enum.Enum):
    RINGING = "ringing"
    "Browsers ring; timer: ``ring_timeout`` + ``RING_MARGIN``."
    CLAIMING = "claiming"
    "A browser here accepted; timer: ``CLAIM_TIMEOUT`` for ``CallClaimed``."
    ABANDONED = "abandoned"
    "We gave the call up after accepting: a late claim for us is hung up (until the ring's end)."
    DONE = "done"


class Status(enum.Enum):
    RINGING = "ringing"
    DECLINED = "declined"
    GONE = "gone"
    "The socket left the ring: it closed, withdrew, or was told how the ring ended."
    ACCEPTED = "accepted"


class Ring:
    """The ring of one arrived call at this instance."""

    def __init__(
        self,
        arrival: CallArrived,
        instance_id: str,
        sockets: list[str],
        now: float,
        *,
        claim_timeout: float = CLAIM_TIMEOUT,
        margin: float = RING_MARGIN,
    ) -> None:
        """``sockets``: the sockets to ring (at least one)."""
        self.arrival = arrival
        self.call_id = arrival.call_id
        self._instance_id = instance_id
        self._sockets = {socket: Status.RINGING for socket in sockets}
        self._claim_timeout = claim_timeout
        self._actions: list[RingAction] = []
        self._accepter: str | None = None
        ring_timeout = min(max(arrival.ring_timeout, 0.0), MAX_RING_TIMEOUT)
        self._ring_deadline = now + ring_timeout + margin
        self._phase = Phase.RINGING
        self._deadline: float | None = self._ring_deadline
        self._subject = subjects.call_events(self.call_id, "sipagent")
        self._actions.append(Subscribe(self._subject))
        incoming = messages.incoming(
            self.call_id, arrival.caller, arrival.caller_name, arrival.called
        )
        for socket in self._sockets:
            self._actions.append(Deliver(socket, incoming))
        started = RingingStarted(
            call_id=self.call_id, signaling_id=instance_id, listeners=len(self._sockets)
        )
        self._publish(started)
        log.info("call %s: ringing %d browser(s)", self.call_id, len(self._sockets))

    # --- what the switchboard reads ----------------------------------------------

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def done(self) -> bool:
        return self._phase == Phase.DONE

    def get_timer(self) -> float | None:
        return self._deadline

    def pop_actions(self) -> list[RingAction]:
        actions, self._actions = self._actions, []
        return actions

    def rings(self, socket: str) -> bool:
        """Whether ``socket`` is rung by this call now (it may accept or reject it)."""
        return self._phase in (Phase.RINGING, Phase.CLAIMING) and (
            self._sockets.get(socket) == Status.RINGING
        )

    def ringing_sockets(self) -> list[str]:
        """The sockets this call rings now."""
        return self._ringing() if self._phase in (Phase.RINGING, Phase.CLAIMING) else []

    # --- a browser's answer --------------------------------------------------------

    def accept(self, socket: str, now: float) -> bool:
        """``socket`` accepts: True if it is this instance's one accepting browser.

        False when it does not ring (it was told how the ring ended), or when
        another browser here accepted first: it is then told
        ``answered_elsewhere``, or ``setup_failed`` if that browser left since
        (the claim will come to this instance, for nobody).
        """
        if not self.rings(socket):
            return False
        if self._phase == Phase.CLAIMING:
            cause = errors.ANSWERED_ELSEWHERE if self._accepter else errors.SETUP_FAILED
            self._tell(socket, cause)
            return False
        self._sockets[socket] = Status.ACCEPTED
        self._accepter = socket
        self._phase = Phase.CLAIMING
        self._deadline = now + self._claim_timeout
        log.info("call %s: accepted here, waiting for the claim", self.call_id)
        return True

    def reject(self, socket: str, now: float) -> bool:
        """``socket`` declines; False if it does not ring."""
        if not self.rings(socket):
            return False
        self._sockets[socket] = Status.DECLINED
        self._actions.append(Deliver(socket, self._ended(None, "", errors.REJECTED)))
        self._check_stopped()
        return True

    def leave(self, socket: str, now: float) -> None:
        """``socket`` closed or gave up (an accepting one too): it is told nothing.

        An accepting one that leaves with others still ringing lets them ring
        until the claim says how the call ended (``_on_claimed``).
        """
        status = self._sockets.get(socket)
        if status not in (Status.RINGING, Status.ACCEPTED):
            return
        self._sockets[socket] = Status.GONE
        if socket == self._accepter:
            self._accepter = None
            if self._phase == Phase.CLAIMING and not self._ringing():
                self._abandon(errors.SETUP_FAILED)
            return
        self._check_stopped()

    def claimed(self, socket: str, now: float) -> None:
        """The accepting socket's session heard ``CallClaimed`` for us first."""
        if self._phase == Phase.CLAIMING and socket == self._accepter:
            self._end_ringing(errors.ANSWERED_ELSEWHERE)
            self._finish()

    # --- the SIP agent -------------------------------------------------------------

    def handle_event(self, event: AnyEvent, now: float) -> None:
        if self.done or event.call_id != self.call_id:
            return
        if isinstance(event, CallClaimed | CallEnded) and self._accepter is not None:
            # Its session may not listen to the call yet: hand it on (a copy
            # that reaches it on its own subscription too changes nothing).
            self._actions.append(Forward(self._accepter, event))
        if isinstance(event, CallClaimed):
            self._on_claimed(event)
        elif isinstance(event, CallEnded):
            if self._phase != Phase.ABANDONED:
                self._end_ringing(event.cause, event.status, event.reason)
            self._finish()

    def _on_claimed(self, event: CallClaimed) -> None:
        others = errors.ANSWERED_ELSEWHERE
        if event.signaling_id == self._instance_id and self._accepter is None:
            # We asked for it, but its browser left (or we gave up waiting):
            # nobody answered, the call is hung up.
            log.info("call %s: claimed for a browser that left: hanging up", self.call_id)
            cause = errors.SETUP_FAILED if self._phase == Phase.ABANDONED else errors.BROWSER_GONE
            hangup = HangupRequested(call_id=self.call_id, cause=cause)
            self._publish(hangup)
            others = errors.SETUP_FAILED
        if self._phase != Phase.ABANDONED:
            self._end_ringing(others)
        self._finish()

    def handle_timer(self, now: float) -> None:
        if self._deadline is None or now < self._deadline:
            return
        self._deadline = None
        if self._phase == Phase.RINGING:
            log.warning("call %s: rang past its ring_timeout without an end", self.call_id)
            self._end_ringing(errors.NO_ANSWER)
            self._publish(self._stopped(declined=False))
            self._finish()
        elif self._phase == Phase.CLAIMING:
            log.warning("call %s: no claim came after the accept", self.call_id)
            self._abandon(errors.SETUP_FAILED)
        else:
            self._finish()

    # --- helpers ----------------------------------------------------------------------

    def _ringing(self) -> list[str]:
        return [s for s, status in self._sockets.items() if status == Status.RINGING]

    def _check_stopped(self) -> None:
        """In ``RINGING``: with no browser left ringing here, say so and end."""
        if self._phase != Phase.RINGING or self._ringing():
            return
        declined = any(status == Status.DECLINED for status in self._sockets.values())
        self._publish(self._stopped(declined=declined))
        self._finish()

    def _abandon(self, cause: str) -> None:
        """Give up the accepted call: the others stop ringing, ``RingingStopped``."""
        self._end_ringing(cause)
        self._publish(self._stopped(declined=False))
        self._phase = Phase.ABANDONED
        self._deadline = self._ring_deadline

    def _end_ringing(self, cause: str, status: int | None = None, reason: str = "") -> None:
        for socket in self._ringing():
            self._tell(socket, cause, status, reason)

    def _tell(self, socket: str, cause: str, status: int | None = None, reason: str = "") -> None:
        self._sockets[socket] = Status.GONE
        self._actions.append(Deliver(socket, self._ended(status, reason, cause)))

    def _ended(self, status: int | None, reason: str, cause: str) -> messages.Outgoing:
        return messages.ended(status, reason or _REASONS.get(cause, ""), cause, self.call_id)

    def _stopped(self, declined: bool) -> RingingStopped:
        return RingingStopped(
            call_id=self.call_id, signaling_id=self._instance_id, declined=declined
        )

    def _publish(self, event: AnyEvent) -> None:
        self._actions.append(Publish(subjects.call_events(self.call_id, "signaling"), event))

    def _finish(self) -> None:
        if self._phase == Phase.DONE:
            return
        log.info("call %s: ring here ended (%s)", self.call_id, self._phase.value)
        self._phase = Phase.DONE
        self._deadline = None
        self._actions.append(Unsubscribe(self._subject))
