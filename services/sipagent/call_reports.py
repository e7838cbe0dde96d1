"""What the bus hears of each call from this SIP agent: ``call_events(call_id, "sipagent")``.

Every call owes exactly one ``CallEnded``; ``CallReports`` knows which calls
have not reported theirs yet, so a call task that dies still tells the
browser, and the registry forgets a call once its end is published.
"""

from __future__ import annotations

import logging

from proto import subjects
from proto.events import (
    CallAnswered,
    CallClaimed,
    CallEnded,
    DtmfReceived,
    HoldFailed,
    InviteSent,
    ProgressReceived,
    SessionUpdated,
)
from services.common.bus import Bus
from services.sipagent.call_records import CallRecords

log = logging.getLogger(__name__)

Report = (
    CallEnded
    | CallClaimed
    | InviteSent
    | ProgressReceived
    | CallAnswered
    | SessionUpdated
    | HoldFailed
    | DtmfReceived
)
"What the SIP agent publishes about a call."


class CallReports:
    """Publishes the calls' events; tracks the calls whose ``CallEnded`` is still owed."""

    def __init__(self, bus: Bus, records: CallRecords) -> None:
        self._bus = bus
        self._records = records
        self._unreported: set[str] = set()

    def owe_end(self, call_id: str) -> None:
        """``call_id`` started: its ``CallEnded`` is owed from now on."""
        self._unreported.add(call_id)

    def settle(self, call_id: str) -> bool:
        """Stop owing ``call_id``'s end; whether it was still owed."""
        owed = call_id in self._unreported
        self._unreported.discard(call_id)
        return owed

    async def publish(self, event: Report) -> None:
        subject = subjects.call_events(event.call_id, "sipagent")
        if isinstance(event, CallEnded):
            self._unreported.discard(event.call_id)
        try:
            await self._bus.publish(subject, event)
        except Exception as exc:  # a lost bus must not kill the call's SIP side
            log.warning("%s: cannot publish %s: %s", event.call_id, type(event).__name__, exc)
        if isinstance(event, CallEnded):
            await self._records.delete(event.call_id)
