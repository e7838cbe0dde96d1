"""RTP encodings in SDP: ``a=rtpmap`` records and the RFC 3551 static payload types. Pure."""

from __future__ import annotations

from dataclasses import dataclass

TELEPHONE_EVENT = "telephone-event"
"RFC 4733 DTMF events."


@dataclass(frozen=True, slots=True)
class RtpMap:
    """An ``a=rtpmap`` line: payload type to encoding name, clock rate and channels."""

    payload_type: int
    encoding: str
    "As written (``PCMU``, ``opus``, ``telephone-event``); compare without case."
    clock_rate: int
    channels: int | None = None
    "The encoding parameter; Opus is always ``opus/48000/2`` (RFC 7587), even for mono."

    @property
    def text(self) -> str:
        """``NAME/RATE[/CHANNELS]``, the value after the payload type."""
        suffix = f"/{self.channels}" if self.channels is not None else ""
        return f"{self.encoding}/{self.clock_rate}{suffix}"

    @property
    def key(self) -> str:
        """``NAME/RATE`` in upper case, to compare encodings across SDPs."""
        return f"{self.encoding.upper()}/{self.clock_rate}"


_STATIC = {
    0: RtpMap(0, "PCMU", 8000),
    3: RtpMap(3, "GSM", 8000),
    4: RtpMap(4, "G723", 8000),
    8: RtpMap(8, "PCMA", 8000),
    9: RtpMap(9, "G722", 8000),
    13: RtpMap(13, "CN", 8000),
    18: RtpMap(18, "G729", 8000),
}


def static_rtpmap(pt: int) -> RtpMap | None:
    """The RFC 3551 encoding of a static audio payload type (usable without an rtpmap)."""
    return _STATIC.get(pt)
