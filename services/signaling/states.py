"""The states of a browser call (see ``call.py``; ``session.py`` holds the socket)."""

from __future__ import annotations

import enum


class State(enum.Enum):
    IDLE = "idle"
    "No call; waiting for an offer (no timer: a person may take their time)."
    ADMITTING = "admitting"
    "An offer passed the dial plan, or an accept found its call ringing; the limits are asked."
    ACCEPTING = "accepting"
    "An inbound call accepted: AcceptRequested sent; waiting for CallClaimed (CLAIM_TIMEOUT)."
    WAITING_MEDIA = "waiting_media"
    "CallRequested sent; waiting for MediaPrepared (SETUP_TIMEOUT)."
    WAITING_INVITE = "waiting_invite"
    "DialRequested sent; waiting for InviteSent (SETUP_TIMEOUT)."
    INVITING = "inviting"
    "A SIP agent sent the INVITE (safety timer: INVITE_TIMEOUT + SETUP_TIMEOUT)."
    RINGING = "ringing"
    "The trunk sent 180/183 (same safety timer)."
    ANSWERING = "answering"
    "Inbound: AnswerRequested sent; waiting for CallAnswered (SETUP_TIMEOUT + ANSWER_TIMEOUT)."
    CONNECTED = "connected"
    "The trunk answered (MAX_CALL_DURATION, or the token's ``max_duration``)."
    HANGING_UP = "hanging_up"
    "HangupRequested sent; waiting for CallEnded (HANGUP_GRACE)."
    CLOSED = "closed"
    "The socket is gone and no call is left; the session is finished."


END_STATES = frozenset({State.CLOSED})
IN_CALL = frozenset(
    {
        State.ACCEPTING,
        State.WAITING_MEDIA,
        State.WAITING_INVITE,
        State.INVITING,
        State.RINGING,
        State.ANSWERING,
        State.CONNECTED,
        State.HANGING_UP,
    }
)
"States of a session that holds a call."
