"""Custom SIP headers: the ones a trunk adds to every INVITE and the ones a browser asks for.

Pure checks shared by the providers file (static headers) and signaling (the
browser's ``headers``): names are SIP tokens, values carry no control
character (no header injection), sizes are bounded, and the headers the
bridge builds itself are never taken from outside.
"""

from __future__ import annotations

import json
import re

MAX_HEADERS = 16
"Custom headers one call may carry from the browser."
MAX_VALUE_BYTES = 1024
"Largest value of one custom header, in UTF-8 bytes."
MAX_TOTAL_BYTES = 4096
"Largest sum of names and values of a call's custom headers, in UTF-8 bytes."
MAX_NAME_LENGTH = 64

# RFC 3261 25.1 token: the characters a header name may hold.
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
# Control characters (C0, DEL) have no place in a header value: CR/LF would
# start a new header (header injection), NUL truncates in C parsers.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# Headers the bridge builds itself: never taken from a file or a browser.
RESERVED = frozenset(
    name.lower()
    for name in (
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Max-Forwards",
        "Content-Type",
        "Content-Length",
        "Content-Encoding",
        "Authorization",
        "Proxy-Authorization",
        "Route",
        "Record-Route",
        "User-Agent",
        "Allow",
        "Expires",
        "Require",
        "Supported",
        "Proxy-Require",
    )
)
# Compact forms (RFC 3261 7.3.3) of the reserved names.
RESERVED_COMPACT = frozenset({"v", "f", "t", "i", "m", "c", "l", "e", "k", "s"})


class HeaderError(ValueError):
    """A custom header is refused; the message names it (never its value)."""


def is_token(name: str) -> bool:
    """Whether ``name`` is an RFC 3261 token (a header or trunk name)."""
    return bool(_TOKEN.fullmatch(name))


def header_value(value: object) -> str:
    """A header value as it goes on the wire: text as is, anything else as compact JSON."""
    if isinstance(value, str):
        return value.strip()
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except (RecursionError, ValueError):
        raise HeaderError("a header value is nested too deep") from None


def check_header(name: str, value: str) -> None:
    """Raise ``HeaderError`` unless ``name: value`` is a safe SIP header line."""
    if not isinstance(name, str) or not _TOKEN.fullmatch(name) or len(name) > MAX_NAME_LENGTH:
        shown = name[:MAX_NAME_LENGTH] if isinstance(name, str) else type(name).__name__
        raise HeaderError(
            f"header name {shown!r} is not a SIP token (letters, digits, -.!%*_+`'~; "
            f"up to {MAX_NAME_LENGTH})"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise HeaderError(f"header {name} is not valid Unicode") from None
    if _CONTROL.search(value):
        raise HeaderError(f"header {name} holds a control character (CR, LF, NUL, …)")
    if len(value.encode("utf-8")) > MAX_VALUE_BYTES:
        raise HeaderError(f"header {name} is over {MAX_VALUE_BYTES} bytes")


def parse_headers(raw: object) -> dict[str, str]:
    """The browser's ``headers`` object as checked header lines; ``HeaderError`` if refused.

    Values are text, or JSON (object, array, number, boolean) sent as compact
    JSON. The messages name headers, never their values.
    """
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise HeaderError("'headers' must be an object of header names to values")
    if len(raw) > MAX_HEADERS:
        raise HeaderError(f"at most {MAX_HEADERS} headers")
    headers: dict[str, str] = {}
    seen: set[str] = set()
    total = 0
    for name, value in raw.items():
        if value is None:
            raise HeaderError(f"header {str(name)[:MAX_NAME_LENGTH]} has no value")
        text = header_value(value)
        check_header(name, text)
        if name.lower() in seen:
            raise HeaderError(f"header {name} given twice")
        seen.add(name.lower())
        total += len(name.encode("utf-8")) + len(text.encode("utf-8"))
        headers[name] = text
    if total > MAX_TOTAL_BYTES:
        raise HeaderError(f"headers are over {MAX_TOTAL_BYTES} bytes in all")
    return headers
