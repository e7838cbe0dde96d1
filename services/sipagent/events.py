"""What a call reports to the service: small records, mapped to proto events by the app."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """A 180 or 183 arrived."""

    status: int
    sdp: str | None = None
    "Early media SDP answer, when the response carried one."


@dataclass(frozen=True)
class Answered:
    """A 2xx arrived and was ACKed."""

    sdp: str


@dataclass(frozen=True)
class Ended:
    """The call is over (exactly one per call)."""

    cause: str
    status: int | None = None
    reason: str = ""


CallEvent = Progress | Answered | Ended
