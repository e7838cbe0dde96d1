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


@dataclass(frozen=True)
class SessionChanged:
    """The trunk's SDP or the hold state changed and the change was accepted."""

    remote_sdp: str
    local_hold: bool = False
    remote_hold: bool = False
    transferred_to: str = ""
    "Set when a transfer connected the call to this SIP URI."


@dataclass(frozen=True)
class HoldRefused:
    """Our hold or resume re-INVITE failed; the session is as it was."""

    held: bool
    status: int | None = None
    reason: str = ""


@dataclass(frozen=True)
class DtmfIn:
    """The trunk sent a digit by SIP INFO."""

    digit: str


@dataclass(frozen=True)
class TransferRequested:
    """The trunk's REFER was accepted (202): call ``target`` instead."""

    target: str
    "The Refer-To URI, its embedded headers removed."


CallEvent = Progress | Answered | Ended | SessionChanged | HoldRefused | DtmfIn | TransferRequested
