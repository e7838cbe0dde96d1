"""What each service writes into a call's record, and when: pure functions.

Each returns the new record; the caller stores it with ``CallRegistry``
(``create`` for the first, ``update`` for the others). ``wall`` is the
writer's wall clock, ``time.time()``.
"""

from __future__ import annotations

import msgspec

from proto.fleet import CallRecord, SipDialogRecord
from proto.subjects import Source
from services.common.fleet.leases import Owner


def requested(
    call_id: str,
    signaling_id: str,
    wall: float,
    *,
    identity: str = "",
    callee: str = "",
    trunk: str = "",
) -> CallRecord:
    """Signaling, as it publishes the ``CallRequested`` of an outbound call.

    ``identity``: the browser's (also the caller); ``callee``: the destination;
    ``trunk``: the trunk it routes to.
    """
    return CallRecord(
        call_id=call_id,
        state="setup",
        updated_at=wall,
        signaling_id=signaling_id,
        direction="outbound",
        identity=identity,
        caller=identity,
        callee=callee,
        trunk=trunk,
        started_at=wall,
    )


def media_prepared(record: CallRecord, media_id: str, wall: float) -> CallRecord:
    """Signaling, on ``MediaPrepared``, before it publishes ``DialRequested``."""
    return _replace(record, media_id=media_id, updated_at=wall)


def inviting(
    record: CallRecord, sipagent_id: str, dialog: SipDialogRecord, wall: float
) -> CallRecord:
    """SIP agent, once the INVITE is sent, before it publishes ``InviteSent``."""
    state = record.state if record.state == "reaping" else "inviting"
    return _replace(record, state=state, sipagent_id=sipagent_id, dialog=dialog, updated_at=wall)


def confirmed(record: CallRecord, dialog: SipDialogRecord, wall: float) -> CallRecord:
    """SIP agent, once the 2xx is ACKed, before it publishes ``CallAnswered``."""
    state = record.state if record.state == "reaping" else "confirmed"
    answered = record.answered_at or wall
    return _replace(record, state=state, dialog=dialog, updated_at=wall, answered_at=answered)


def claimed(record: CallRecord, reaper: Owner, wall: float) -> CallRecord:
    """A survivor, to claim a dead instance's call (written with compare-and-set)."""
    service, instance_id = reaper
    return _replace(
        record, state="reaping", reaper_service=service, reaper_id=instance_id, updated_at=wall
    )


def reaper_of(record: CallRecord) -> Owner | None:
    """Who claimed the call, if anyone."""
    service = _SERVICES.get(record.reaper_service)
    if record.state != "reaping" or service is None:
        return None
    return (service, record.reaper_id)


_SERVICES: dict[str, Source] = {"signaling": "signaling", "media": "media", "sipagent": "sipagent"}


def _replace(record: CallRecord, **changes: object) -> CallRecord:
    return msgspec.structs.replace(record, **changes)


def involves(record: CallRecord, owner: Owner) -> bool:
    """Whether ``owner`` holds the call or claimed it."""
    service, instance_id = owner
    return record.owner(service) == instance_id or reaper_of(record) == owner
