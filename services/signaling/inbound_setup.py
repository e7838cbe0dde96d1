"""The pick-up steps of a call from the trunk that a browser accepted.

After the limits admitted the accept: the ``Desk`` (``switchboard.py``) says
whether the call still rings here, the SIP agent is asked for it
(``AcceptRequested``) and hands it to the first instance (``CallClaimed``);
media prepares it as for an outbound call, and the SIP agent answers the
trunk with media's SDP (``AnswerRequested``). ``InboundSetup`` keeps the
call's ``CallArrived`` and its place at the desk; the call (``call.py``)
does the sending and the waiting.
"""

from __future__ import annotations

import logging

from proto.events import (
    AcceptRequested,
    AnswerRequested,
    CallArrived,
    CallClaimed,
    CallRequested,
    MediaPrepared,
)
from services.common.settings import Settings
from services.signaling import pickup
from services.signaling.pickup import Desk

log = logging.getLogger(__name__)


class InboundSetup:
    """The steps of one accepted call from the trunk (``arrival``) on socket ``socket``."""

    inbound = True

    def __init__(
        self, settings: Settings, desk: Desk, socket: str, arrival: CallArrived, user: str
    ) -> None:
        self._settings = settings
        self._desk = desk
        self._socket = socket
        self._arrival = arrival
        self._user = user

    @property
    def destination(self) -> str:
        """Who the browser talks to: the trunk's caller."""
        return self._arrival.caller

    def accept(self, now: float) -> AcceptRequested | None:
        """The request to the SIP agent for the call; None when it stopped ringing
        here meanwhile (the browser was told how)."""
        if not self._desk.accept(self._socket, self._arrival.call_id, now):
            return None
        return pickup.accept_requested(self._arrival, self._settings.instance_id, self._user)

    def claimed(self, event: CallClaimed, offer_sdp: str, now: float) -> CallRequested | None:
        """What media gets once the SIP agent handed the call here; None when it
        went to another instance."""
        if event.signaling_id != self._settings.instance_id:
            return None
        log.info("call %s: claimed for this browser", event.call_id)
        self._desk.claimed(self._socket, event.call_id, now)
        return pickup.call_requested(self._arrival, offer_sdp, self._settings.instance_id)

    @staticmethod
    def answer_requested(event: MediaPrepared) -> AnswerRequested:
        """What the SIP agent gets once media prepared the call: the trunk's 2xx SDP."""
        return pickup.answer_requested(event)

    def withdraw(self, now: float) -> None:
        """The browser gave up before the call was handed over: the desk lets go of it."""
        self._desk.withdraw(self._socket, self._arrival.call_id, now)
