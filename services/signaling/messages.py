"""The browser WebSocket protocol: parsing what the page sends, building replies.

Pure functions and small records, no I/O. ``docs/protocol.md`` is the
reference for every message and error code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from proto import errors
from proto.events import CallStatsReported
from services.common.custom_headers import HeaderError, parse_headers

MAX_MESSAGE_BYTES = 64 * 1024
"Largest text message the session accepts; larger ones get ``too_large``."

# Error codes of ``{"type": "error"}`` messages that only the WebSocket uses;
# set-up failures reuse the codes of ``proto.errors``.
BAD_JSON = "bad_json"
BAD_MESSAGE = "bad_message"
UNKNOWN_TYPE = "unknown_type"
TOO_LARGE = "too_large"
CALL_IN_PROGRESS = "call_in_progress"
NO_CALL = "no_call"
BAD_DESTINATION = "bad_destination"
NO_DESTINATION = "no_destination"
BAD_HEADERS = errors.BAD_HEADERS
UNKNOWN_DESTINATION = errors.UNKNOWN_DESTINATION
BAD_DTMF = errors.BAD_DTMF
NOT_CONNECTED = errors.NOT_CONNECTED
HOLD_FAILED = errors.HOLD_FAILED

MAX_DTMF_DIGITS = 32

# A SIP user part (RFC 3261 unreserved and user-unreserved characters), which
# covers numbers like +15551234567 and names like support or ai_assistant.
_DESTINATION = re.compile(r"^[A-Za-z0-9+\-_.!~*'()&=$,;?/#]{1,64}$")
_DTMF = re.compile(rf"[0-9*#A-D]{{1,{MAX_DTMF_DIGITS}}}")


class MessageError(Exception):
    """The browser sent something the protocol does not allow."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Offer:
    """``{"type": "offer"}``: start a call."""

    sdp: str
    destination: str
    "As sent; empty when the page left it out."
    headers: dict[str, str] = field(default_factory=dict)
    "Custom SIP headers, checked for syntax and size (not yet against the route)."


@dataclass(frozen=True, slots=True)
class Hangup:
    """``{"type": "hangup"}``: end the current call."""


@dataclass(frozen=True, slots=True)
class Ice:
    """``{"type": "ice"}``: a trickled ICE candidate."""

    candidate: str
    "The ``candidate:`` line; empty means end of candidates."
    sdp_mid: str | None
    sdp_mline_index: int | None


@dataclass(frozen=True, slots=True)
class Hold:
    """``{"type": "hold"}`` or ``{"type": "unhold"}``: hold the trunk, or resume."""

    held: bool


@dataclass(frozen=True, slots=True)
class Dtmf:
    """``{"type": "dtmf"}``: digits for the trunk."""

    digits: str
    "1 to 32 of ``0-9``, ``*``, ``#``, ``A-D`` (lower-case letters are taken as upper)."


BrowserMessage = Offer | Hangup | Ice | Hold | Dtmf


def is_valid_destination(destination: str) -> bool:
    return bool(_DESTINATION.match(destination))


def parse_message(text: str) -> BrowserMessage:
    """Parse one text frame from the browser, or raise ``MessageError``."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if len(text) > MAX_MESSAGE_BYTES or size > MAX_MESSAGE_BYTES:
        raise MessageError(TOO_LARGE, f"message over {MAX_MESSAGE_BYTES} bytes")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise MessageError(BAD_JSON, "message is not valid JSON") from None
    if not isinstance(data, dict):
        raise MessageError(BAD_MESSAGE, "message must be a JSON object")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise MessageError(BAD_MESSAGE, "message needs a string field 'type'")
    parser = _PARSERS.get(kind)
    if parser is None:
        raise MessageError(UNKNOWN_TYPE, f"unknown message type {kind[:40]!r}")
    return parser(data)


def _parse_offer(data: dict[str, Any]) -> Offer:
    sdp = data.get("sdp")
    if not isinstance(sdp, str) or not sdp.startswith("v=0") or not _unicode(sdp):
        raise MessageError(BAD_MESSAGE, "offer needs an SDP string 'sdp' starting with v=0")
    destination = data.get("destination")
    if destination is None:
        destination = ""
    if not isinstance(destination, str) or not _unicode(destination):
        raise MessageError(BAD_MESSAGE, "'destination' must be a string")
    try:
        headers = parse_headers(data.get("headers"))
    except HeaderError as exc:
        raise MessageError(BAD_HEADERS, str(exc)) from None
    return Offer(sdp=sdp, destination=destination.strip(), headers=headers)


def _unicode(text: str) -> bool:
    """Whether ``text`` is valid Unicode: a JSON escape such as ``\\ud800`` decodes to a lone
    surrogate, which no UTF-8 holds, so it could be neither published nor logged."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _parse_hangup(data: dict[str, Any]) -> Hangup:
    return Hangup()


