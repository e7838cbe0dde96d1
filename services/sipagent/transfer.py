"""Blind transfer asked by the trunk: the call the SIP agent hosts, sans-I/O.

``TransferringCall`` runs the original call (``OutboundCall`` or
``InboundCall``) and, once its ``Referral`` accepted a REFER, a new
``OutboundCall`` to the Refer-To URI through the same trunk (new Call-ID,
the same SDP offer). On its 2xx the new call becomes the call and the old
dialog is ended with BYE; on its failure the trunk is told and the original
call goes on.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

from services.common.sip.dialog import Dialog
from services.common.sip.message import SipMessage
from services.sipagent.call_base import CallBase
from services.sipagent.events import (
    Answered,
    CallEvent,
    Ended,
    SessionChanged,
    TransferRequested,
)
from services.sipagent.trunk_sdp import is_held

log = logging.getLogger(__name__)


class TransferringCall:
    """One call as the SIP agent hosts it: the original dialog, or the one a REFER made."""

    def __init__(self, call: CallBase, place: Callable[[str], CallBase]) -> None:
        """``place(uri)``: a new, unstarted ``OutboundCall`` to ``uri`` through the same trunk."""
        self._active = call
        self._place = place
        self._attempt: CallBase | None = None
        self._target = ""
        self._retired: list[CallBase] = []
        "Calls replaced or failed, kept until their SIP clean-up is done."
        self._held_end: Ended | None = None
        "The original call's end while a transfer attempt may still take over."
        self._events: deque[CallEvent] = deque()
        self.dropped: list[str] = []
        "Call-IDs of replaced or failed calls now done with, for the host to forget."
        self.call_id = call.call_id
        self.sip_call_id = call.sip_call_id

    @property
    def request_uri(self) -> str:
        return self._active.request_uri

    @property
    def dialog(self) -> Dialog | None:
        return self._active.dialog

    @property
    def call(self) -> CallBase:
        """The call now in place (the new one after a transfer)."""
        return self._active

    @property
    def sip_call_ids(self) -> list[str]:
        return [call.sip_call_id for call in self._calls()]

    def _calls(self) -> list[CallBase]:
        calls = [self._active, *self._retired]
        if self._attempt is not None:
            calls.append(self._attempt)
        return calls

    # --- driving -----------------------------------------------------------------

    def start(self, now: float) -> None:
        self._active.start(now)
        self._pump(now)

    def receive(self, message: SipMessage, now: float) -> None:
        for call in self._calls():
            if call.sip_call_id == message.call_id:
                call.receive(message, now)
                break
        self._pump(now)

    def hangup(self, cause: str, now: float) -> None:
        if self._attempt is not None:
            self._attempt.hangup(cause, now)
        self._active.hangup(cause, now)
        self._pump(now)

    def hold(self, held: bool, now: float) -> None:
        self._active.hold(held, now)
        self._pump(now)

    def send_dtmf(self, digits: str, duration_ms: int, now: float) -> None:
        self._active.send_dtmf(digits, duration_ms, now)
        self._pump(now)

    def handle_timer(self, now: float) -> None:
        for call in self._calls():
            deadline = call.get_timer()
            if deadline is not None and deadline <= now:
                call.handle_timer(now)
        self._pump(now)

    def get_timer(self) -> float | None:
        timers = [call.get_timer() for call in self._calls()]
        return min((t for t in timers if t is not None), default=None)

    def messages_to_send(self) -> list[SipMessage]:
        return [message for call in self._calls() for message in call.messages_to_send()]

    def next_event(self) -> CallEvent | None:
        return self._events.popleft() if self._events else None

    @property
    def finished(self) -> bool:
        return all(call.finished for call in self._calls())

    # --- events of the calls -----------------------------------------------------

    def _pump(self, now: float) -> None:
        while (event := self._active.next_event()) is not None:
            self._on_active(event, now)
        attempt = self._attempt
        while attempt is not None and (event := attempt.next_event()) is not None:
            self._on_attempt(attempt, event, now)
            attempt = self._attempt
        for call in self._retired:
            while call.next_event() is not None:
                pass  # a replaced call's end is not the call's end
        self.dropped.extend(call.sip_call_id for call in self._retired if call.finished)
        self._retired = [call for call in self._retired if not call.finished]

    def _on_active(self, event: CallEvent, now: float) -> None:
        if isinstance(event, TransferRequested):
            self._start_attempt(event.target, now)
        elif isinstance(event, Ended) and self._attempt is not None:
            # The referrer hung up first, as it may: the new call decides.
            self._held_end = event
        else:
            self._events.append(event)

    def _start_attempt(self, target: str, now: float) -> None:
        log.info("%s: transfer to %s", self.call_id, target)
        self._target = target
        self._attempt = self._place(target)
        self._attempt.start(now)

    def _on_attempt(self, attempt: CallBase, event: CallEvent, now: float) -> None:
        if isinstance(event, Answered):
            old = self._active
            old.notify_transfer(200, "OK", now)
            old.retire(now)
            self._retired.append(old)
            self._active, self._attempt = attempt, None
            self._held_end = None
            self._events.append(
                SessionChanged(event.sdp, False, is_held(event.sdp), transferred_to=self._target)
            )
            log.info("%s: transferred to %s", self.call_id, self._target)
        elif isinstance(event, Ended):
            log.info("%s: transfer to %s failed: %s", self.call_id, self._target, event.reason)
            self._active.notify_transfer(event.status or 503, event.reason or "Failed", now)
            self._retired.append(attempt)
            self._attempt = None
            if self._held_end is not None:
                held, self._held_end = self._held_end, None
                self._events.append(held)
        # Progress of the new call is not the browser's business: it is still connected.
