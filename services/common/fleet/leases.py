"""Who is alive: leases renewed by heartbeats, sans-I/O.

``LeaseTable`` is fed every ``Heartbeat`` with the time it was received and
says, for a given ``now``, which instances hold a lease and which lost it. An
instance is dead once ``lease`` seconds pass without a heartbeat from it. An
instance never heard from (named in a call record, say) counts as dead once
the table itself has listened for ``lease`` seconds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from proto.fleet import Heartbeat
from proto.subjects import Source

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 1.0
"Seconds between two heartbeats of one instance."
LEASE = 3.0
"Seconds without a heartbeat after which an instance is dead."
FORGET_AFTER = 600.0
"Seconds a dead instance is remembered (so a late record of it is still reaped)."

Owner = tuple[Source, str]
"(service, instance id)."


@dataclass(frozen=True)
class Lease:
    """The last heartbeat of one live instance."""

    service: Source
    instance_id: str
    active_calls: int
    max_calls: int
    draining: bool
    seen_at: float
    "When its last heartbeat arrived."
    since: float
    "When it came alive (first heartbeat, or first after it was dead)."
    expires_at: float
    "When it is dead unless another heartbeat arrives."

    @property
    def owner(self) -> Owner:
        return (self.service, self.instance_id)


class LeaseTable:
    """Leases of every instance heard on the heartbeat subjects."""

    def __init__(self, *, now: float, lease: float = LEASE, forget_after: float = FORGET_AFTER):
        if lease <= 0:
            raise ValueError("lease must be positive")
        self.lease = lease
        self._started = now
        self._forget_after = forget_after
        self._leases: dict[Owner, Lease] = {}
        self._dead: dict[Owner, float] = {}
        "Instances whose lease expired, with when it did."

    def observe(self, heartbeat: Heartbeat, now: float) -> None:
        """A heartbeat arrived at ``now``."""
        owner: Owner = (heartbeat.service, heartbeat.instance_id)
        previous = self._leases.get(owner)
        if previous is not None and previous.expires_at <= now:
            previous = None  # expired but not collected yet: it died and came back
        if previous is None:
            if self._dead.pop(owner, None) is not None:
                log.warning("%s %s is alive again", *owner)
            else:
                log.info("%s %s joined", *owner)
        self._leases[owner] = Lease(
            service=heartbeat.service,
            instance_id=heartbeat.instance_id,
            active_calls=heartbeat.active_calls,
            max_calls=heartbeat.max_calls,
            draining=heartbeat.draining,
            seen_at=now,
            since=now if previous is None else previous.since,
            expires_at=now + self.lease,
        )

    def expired(self, now: float) -> list[Lease]:
        """Leases that ran out by ``now`` since the last call; they are dead from then on."""
        gone = [lease for lease in self._leases.values() if lease.expires_at <= now]
        for lease in gone:
            del self._leases[lease.owner]
            self._dead[lease.owner] = lease.expires_at
            log.warning(
                "%s %s lost its lease (%d call(s))",
                lease.service,
                lease.instance_id,
                lease.active_calls,
            )
        horizon = now - self._forget_after
        for owner in [o for o, at in self._dead.items() if at < horizon]:
            del self._dead[owner]
        return gone

    def get_timer(self) -> float | None:
        """When the next lease runs out, or None."""
        return min((lease.expires_at for lease in self._leases.values()), default=None)

    # --- questions -----------------------------------------------------------------

    def get(self, service: Source, instance_id: str, now: float) -> Lease | None:
        """The live lease of an instance, or None."""
        lease = self._leases.get((service, instance_id))
        return lease if lease is not None and lease.expires_at > now else None

    def alive(self, service: Source, now: float) -> list[Lease]:
        """Live instances of ``service``, in order of their ids."""
        leases = [
            lease
            for lease in self._leases.values()
            if lease.service == service and lease.expires_at > now
        ]
        return sorted(leases, key=lambda lease: lease.instance_id)

    def is_alive(self, service: Source, instance_id: str, now: float) -> bool:
        return self.get(service, instance_id, now) is not None

    def dead_since(self, service: Source, instance_id: str, now: float) -> float | None:
        """When the instance died; None while alive or not known dead yet.

        An instance never heard from is dead from ``lease`` seconds after the
        table started listening: by then a live one would have been heard.
        """
        owner: Owner = (service, instance_id)
        lease = self._leases.get(owner)
        if lease is not None:
            return lease.expires_at if lease.expires_at <= now else None
        if owner in self._dead:
            return self._dead[owner]
        unknown_from = self._started + self.lease
        return unknown_from if now >= unknown_from else None

    def dead(self) -> list[Owner]:
        """Instances known dead (lease expired and collected by ``expired()``)."""
        return list(self._dead)