def _parse_ice(data: dict[str, Any]) -> Ice:
    candidate = data.get("candidate")
    if candidate is None:
        candidate = ""
    if not isinstance(candidate, str) or not _unicode(candidate):
        raise MessageError(BAD_MESSAGE, "'candidate' must be a string or null")
    sdp_mid = data.get("sdpMid")
    if sdp_mid is not None and (not isinstance(sdp_mid, str) or not _unicode(sdp_mid)):
        raise MessageError(BAD_MESSAGE, "'sdpMid' must be a string or null")
    index = data.get("sdpMLineIndex")
    # bool is an int in Python; JSON true is not an m-line index.
    if index is not None and (not isinstance(index, int) or isinstance(index, bool) or index < 0):
        raise MessageError(BAD_MESSAGE, "'sdpMLineIndex' must be a non-negative integer or null")
    return Ice(candidate=candidate, sdp_mid=sdp_mid, sdp_mline_index=index)


def _parse_hold(data: dict[str, Any]) -> Hold:
    return Hold(held=True)


def _parse_unhold(data: dict[str, Any]) -> Hold:
    return Hold(held=False)


def _parse_dtmf(data: dict[str, Any]) -> Dtmf:
    digits = data.get("digits")
    if not isinstance(digits, str) or not _DTMF.fullmatch(digits.upper()):
        raise MessageError(BAD_DTMF, f"'digits' must be 1-{MAX_DTMF_DIGITS} of 0-9, *, #, A-D")
    return Dtmf(digits=digits.upper())


_PARSERS: dict[str, Callable[[dict[str, Any]], BrowserMessage]] = {
    "offer": _parse_offer,
    "hangup": _parse_hangup,
    "ice": _parse_ice,
    "hold": _parse_hold,
    "unhold": _parse_unhold,
    "dtmf": _parse_dtmf,
}


# --- bridge → browser ----------------------------------------------------------

Outgoing = dict[str, object]


def answer(sdp: str) -> Outgoing:
    return {"type": "answer", "sdp": sdp}


def ringing(early_media: bool) -> Outgoing:
    message: Outgoing = {"type": "ringing"}
    if early_media:
        message["early_media"] = True
    return message


def connected() -> Outgoing:
    return {"type": "connected"}


def ended(status: int | None, reason: str, cause: str) -> Outgoing:
    return {"type": "ended", "status": status, "reason": reason, "cause": cause}


def hold_changed(local: bool, remote: bool) -> Outgoing:
    return {"type": "hold_changed", "local": local, "remote": remote}


def transferred(target: str) -> Outgoing:
    return {"type": "transferred", "target": target}


def dtmf(digit: str, method: str) -> Outgoing:
    return {"type": "dtmf", "digit": digit, "method": method}


def stats(event: CallStatsReported) -> Outgoing:
    """The call's quality as the media worker measured it (its ``CallStatsReported``)."""
    legs: dict[str, object] = {}
    for name, leg in (("browser", event.browser), ("trunk", event.trunk)):
        if leg is not None:
            legs[name] = {
                "codec": leg.codec,
                "mos": leg.mos,
                "loss": leg.loss,
                "jitter_ms": leg.jitter_ms,
                "rtt_ms": leg.rtt_ms,
            }
    return {"type": "stats", "passthrough": event.passthrough, **legs}


def error(code: str, message: str) -> Outgoing:
    return {"type": "error", "code": code, "message": message}
