"""What a browser session needs to take calls from the trunk: pure rules and records.

Who a socket may listen as, the ``Desk`` it asks about the calls ringing it
(``Switchboard`` in production), and the events of an accepted call. The
session (``session.py``) does the sending; nothing here keeps state.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

from proto.events import AcceptRequested, AnswerRequested, CallArrived, CallRequested, MediaPrepared
from proto.fleet import CallRecord
from services.signaling import messages
from services.signaling.attempt import Attempt
from services.signaling.caller import Caller
from services.signaling.destinations import Destination
from services.signaling.messages import Listen, MessageError

ANSWER_TIMEOUT = 32.0
"""Seconds from ``AnswerRequested`` to ``CallAnswered``, past ``SETUP_TIMEOUT``: the SIP
agent re-sends its 2xx for up to 64*T1 (32 s) waiting for the trunk's ACK."""


class Desk(Protocol):
    """The calls ringing this instance's sockets (``switchboard.Switchboard``)."""

    def listen(self, socket: str, user: str, now: float) -> None: ...

    def unlisten(self, socket: str, now: float) -> None: ...

    def socket_closed(self, socket: str, now: float) -> None: ...

    def ringing(self, socket: str, call_id: str) -> CallArrived | None: ...

    def accept(self, socket: str, call_id: str, now: float) -> bool: ...

    def reject(self, socket: str, call_id: str, now: float) -> bool: ...

    def withdraw(self, socket: str, call_id: str, now: float) -> None: ...

    def claimed(self, socket: str, call_id: str, now: float) -> None: ...


def listening_user(message: Listen, caller: Caller) -> str:
    """Who a ``listen`` makes the socket listen as, or ``MessageError``.

    With tokens on, the token's ``sub`` and nobody else: ``user`` may be left
    out or repeat it (``forbidden`` otherwise). With tokens off the page names
    itself: ``user`` is required (its syntax is checked by the parser).
    """
    identity = caller.identity
    if identity is not None:
        if message.user is not None and message.user != identity:
            raise MessageError(messages.FORBIDDEN, "you may listen only as your token's user")
        return identity
    if message.user is None:
        raise MessageError(messages.BAD_USER, "listen needs a 'user' (there are no tokens here)")
    return message.user


def attempt(arrival: CallArrived, caller: Caller, user: str) -> Attempt:
    """The audit's view of an accepted call: the DID as the destination, the trunk's caller."""
    called = arrival.called
    target = Destination(given=called, number=called, trunk=arrival.trunk, headers={})
    return Attempt(
        arrival.call_id,
        caller,
        called,
        target,
        direction="inbound",
        user=user,
        peer=arrival.caller,
    )


def accept_requested(arrival: CallArrived, instance_id: str, user: str) -> AcceptRequested:
    return AcceptRequested(call_id=arrival.call_id, signaling_id=instance_id, identity=user)


def call_requested(arrival: CallArrived, offer_sdp: str, instance_id: str) -> CallRequested:
    """What media gets for an accepted call: both offers, the caller as the destination."""
    return CallRequested(
        call_id=arrival.call_id,
        offer_sdp=offer_sdp,
        destination=arrival.caller,
        signaling_id=instance_id,
        trunk=arrival.trunk,
        direction="inbound",
        trunk_offer_sdp=arrival.offer_sdp,
    )


def answer_requested(event: MediaPrepared) -> AnswerRequested:
    """What the SIP agent gets once media is ready: the answer for the trunk's 2xx."""
    return AnswerRequested(
        call_id=event.call_id, media_id=event.media_id, answer_sdp=event.trunk_answer_sdp
    )


def call_record(request: CallRequested, attempt: Attempt | None, wall: float) -> CallRecord:
    """Signaling's record of an accepted call, as it publishes its ``CallRequested``."""
    return CallRecord(
        call_id=request.call_id,
        state="setup",
        updated_at=wall,
        signaling_id=request.signaling_id,
        direction="inbound",
        identity=(attempt.user or "") if attempt is not None else "",
        caller=request.destination,
        callee=attempt.target.number if attempt is not None and attempt.target else "",
        trunk=request.trunk,
        started_at=wall,
    )


def joined(record: CallRecord, ours: CallRecord) -> CallRecord:
    """The call's record (maybe written by its SIP agent as it rang) with signaling's part.

    What the SIP agent wrote stays (its id, when the INVITE came); a call that a
    survivor is reaping stays so.
    """
    return msgspec.structs.replace(
        record,
        state=record.state if record.state == "reaping" else "setup",
        updated_at=ours.updated_at,
        signaling_id=ours.signaling_id,
        direction="inbound",
        identity=ours.identity,
        caller=record.caller or ours.caller,
        callee=record.callee or ours.callee,
        trunk=record.trunk or ours.trunk,
        started_at=record.started_at or ours.started_at,
    )
