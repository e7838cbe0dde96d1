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
BAD_USER = "bad_user"
"A ``listen`` without a token named no user, or one not of 1-64 ``[A-Za-z0-9._@+-]``."
FORBIDDEN = "forbidden"
"A ``listen`` named a user other than the client token's ``sub``."
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
_USER = re.compile(r"[A-Za-z0-9._@+-]{1,64}")
_CALL_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


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


@dataclass(frozen=True, slots=True)
class Listen:
    """``{"type": "listen"}``: ring this socket for calls to a user."""

    user: str | None
    "As sent (checked for syntax); None when left out."


@dataclass(frozen=True, slots=True)
class Unlisten:
    """``{"type": "unlisten"}``: ring this socket no more."""


@dataclass(frozen=True, slots=True)
class Accept:
    """``{"type": "accept"}``: take a ringing call with the browser's offer."""

    call_id: str
    sdp: str


@dataclass(frozen=True, slots=True)
class Reject:
    """``{"type": "reject"}``: decline a ringing call."""

    call_id: str


BrowserMessage = Offer | Hangup | Ice | Hold | Dtmf | Listen | Unlisten | Accept | Reject


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


def _parse_listen(data: dict[str, Any]) -> Listen:
    user = data.get("user")
    if user is None:
        return Listen(user=None)
    if not isinstance(user, str) or not _USER.fullmatch(user):
        raise MessageError(
            BAD_USER, "'user' must be 1-64 of A-Z, a-z, 0-9, '.', '_', '@', '+', '-'"
        )
    return Listen(user=user)


def _parse_unlisten(data: dict[str, Any]) -> Unlisten:
    return Unlisten()


def _call_id(data: dict[str, Any]) -> str:
    call_id = data.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        raise MessageError(BAD_MESSAGE, "needs a string field 'call_id'")
    if not _CALL_ID.fullmatch(call_id):
        # No call has such an id: the same answer as for one that has ended.
        raise MessageError(NO_CALL, "no call with that 'call_id' rings here")
    return call_id


def _parse_accept(data: dict[str, Any]) -> Accept:
    call_id = _call_id(data)
    sdp = data.get("sdp")
    if not isinstance(sdp, str) or not sdp.startswith("v=0") or not _unicode(sdp):
        raise MessageError(BAD_MESSAGE, "accept needs an SDP string 'sdp' starting with v=0")
    return Accept(call_id=call_id, sdp=sdp)


def _parse_reject(data: dict[str, Any]) -> Reject:
    return Reject(call_id=_call_id(data))


_PARSERS: dict[str, Callable[[dict[str, Any]], BrowserMessage]] = {
    "offer": _parse_offer,
    "hangup": _parse_hangup,
    "ice": _parse_ice,
    "hold": _parse_hold,
    "unhold": _parse_unhold,
    "dtmf": _parse_dtmf,
    "listen": _parse_listen,
    "unlisten": _parse_unlisten,
    "accept": _parse_accept,
    "reject": _parse_reject,
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


def ended(status: int | None, reason: str, cause: str, call_id: str | None = None) -> Outgoing:
    """The end of a call; ``call_id`` is added for inbound calls (a socket may ring for several)."""
    message: Outgoing = {"type": "ended"}
    if call_id is not None:
        message["call_id"] = call_id
    message.update(status=status, reason=reason, cause=cause)
    return message


def listening(user: str | None) -> Outgoing:
    """Who the socket listens as now (None: nobody)."""
    return {"type": "listening", "user": user}


def incoming(call_id: str, caller: str, caller_name: str, called: str) -> Outgoing:
    """A call from the trunk rings this socket."""
    return {
        "type": "incoming",
        "call_id": call_id,
        "from": caller,
        "from_name": caller_name,
        "to": called,
    }


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
