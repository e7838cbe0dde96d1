"""The calls one SIP agent holds, by bridge call id, and what their peers ask of them.

A call is ringing (inbound, not answered yet: its ``Ringing`` core hears the
bus through an inbox), answered or dialing (its ``CallHandle`` takes hang-up,
hold and DTMF), or not started yet (an outbound call still resolving: a
hang-up waits here for the INVITE). Signaling's and media's events for a
call arrive at ``on_peer_event``; once an inbound call is answered, a slow
instance's late ``RingingStarted`` (or ``AcceptRequested``) hears the
``CallClaimed`` of the winner again. ``end_ringing`` is an operator's
hang-up of a call still ringing here (``bridge calls hangup``).

A ringing call hung up here before its answer gets a final response that
says why (``InboundCall.hangup``): the service stopping (``shutdown`` hangs
up ``normal``) 503, a failure 480 or 500; 487 is only for the caller's own CANCEL.
"""

from __future__ import annotations

import asyncio
import logging

from proto import errors
from proto.events import (
    AnyEvent,
    CallEnded,
    DtmfRequested,
    HangupRequested,
    HoldFailed,
    HoldRequested,
    MediaFailed,
)
from services.sipagent.call_reports import CallReports
from services.sipagent.handle import CallHandle
from services.sipagent.ringing import BusEvent as RingEvent
from services.sipagent.ringing import late_claim
from services.sipagent.spans import SipSpans

log = logging.getLogger(__name__)

Inbox = asyncio.Queue[AnyEvent]
"The bus events of a ringing call, for its ``Ringing`` core."


class LiveCalls:
    """The handles, rings, spans and early hang-ups of the calls in progress."""

    def __init__(self, reports: CallReports) -> None:
        self._reports = reports
        self._handles: dict[str, CallHandle] = {}
        "Calls dialing or answered."
        self._ringing: dict[str, tuple[CallHandle, Inbox]] = {}
        "Inbound calls not answered yet: their handle, and the bus events for their ring."
        self._winners: dict[str, str] = {}
        "Inbound calls answered: the signaling instance that won each."
        self._spans: dict[str, SipSpans] = {}
        self._early_hangups: dict[str, str] = {}
        "Hang-ups that arrived before the INVITE went out, by call id."
        self._running: set[str] = set()
        "Every call started and not ended."

    def start(self, call_id: str) -> None:
        self._running.add(call_id)

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._running

    def trace(self, call_id: str, spans: SipSpans) -> None:
        self._spans[call_id] = spans

    def dialing(self, call_id: str, handle: CallHandle) -> None:
        """An outbound call's INVITE went out: hang-ups, hold and DTMF go to ``handle``."""
        self._handles[call_id] = handle

    def ring(self, call_id: str, handle: CallHandle) -> Inbox:
        """An inbound call starts ringing; the inbox of its ``Ringing`` core."""
        inbox: Inbox = asyncio.Queue()
        self._ringing[call_id] = (handle, inbox)
        return inbox

    def answered(self, call_id: str, winner: str) -> None:
        """An inbound call answered (``winner``: the signaling instance that claimed it):
        from here on it is a call like an outbound one."""
        handle, _ = self._ringing.pop(call_id)
        self._handles[call_id] = handle
        self._winners[call_id] = winner

    def end_ringing(self, call_id: str, cause: str) -> bool:
        """Hang up a call still ringing here, by its ``Ringing`` core (480 to the trunk,
        ``CallEnded`` with ``cause`` to every ringing browser); whether one was."""
        ringing = self._ringing.get(call_id)
        if ringing is None:
            return False
        ringing[1].put_nowait(HangupRequested(call_id=call_id, cause=cause))
        return True

    def early_hangup(self, call_id: str) -> str | None:
        """The cause of a hang-up that came before the INVITE went out (taken once)."""
        return self._early_hangups.pop(call_id, None)

    def hung_up_early(self, call_id: str) -> bool:
        return call_id in self._early_hangups

    def forget(self, call_id: str) -> None:
        """The call ended: let go of all of it."""
        self._running.discard(call_id)
        self._spans.pop(call_id, None)
        self._handles.pop(call_id, None)
        self._ringing.pop(call_id, None)
        self._winners.pop(call_id, None)
        self._early_hangups.pop(call_id, None)

    def abandon(self, call_id: str) -> None:
        """Hang up the SIP side of a call that failed, if it got that far."""
        handle = self._handles.pop(call_id, None)
        ringing = self._ringing.pop(call_id, None)
        if handle is None and ringing is not None:
            handle = ringing[0]
        if handle is None:
            return
        try:
            handle.hangup(errors.INTERNAL)
        except Exception:
            log.exception("%s: cannot hang up the failed call", call_id)

    def hangup(self, call_id: str, cause: str) -> None:
        spans = self._spans.get(call_id)
        if spans is not None:
            spans.call.add_event("hangup requested", {"bridge.cause": cause})
        handle = self._handles.get(call_id)
        ringing = self._ringing.get(call_id)
        if handle is not None:
            handle.hangup(cause)
        elif ringing is not None:
            # The trunk gets a final response saying why (InboundCall.hangup); Ended follows.
            ringing[0].hangup(cause)
        elif call_id in self._running:
            self._early_hangups.setdefault(call_id, cause)

    def hangup_all(self, cause: str) -> None:
        for call_id in list(self._running):
            self.hangup(call_id, cause)

    async def on_peer_event(self, event: AnyEvent) -> None:
        """An event of signaling or media about one of the calls."""
        ringing = self._ringing.get(event.call_id)
        if ringing is not None and isinstance(event, RingEvent):
            ringing[1].put_nowait(event)  # its Ringing core decides
            return
        winner = self._winners.get(event.call_id, "")
        claim = late_claim(event, event.call_id, winner)
        if claim is not None:
            await self._reports.publish(claim)  # a slow instance rang after the answer
            return
        if isinstance(event, HangupRequested | CallEnded):
            self.hangup(event.call_id, event.cause)
        elif isinstance(event, MediaFailed):
            self.hangup(event.call_id, errors.MEDIA_FAILED)
        elif isinstance(event, HoldRequested):
            handle = self._handles.get(event.call_id)
            if handle is None:
                await self._reports.publish(
                    HoldFailed(
                        call_id=event.call_id,
                        held=event.held,
                        reason="The call is not answered",
                    )
                )
            else:
                handle.hold(event.held)
        elif isinstance(event, DtmfRequested):
            handle = self._handles.get(event.call_id)
            if handle is not None:
                handle.send_dtmf(event.digits, event.duration_ms)
