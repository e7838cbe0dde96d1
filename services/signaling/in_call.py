"""The connected phase of a browser call: hold, DTMF, the trunk's news and call stats.

``InCall`` turns the browser's ``hold`` and ``dtmf`` into events for the
call's agents and the trunk side's ``SessionUpdated``, ``HoldFailed``,
``DtmfReceived`` and ``CallStatsReported`` into browser messages; what the
page was told about hold is ``CallControls``' (``controls.py``).
"""

from __future__ import annotations

from proto import subjects
from proto.events import CallStatsReported, DtmfReceived, HoldFailed, SessionUpdated
from services.signaling import messages
from services.signaling.controls import CallControls
from services.signaling.messages import Dtmf, Hold, MessageError
from services.signaling.outbox import Outbox

TrunkNews = SessionUpdated | HoldFailed | DtmfReceived
"What the trunk side reports during a call, for the browser."


def not_connected(message: Hold | Dtmf) -> MessageError:
    """The refusal of a control sent without a connected call."""
    what = "DTMF" if isinstance(message, Dtmf) else "hold"
    return MessageError(messages.NOT_CONNECTED, f"{what} needs a connected call")


class InCall:
    """One connected call's controls, between its browser and the bus."""

    def __init__(self, call_id: str, outbox: Outbox) -> None:
        self._controls = CallControls(call_id)
        self._outbox = outbox

    def request(self, message: Hold | Dtmf) -> None:
        """The browser asks for a hold, a resume or digits."""
        controls = self._controls
        if isinstance(message, Dtmf):
            event = controls.dtmf(message.digits)
            self._outbox.publish(subjects.call_events(controls.call_id, "signaling"), event)
            return
        hold = controls.hold(message.held)
        if hold is not None:
            self._outbox.publish(subjects.call_events(controls.call_id, "signaling"), hold)

    def news(self, event: TrunkNews) -> None:
        """What the trunk side did, as the browser is told it."""
        controls = self._controls
        if isinstance(event, SessionUpdated):
            for message in controls.session_updated(event):
                self._outbox.send(message)
        elif isinstance(event, HoldFailed):
            self._outbox.send(controls.hold_failed(event))
        else:
            self._outbox.send(controls.dtmf_received(event))

    def stats(self, event: CallStatsReported) -> None:
        self._outbox.send(messages.stats(event))
