"""Hold and DTMF during a connected call, between the browser and the bus: sans I/O.

``CallControls`` keeps what the page was told about hold and turns browser
requests into events and trunk-side events into browser messages. The
session owns one per call and does the sending.
"""

from __future__ import annotations

import logging

from proto import errors
from proto.events import DtmfReceived, DtmfRequested, HoldFailed, HoldRequested, SessionUpdated
from services.signaling import messages
from services.signaling.messages import Outgoing

log = logging.getLogger(__name__)


class CallControls:
    """The hold state of one call as the browser knows it."""

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        self.local_hold = False
        "The trunk is on hold at the browser's request (confirmed by a ``SessionUpdated``)."
        self.remote_hold = False
        "The trunk holds us."
        self._wanted = False
        "What the browser asked for last: a hold while one is wanted is a no-op."
        self.transferred_to = ""

    def hold(self, held: bool) -> HoldRequested | None:
        """The event for a hold (``held``) or resume request; None when already so."""
        if held == self._wanted:
            return None
        self._wanted = held
        return HoldRequested(call_id=self.call_id, held=held)

    def dtmf(self, digits: str) -> DtmfRequested:
        return DtmfRequested(call_id=self.call_id, digits=digits)

    def session_updated(self, event: SessionUpdated) -> list[Outgoing]:
        """What the browser is told about a changed session (maybe nothing)."""
        out: list[Outgoing] = []
        if (event.local_hold, event.remote_hold) != (self.local_hold, self.remote_hold):
            if event.local_hold != self.local_hold:
                self._wanted = event.local_hold
            self.local_hold, self.remote_hold = event.local_hold, event.remote_hold
            log.info(
                "call %s: hold local=%s remote=%s",
                self.call_id,
                event.local_hold,
                event.remote_hold,
            )
            out.append(messages.hold_changed(event.local_hold, event.remote_hold))
        if event.transferred_to and event.transferred_to != self.transferred_to:
            self.transferred_to = event.transferred_to
            log.info("call %s: transferred to %s", self.call_id, event.transferred_to)
            out.append(messages.transferred(event.transferred_to))
        return out

    def hold_failed(self, event: HoldFailed) -> Outgoing:
        """The refusal, for the browser; the hold state stays what it was."""
        self._wanted = self.local_hold
        what = "hold" if event.held else "resume"
        detail = event.reason or (f"SIP {event.status}" if event.status else "no answer")
        log.info("call %s: %s refused: %s", self.call_id, what, detail)
        return messages.error(errors.HOLD_FAILED, f"the other side refused to {what}: {detail}")

    @staticmethod
    def dtmf_received(event: DtmfReceived) -> Outgoing:
        return messages.dtmf(event.digit, event.method)
