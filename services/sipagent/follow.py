"""One call from the moment its INVITE is out (or its 200 is on its way) to its end.

Outbound and inbound calls alike: ``follow`` turns the events of the SIP call
(provisional responses, the answer, re-INVITEs and transfers, refused holds,
DTMF by INFO, the end) into the proto events the bus hears, keeps the
registry's dialog current, and returns the ``CallEnded`` to publish.
"""

from __future__ import annotations

from proto import errors
from proto.events import (
    CallAnswered,
    CallEnded,
    DtmfReceived,
    HoldFailed,
    ProgressReceived,
    SessionUpdated,
)
from services.sipagent.call_records import CallRecords
from services.sipagent.call_reports import CallReports
from services.sipagent.events import (
    Answered,
    DtmfIn,
    Ended,
    HoldRefused,
    Progress,
    SessionChanged,
)
from services.sipagent.handle import CallHandle
from services.sipagent.spans import SipSpans


async def follow(
    call_id: str,
    handle: CallHandle,
    spans: SipSpans,
    reports: CallReports,
    records: CallRecords,
) -> CallEnded:
    """Report what the SIP call does until it ends; the ``CallEnded`` to publish."""
    while True:
        event = await handle.events.get()
        if isinstance(event, Progress):
            await reports.publish(
                ProgressReceived(call_id=call_id, status=event.status, early_sdp=event.sdp)
            )
        elif isinstance(event, Answered):
            spans.end_invite(200)
            spans.call.add_event("answered")
            await records.confirmed(call_id, handle)
            await reports.publish(CallAnswered(call_id=call_id, answer_sdp=event.sdp))
        elif isinstance(event, SessionChanged):
            await _session_changed(call_id, handle, event, spans, reports, records)
        elif isinstance(event, HoldRefused):
            spans.call.add_event("hold refused", {"bridge.held": event.held})
            await reports.publish(
                HoldFailed(
                    call_id=call_id,
                    held=event.held,
                    status=event.status,
                    reason=event.reason,
                )
            )
        elif isinstance(event, DtmfIn):
            await reports.publish(DtmfReceived(call_id=call_id, digit=event.digit, method="info"))
        elif isinstance(event, Ended):
            # The browser gets an ``error`` too when no target could be reached.
            code = errors.UNREACHABLE if event.cause == errors.UNREACHABLE else ""
            return CallEnded(
                call_id=call_id,
                cause=event.cause,
                status=event.status,
                reason=event.reason,
                code=code,
            )


async def _session_changed(
    call_id: str,
    handle: CallHandle,
    event: SessionChanged,
    spans: SipSpans,
    reports: CallReports,
    records: CallRecords,
) -> None:
    attributes = {
        "bridge.local_hold": event.local_hold,
        "bridge.remote_hold": event.remote_hold,
    }
    if event.transferred_to:
        # The registry must name the new dialog: a survivor would BYE the old one.
        spans.call.add_event("transferred", attributes)
        await records.confirmed(call_id, handle)
    else:
        spans.call.add_event("session updated", attributes)
    await reports.publish(
        SessionUpdated(
            call_id=call_id,
            remote_sdp=event.remote_sdp,
            local_hold=event.local_hold,
            remote_hold=event.remote_hold,
            transferred_to=event.transferred_to,
        )
    )
