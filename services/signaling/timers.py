"""The timers of a browser call: how long each waiting state may last, and what its end means.

Every state of a call but ``IDLE`` and ``CLOSED`` has a timer (``states.py``
says which). ``EXPIRY`` names what a timer's end means in each state and
``Waits`` says how long each wait is; the call (``call.py``) acts on them.
Pure data and arithmetic: no clock is read here.
"""

from __future__ import annotations

import enum

from services.common.settings import Settings
from services.signaling.caller import Caller
from services.signaling.pickup import ANSWER_TIMEOUT
from services.signaling.ringing import CLAIM_TIMEOUT
from services.signaling.states import State

HANGUP_GRACE = 5.0
"Seconds to wait for ``CallEnded`` after asking for a hang-up."
SHUTDOWN_GRACE = 2.0
"The same wait when the service is stopping."


class Expiry(enum.Enum):
    """What it means when a state's timer runs out."""

    NOT_ADMITTED = "not_admitted"
    "The limits never answered: the attempt is refused (``setup_failed``)."
    NOT_CLAIMED = "not_claimed"
    "No SIP agent handed over the accepted call: it ends (``setup_failed``)."
    NO_MEDIA_WORKER = "no_media_worker"
    "No media worker took the call: set-up fails."
    NO_SIP_AGENT = "no_sip_agent"
    "No SIP agent took the dial: set-up fails."
    NO_FINAL_ANSWER = "no_final_answer"
    "The SIP agent's own timers should have ended the call by now: hang up (``timeout``)."
    TIME_LIMIT = "time_limit"
    "The connected call reached its time limit: hang up (``max_duration``)."
    END_UNREPORTED = "end_unreported"
    "Nobody reported the end of the call after a hang-up: say it ourselves."


EXPIRY = {
    State.ADMITTING: Expiry.NOT_ADMITTED,
    State.ACCEPTING: Expiry.NOT_CLAIMED,
    State.WAITING_MEDIA: Expiry.NO_MEDIA_WORKER,
    State.WAITING_INVITE: Expiry.NO_SIP_AGENT,
    State.INVITING: Expiry.NO_FINAL_ANSWER,
    State.RINGING: Expiry.NO_FINAL_ANSWER,
    State.ANSWERING: Expiry.NO_FINAL_ANSWER,
    State.CONNECTED: Expiry.TIME_LIMIT,
    State.HANGING_UP: Expiry.END_UNREPORTED,
}
"What the end of each state's timer means; a state not here has no timer."


class Waits:
    """How long a call of ``caller`` waits in each state, in seconds."""

    claim = CLAIM_TIMEOUT
    "``ACCEPTING``: from ``AcceptRequested`` to ``CallClaimed``."
    hangup = HANGUP_GRACE
    "``HANGING_UP``: from ``HangupRequested`` to ``CallEnded``."

    def __init__(self, settings: Settings, caller: Caller) -> None:
        self._settings = settings
        self._caller = caller

    @property
    def setup(self) -> float:
        """``ADMITTING``, ``WAITING_MEDIA``, ``WAITING_INVITE``: one set-up step."""
        return self._settings.setup_timeout

    @property
    def invite(self) -> float:
        """``INVITING``, ``RINGING``: a safety net over the SIP agent's own INVITE timer."""
        return self._settings.invite_timeout + self._settings.setup_timeout

    @property
    def answer(self) -> float:
        """``ANSWERING``: the trunk's ACK of our 2xx, re-sent for up to 64*T1."""
        return self._settings.setup_timeout + ANSWER_TIMEOUT

    @property
    def duration(self) -> float:
        """``CONNECTED``: the call's time limit (the token's ``max_duration`` if lower)."""
        limit = self._settings.access.max_call_duration
        claims = self._caller.claims
        if claims is not None and claims.max_duration is not None:
            limit = min(limit, claims.max_duration)
        return limit
