"""What ``bridge calls`` asks the fleet, and what it is told.

Not call events: a request on ``subjects.call_stats_query()`` (empty body) is
answered by every media worker with one ``CallStatsReply``, the latest figures
of each call it carries. A ``HangupRequested`` on ``subjects.operator_hangup()``
is answered with one ``HangupAnswer`` by the signaling instance that holds the
call, or by the SIP agent holding an inbound call that still rings, and by no
other. Encoded and decoded only here.
"""

from __future__ import annotations

import msgspec

from proto.events import LegQuality


class DecodeError(ValueError):
    """Bytes that are not a valid reply."""


class MediaCallStats(msgspec.Struct, frozen=True, kw_only=True):
    """One call as its media worker last measured it."""

    call_id: str
    "The bridge's call id."
    passthrough: bool | None = None
    "True when payloads are relayed untouched; None before the first measurement."
    browser: LegQuality | None = None
    "The browser leg's figures; None before the first measurement (a few seconds)."
    trunk: LegQuality | None = None
    "The trunk leg's figures; None until the trunk's SDP is known."
    measured_at: float = 0.0
    "Wall clock (seconds since the epoch) of the measurement; 0 before the first."


class CallStatsReply(msgspec.Struct, frozen=True, kw_only=True, tag="calls.media"):
    """Every call one media worker carries."""

    instance_id: str
    "The media worker's ``INSTANCE_ID``."
    calls: list[MediaCallStats] = msgspec.field(default_factory=list)
    "One per call, by call id."
    sent_at: float = 0.0
    "Sender's wall clock (seconds since the epoch)."


class HangupAnswer(msgspec.Struct, frozen=True, kw_only=True, tag="calls.hangup"):
    """A signaling instance holds the call and is ending it (BYE, browser told), or a
    SIP agent holds it still ringing and is ending it (480 to the trunk, browsers told)."""

    call_id: str
    "The call being ended."
    signaling_id: str
    "The signaling instance that holds it; empty when a SIP agent answers."
    sipagent_id: str = ""
    "The SIP agent that holds it ringing (an inbound call no browser answered yet)."


_encoder = msgspec.json.Encoder()
_stats_decoder = msgspec.json.Decoder(CallStatsReply)
_hangup_decoder = msgspec.json.Decoder(HangupAnswer)


def encode(reply: CallStatsReply | HangupAnswer) -> bytes:
    return _encoder.encode(reply)


def decode_stats(data: bytes) -> CallStatsReply:
    try:
        return _stats_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise DecodeError(str(exc)) from exc


def decode_hangup(data: bytes) -> HangupAnswer:
    try:
        return _hangup_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise DecodeError(str(exc)) from exc
