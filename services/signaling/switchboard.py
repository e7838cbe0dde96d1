"""Calls from the trunk at one signaling instance: who listens, what rings, sans I/O.

One ``Switchboard`` per process holds the ``Listeners`` table and a ``Ring``
per arrived call. Browser sessions call it directly (``listen``,
``ringing``, ``accept``...), as they do ``Placement``; the bus events of the
users' and the rings' subjects come in through ``receive()``. What it wants
done (subscriptions, publishes, messages to sockets, events handed to the
session of an accepting socket) is pulled with
``pop_actions()``; ``services/signaling/inbound.py`` carries it out and arms
one timer from ``get_timer()``.
"""

from __future__ import annotations

import logging

from proto import subjects
from proto.events import AnyEvent, CallArrived
from services.signaling.listeners import Listeners
from services.signaling.ringing import CLAIM_TIMEOUT, RING_MARGIN, Ring, RingAction

log = logging.getLogger(__name__)

REMEMBERED = 120.0
"Seconds a call that rang here is remembered: its arrival for a second user rings nobody again."
MAX_RINGS_PER_SOCKET = 16
"Calls ringing one socket at once; more arrivals pass it by."


class Switchboard:
    def __init__(
        self,
        instance_id: str,
        *,
        claim_timeout: float = CLAIM_TIMEOUT,
        ring_margin: float = RING_MARGIN,
    ) -> None:
        self._instance_id = instance_id
        self._claim_timeout = claim_timeout
        self._ring_margin = ring_margin
        self._listeners = Listeners()
        self._rings: dict[str, Ring] = {}
        self._seen: dict[str, float] = {}
        "Call ids that arrived here, to when they are forgotten."
        self._actions: list[RingAction] = []
        self._draining = False

    # --- what the adapter reads --------------------------------------------------

    def get_timer(self) -> float | None:
        deadlines = [d for ring in self._rings.values() if (d := ring.get_timer()) is not None]
        return min(deadlines, default=None)

    def pop_actions(self) -> list[RingAction]:
        actions, self._actions = self._actions, []
        return actions

    def user_of(self, socket: str) -> str | None:
        return self._listeners.user_of(socket)

    @property
    def ringing_calls(self) -> int:
        return len(self._rings)

    # --- browser sessions ----------------------------------------------------------

    def listen(self, socket: str, user: str, now: float) -> None:
        """``socket`` listens as ``user`` from now on (instead of anyone else)."""
        self._actions.extend(self._listeners.add(socket, user))

    def unlisten(self, socket: str, now: float) -> None:
        """No new call rings ``socket``; calls ringing it already go on."""
        self._actions.extend(self._listeners.remove(socket))

    def socket_closed(self, socket: str, now: float) -> None:
        """``socket`` is gone: it listens no more and leaves every ring."""
        self.unlisten(socket, now)
        for ring in list(self._rings.values()):
            ring.leave(socket, now)
            self._collect(ring)

    def ringing(self, socket: str, call_id: str) -> CallArrived | None:
        """The arrival of ``call_id`` if it rings ``socket`` now, else None."""
        ring = self._rings.get(call_id)
        return ring.arrival if ring is not None and ring.rings(socket) else None

    def accept(self, socket: str, call_id: str, now: float) -> bool:
        """True: ``socket`` is the one browser here that accepted; its session goes on.

        False: the call no longer rings it; it was told why (``ended``).
        """
        ring = self._rings.get(call_id)
        if ring is None:
            return False
        accepted = ring.accept(socket, now)
        self._collect(ring)
        return accepted

    def reject(self, socket: str, call_id: str, now: float) -> bool:
        """``socket`` declines ``call_id``; False if that call does not ring it."""
        ring = self._rings.get(call_id)
        if ring is None:
            return False
        rejected = ring.reject(socket, now)
        self._collect(ring)
        return rejected

    def withdraw(self, socket: str, call_id: str, now: float) -> None:
        """``socket`` gives ``call_id`` up (after accepting, or while the limits were asked)."""
        ring = self._rings.get(call_id)
        if ring is not None:
            ring.leave(socket, now)
            self._collect(ring)

    def claimed(self, socket: str, call_id: str, now: float) -> None:
        """``socket``'s session heard the call claimed for this instance."""
        ring = self._rings.get(call_id)
        if ring is not None:
            ring.claimed(socket, now)
            self._collect(ring)

    def drain(self) -> None:
        """The instance takes no new call: arrivals from now on ring nobody here."""
        self._draining = True

    # --- the bus and the clock ---------------------------------------------------------

    def receive(self, event: AnyEvent, now: float) -> None:
        """An event of a user's subject (``CallArrived``) or of a ringing call's."""
        if isinstance(event, CallArrived):
            self._arrived(event, now)
            return
        ring = self._rings.get(event.call_id)
        if ring is not None:
            ring.handle_event(event, now)
            self._collect(ring)

    def handle_timer(self, now: float) -> None:
        for ring in list(self._rings.values()):
            ring.handle_timer(now)
            self._collect(ring)

    def _arrived(self, event: CallArrived, now: float) -> None:
        call_id = event.call_id
        self._forget_old(now)
        if call_id in self._seen:
            return  # the same call on another of its users' subjects
        try:
            subjects.call_events(call_id, "sipagent")
        except ValueError:
            log.warning("arrival with an invalid call id ignored")
            return
        self._seen[call_id] = now + REMEMBERED
        if self._draining:
            log.info("call %s: arrived while draining: not rung here", call_id)
            return
        busy = self._busy_sockets()
        sockets: list[str] = []
        for user in dict.fromkeys(event.users):
            for socket in self._listeners.sockets(user):
                if busy.get(socket, 0) < MAX_RINGS_PER_SOCKET and socket not in sockets:
                    sockets.append(socket)
        if not sockets:
            return  # nobody listens here as one of its users (any more)
        ring = Ring(
            event,
            self._instance_id,
            sockets,
            now,
            claim_timeout=self._claim_timeout,
            margin=self._ring_margin,
        )
        self._rings[call_id] = ring
        self._collect(ring)

    def _busy_sockets(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for ring in self._rings.values():
            for socket in ring.ringing_sockets():
                counts[socket] = counts.get(socket, 0) + 1
        return counts

    def _forget_old(self, now: float) -> None:
        for call_id in [c for c, until in self._seen.items() if until <= now]:
            del self._seen[call_id]

    def _collect(self, ring: Ring) -> None:
        self._actions.extend(ring.pop_actions())
        if ring.done:
            self._rings.pop(ring.call_id, None)
