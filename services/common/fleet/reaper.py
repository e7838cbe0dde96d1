"""What a survivor does about a dead instance's calls, sans-I/O.

``Reaper`` watches a ``LeaseTable``: when an instance's lease runs out it
asks for that instance's call records (a *scan*), and for each record it
says how to end the call (a ``Plan``): which events to publish, whether a
BYE is owed to the trunk, and the record to write with compare-and-set to
claim the call first, so that of all survivors exactly one acts.

- dead SIP agent: a surviving SIP agent sends BYE in the stored dialog (if
  it was confirmed) and publishes ``CallEnded(internal, "SIP agent lost")``
  on the call's sipagent subject, which signaling and media listen to. Only
  a SIP agent can send the BYE; if none claims the call within
  ``orphan_grace`` any survivor publishes ``CallEnded`` without it.
- dead media worker: ``HangupRequested(media_failed)`` on the call's media
  subject; the call's SIP agent sends BYE, signaling says ``ended``.
- dead signaling: ``HangupRequested(browser_gone)`` on the call's signaling
  subject; the SIP agent sends BYE, media releases.

On a locked bus (``services/common/nats_access.py``) a service publishes on
its own call subject only: given ``may_publish``, a survivor leaves a call whose
actions it may not publish to one that may (or to the dead one's successor),
rather than claim it and be refused.

A survivor acts only once its own heartbeats have been heard for a whole
lease: an instance cut off from NATS sees everyone expire and must not end
their calls when it comes back. A record naming this very instance, written
before it started, for a call it does not hold, is from a previous process
that had the same id (a restarted container keeps its pod name).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from proto import errors, subjects
from proto.events import AnyEvent, CallEnded, HangupRequested
from proto.fleet import SERVICES, CallRecord, SipDialogRecord
from proto.subjects import Source
from services.common.fleet import records
from services.common.fleet.leases import LeaseTable, Owner

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 30.0
"Seconds between scans of the whole registry (records of instances never heard of)."
ORPHAN_GRACE = 10.0
"Seconds a dead SIP agent's confirmed call waits for a SIP agent to BYE it."
SIPAGENT_LOST = "SIP agent lost"


@dataclass(frozen=True)
class Publish:
    """Publish ``event`` on ``subject``."""

    subject: str
    event: AnyEvent


@dataclass(frozen=True)
class SendBye:
    """Send BYE to the trunk in this dialog (a SIP agent only)."""

    call_id: str
    dialog: SipDialogRecord


Action = Publish | SendBye


@dataclass(frozen=True)
class Plan:
    """How to end one call: claim it, carry out ``actions``, delete the record."""

    call_id: str
    claim: CallRecord
    "The record to write at the revision it was read at; losing that race means another acts."
    actions: tuple[Action, ...]
    reason: str
    "For logs: who died."


Scan = Owner | None
"Records to read: those of one instance, or None for every record."


class Reaper:
    """Ends the calls of dead instances, for one surviving instance ``me``."""

    def __init__(
        self,
        me: Owner,
        leases: LeaseTable,
        *,
        now: float,
        started_wall: float,
        sweep_interval: float = SWEEP_INTERVAL,
        orphan_grace: float = ORPHAN_GRACE,
        holds: Callable[[str], bool] | None = None,
        may_publish: Callable[[str], bool] | None = None,
    ) -> None:
        """``holds(call_id)``: whether this process holds the call; None: never
        treat a record naming this instance as a previous process's.
        ``may_publish(subject)``: whether this instance may publish there; None: anywhere."""
        self.me = me
        self._holds = holds
        self._may_publish = may_publish
        self._leases = leases
        self._started_wall = started_wall
        self._sweep_interval = sweep_interval
        self._orphan_grace = orphan_grace
        self._scans: list[Scan] = [None]
        "Scans wanted; the first sweep also finds a previous process's records."
        self._next_sweep = now + sweep_interval

    # --- timers and scans ---------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        """Collect expired leases (a scan each) and start the periodic sweep when due."""
        for lease in self._leases.expired(now):
            if lease.owner != self.me:
                self._want(lease.owner)
        if now >= self._next_sweep:
            self._next_sweep = now + self._sweep_interval
            self._want(None)

    def get_timer(self) -> float | None:
        """When ``handle_timer`` should run next."""
        timers = [self._next_sweep, self._leases.get_timer()]
        lease = self._leases.get(*self.me, now=float("-inf"))
        if self._scans and lease is not None:
            timers.append(lease.since + self._leases.lease)
        return min(t for t in timers if t is not None)

    def ready(self, now: float) -> bool:
        """Whether this instance may act: its own lease held for a whole lease time."""
        lease = self._leases.get(*self.me, now=now)
        return lease is not None and now >= lease.since + self._leases.lease

    def pop_scans(self, now: float) -> list[Scan]:
        """Scans to run now (none until ``ready``); report failures with ``scan_failed``."""
        if not self.ready(now):
            return []
        scans, self._scans = self._scans, []
        return scans

    def scan_failed(self, scan: Scan) -> None:
        """A scan could not read the registry: run it again at the next timer."""
        self._want(scan)

    # --- decisions -----------------------------------------------------------------

    def plan(self, record: CallRecord, now: float, wall: float) -> Plan | None:
        """How to end the call of ``record`` if an owner is dead and nobody alive claimed it."""
        if not self.ready(now):
            return None
        claimant = records.reaper_of(record)
        if (
            claimant is not None
            and claimant != self.me
            and self._dead_since(claimant, record, now) is None
        ):
            return None  # a live survivor is on it
        dead = {
            service: since
            for service in SERVICES
            if (since := self._dead_since((service, record.owner(service)), record, now))
            is not None
        }
        if not dead:
            return None
        call_id = record.call_id
        if "sipagent" in dead:
            actions = self._sipagent_lost(record, dead["sipagent"], now)
            if actions is None:
                return None
            reason = f"sipagent {record.sipagent_id} dead"
        elif "media" in dead:
            hangup = HangupRequested(call_id=call_id, cause=errors.MEDIA_FAILED)
            actions = (Publish(subjects.call_events(call_id, "media"), hangup),)
            reason = f"media {record.media_id} dead"
        else:
            hangup = HangupRequested(call_id=call_id, cause=errors.BROWSER_GONE)
            actions = (Publish(subjects.call_events(call_id, "signaling"), hangup),)
            reason = f"signaling {record.signaling_id} dead"
        if not self._allowed(actions):
            return None  # left to a survivor the bus lets publish it
        claim = records.claimed(record, self.me, wall)
        return Plan(call_id=call_id, claim=claim, actions=actions, reason=reason)

    def _sipagent_lost(
        self, record: CallRecord, since: float, now: float
    ) -> tuple[Action, ...] | None:
        call_id = record.call_id
        ended = CallEnded(call_id=call_id, cause=errors.INTERNAL, reason=SIPAGENT_LOST)
        publish = Publish(subjects.call_events(call_id, "sipagent"), ended)
        dialog = record.dialog
        if dialog is None or not dialog.confirmed:
            # No dialog yet: without our ACK the trunk cannot confirm one, and it
            # ends an unacknowledged 2xx itself (RFC 3261 13.3.1.4).
            return (publish,)
        if self.me[0] == "sipagent":
            return (SendBye(call_id, dialog), publish)
        if now < since + self._orphan_grace or not self._allowed((publish,)):
            return None  # leave the BYE to a SIP agent
        log.warning("call %s: no SIP agent ended the dialog of a dead one; no BYE sent", call_id)
        return (publish,)

    def _allowed(self, actions: tuple[Action, ...]) -> bool:
        may = self._may_publish
        return may is None or all(may(a.subject) for a in actions if isinstance(a, Publish))

    def _dead_since(
        self, owner: tuple[Source, str], record: CallRecord, now: float
    ) -> float | None:
        service, instance_id = owner
        if not instance_id:
            return None
        if owner == self.me:
            # Alive, but maybe a previous process with the same id wrote this.
            previous = (
                self._holds is not None
                and record.updated_at < self._started_wall
                and not self._holds(record.call_id)
            )
            return now if previous else None
        return self._leases.dead_since(service, instance_id, now)

    def _want(self, scan: Scan) -> None:
        if scan not in self._scans:
            self._scans.append(scan)
