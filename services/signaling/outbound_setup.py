"""The set-up steps of a call the browser places: its offer judged, media, then the dial.

``judge_offer`` says whether an offer may go on (token, dial plan, custom
headers); ``OutboundSetup`` builds the events of the steps after the
admission: ``CallRequested`` for media, then, once media prepared the call,
``DialRequested`` for a SIP agent. The call (``call.py``) sends them.
"""

from __future__ import annotations

from proto.events import CallRequested, DialRequested, MediaPrepared
from services.common.settings import Settings
from services.signaling.admission import TOKEN_EXPIRED, Refusal
from services.signaling.attempt import Attempt
from services.signaling.destinations import Destination, Refused, resolve
from services.signaling.messages import MessageError, Offer


def judge_offer(settings: Settings, attempt: Attempt, offer: Offer, now: float) -> Refusal | None:
    """Whether ``offer`` may ask the limits for a place: None, or why not.

    Sets ``attempt.target`` to where the call goes (or to what was refused,
    for the audit line).
    """
    caller = attempt.caller
    if caller.token_expired(now):
        return TOKEN_EXPIRED
    try:
        attempt.target = resolve(settings, offer.destination, offer.headers, caller.claims)
    except Refused as exc:
        attempt.target = Destination(offer.destination, exc.number, exc.trunk, {})
        return Refusal(exc.code, exc.message)
    except MessageError as exc:
        return Refusal(exc.code, exc.message)
    return None


class OutboundSetup:
    """The steps of one outbound call to ``target``."""

    inbound = False

    def __init__(self, settings: Settings, target: Destination) -> None:
        self._settings = settings
        self._target = target

    @property
    def destination(self) -> str:
        """Who the call goes to: the number the dial plan chose."""
        return self._target.number

    def call_requested(self, call_id: str, offer_sdp: str) -> CallRequested:
        """What media gets once the limits admitted the call."""
        target = self._target
        return CallRequested(
            call_id=call_id,
            offer_sdp=offer_sdp,
            destination=target.number,
            signaling_id=self._settings.instance_id,
            headers=target.headers,
            trunk=target.trunk,
        )

    def dial_requested(self, event: MediaPrepared) -> DialRequested:
        """What a SIP agent gets once media prepared the call: the INVITE to send."""
        return DialRequested(
            call_id=event.call_id,
            destination=self._target.number,
            offer_sdp=event.trunk_offer_sdp,
            media_id=event.media_id,
            signaling_id=self._settings.instance_id,
            headers=self._target.headers,
        )
