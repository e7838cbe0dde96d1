"""Load-aware placement of new calls on media workers, sans-I/O.

Each worker's heartbeat says how loaded it is; ``score`` turns that into
``1 - active/max`` (0 when full or draining). ``Placement`` picks the best
worker for a new call and, when that worker declines, the next one, falling
back to the media queue group when it knows of no worker with room.

Heartbeats are up to one interval old, so a burst of calls from one
signaling instance would all land on the same worker: the calls this table
placed since a worker's last heartbeat count as active on that worker.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field

from proto import errors, subjects
from services.common.fleet.leases import Lease, LeaseTable

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
"Workers a call is offered to (the queue group counts as one) before it fails."


def score(active_calls: int, max_calls: int, draining: bool) -> float:
    """How much room a worker has: ``1 - active/max``; 0 when full or draining."""
    if draining or max_calls <= 0 or active_calls >= max_calls:
        return 0.0
    return 1.0 - max(active_calls, 0) / max_calls


def decline_code(active_calls: int, max_calls: int, draining: bool) -> str | None:
    """Why a worker must decline a new call (``CallDeclined.code``), or None to take it."""
    if draining:
        return errors.DRAINING
    if active_calls >= max_calls:
        return errors.AT_CAPACITY
    return None


@dataclass(frozen=True)
class Target:
    """Where to send one ``CallRequested``."""

    subject: str
    instance_id: str | None
    "The chosen worker, or None for the queue group."


@dataclass
class _Attempts:
    offers: int = 0
    "CallRequested sent so far."
    excluded: set[str] = field(default_factory=set)
    "Workers already offered the call (or that declined it)."
    queue_used: bool = False


class Placement:
    """Chooses media workers for this signaling instance's new calls."""

    def __init__(
        self,
        leases: LeaseTable,
        *,
        max_attempts: int = MAX_ATTEMPTS,
        rng: random.Random | None = None,
    ) -> None:
        self._leases = leases
        self._max_attempts = max_attempts
        self._rng = rng or random.Random()
        self._calls: dict[str, _Attempts] = {}
        self._placed: dict[str, list[float]] = {}
        "Times this table sent a call to each worker."

    def candidates(self, now: float, exclude: frozenset[str] = frozenset()) -> list[Lease]:
        """Workers with room, best first; equal scores in random order."""
        scored = [
            (self._score(lease), self._rng.random(), lease)
            for lease in self._leases.alive("media", now)
            if lease.instance_id not in exclude
        ]
        scored.sort(key=lambda item: (-item[0], item[1]))
        return [lease for value, _, lease in scored if value > 0]

    def start(self, call_id: str, now: float) -> Target:
        """Where to send the first ``CallRequested`` of a new call."""
        self._calls[call_id] = _Attempts()
        target = self._next(call_id, now)
        assert target is not None  # the first attempt always has the queue group
        return target

    def declined(self, call_id: str, instance_id: str | None, now: float) -> Target | None:
        """A worker declined the call: where to try next, or None to give up."""
        attempts = self._calls.get(call_id)
        if attempts is None:
            return None
        if instance_id is not None:
            # Through the queue group it may be one we did not choose: not again.
            attempts.excluded.add(instance_id)
        if attempts.offers >= self._max_attempts:
            self.finished(call_id)
            return None
        target = self._next(call_id, now)
        if target is None:
            self.finished(call_id)
        return target

    def finished(self, call_id: str) -> None:
        """The call was taken or failed: forget its attempts."""
        self._calls.pop(call_id, None)

    # --- internals ---------------------------------------------------------------------

    def _next(self, call_id: str, now: float) -> Target | None:
        attempts = self._calls[call_id]
        best = self.candidates(now, exclude=frozenset(attempts.excluded))
        if best:
            chosen = best[0].instance_id
            attempts.offers += 1
            attempts.excluded.add(chosen)
            self._placed.setdefault(chosen, []).append(now)
            log.debug("call %s: placed on media %s", call_id, chosen)
            return Target(subjects.media_work_for(chosen), chosen)
        if attempts.queue_used:
            return None  # the queue group already had its chance
        attempts.offers += 1
        attempts.queue_used = True
        log.debug("call %s: no media worker known with room, using the queue group", call_id)
        return Target(subjects.media_work(), None)

    def _score(self, lease: Lease) -> float:
        # Calls placed after its last heartbeat are not in its count yet.
        placed = [t for t in self._placed.get(lease.instance_id, []) if t >= lease.seen_at]
        if placed:
            self._placed[lease.instance_id] = placed
        else:
            self._placed.pop(lease.instance_id, None)
        return score(lease.active_calls + len(placed), lease.max_calls, lease.draining)
