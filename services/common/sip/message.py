"""SIP messages on the wire: safe parsing, building, identifiers.

``sipmessage`` does the grammar; this module makes sure nothing but
``SipParseError`` escapes from untrusted bytes, and builds the messages the
user agent sends with header values kept verbatim where they are echoed.
Streams are cut into messages by ``services.common.sip.framing``.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Callable, Iterable

from sipmessage import URI, Address, Request, Response, Via
from sipmessage.message import COMPACT_FORMS

MAX_MESSAGE_SIZE = 65536
"Largest SIP message accepted, headers and body together (bytes)."

MAGIC_COOKIE = "z9hG4bK"
"Prefix of RFC 3261 branch parameters."

SipMessage = Request | Response

# Header names echoed from a request into its response (RFC 3261 section 8.2.6.2).
_ECHOED = ("Via", "From", "To", "Call-ID", "CSeq")
_FOLDING = re.compile(r"\r\n[ \t]+")
_FOLDING_BYTES = re.compile(rb"\r\n[ \t]+")

REASON_PHRASES = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}


class SipParseError(ValueError):
    """Bytes that are not a usable SIP message."""


# --- identifiers -----------------------------------------------------------------


def new_branch() -> str:
    """A fresh RFC 3261 branch (magic cookie + 64 random bits)."""
    return MAGIC_COOKIE + secrets.token_hex(8)


def new_tag() -> str:
    return secrets.token_hex(6)


def new_call_id() -> str:
    return secrets.token_hex(12)


# --- parsing ---------------------------------------------------------------------

MAX_HEADER_FIELDS = 500
"Most header lines accepted in one message (the header store is quadratic in them)."

# RFC 3261 section 25.1: token, the Call-ID word, and the status line.
_TOKEN = re.compile(r"[A-Za-z0-9.!%*_+`'~-]+")
_CALL_ID = re.compile(
    r"[A-Za-z0-9.!%*_+`'~()<>:\\\"/\[\]?{}-]+(?:@[A-Za-z0-9.!%*_+`'~()<>:\\\"/\[\]?{}-]+)?"
)
_STATUS_LINE = re.compile(r"SIP/2\.0 ([0-9]{3}) ([^\x00-\x08\x0a-\x1f\x7f]*)")
_DIGITS = re.compile(r"[0-9]{1,20}")
# Header fields whose value may be a comma-separated list we read element by element.
_LISTS = frozenset({"via", "contact", "route", "record-route"})
# Header fields that may appear once at most; the user agent reads them as single values.
_SINGLE = ("From", "To", "Call-ID", "CSeq", "Max-Forwards", "Expires")
# Header fields that must be valid UTF-8; any other keeps its bytes as U+FFFD.
_STRICT_UTF8 = frozenset(
    {"via", "from", "to", "call-id", "cseq", "content-length", "contact", "route", "record-route"}
)
_COMPACT = {key: value.lower() for key, value in COMPACT_FORMS.items()}
_ECHOED_KEYS = {"from": "From", "to": "To", "call-id": "Call-ID", "cseq": "CSeq"}
# What must not be echoed into a header of ours: controls (CR, LF, NUL...) but HTAB.
_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def parse_message(data: bytes) -> SipMessage:
    """Parse one datagram or framed stream message.

    Raises ``SipParseError`` (and nothing else) on any malformed input, when
    a mandatory header is missing or unreadable, or above ``MAX_MESSAGE_SIZE``;
    its text is a short fixed reason, fit for a 400 reason phrase. Accepts what
    RFC 4475 says an element must: folded lines, compact and any-case names,
    whitespace around colons, trailing octets after ``Content-Length`` and a
    missing ``Content-Length`` (the rest of the datagram is the body).
    """
    if len(data) > MAX_MESSAGE_SIZE:
        raise SipParseError(f"message of {len(data)} bytes is over {MAX_MESSAGE_SIZE}")
    try:
        message = _parse(data)
        _check(message)
    except SipParseError:
        raise
    except Exception:  # sipmessage may raise anything on garbage
        raise SipParseError("malformed header") from None
    return message


def _split_head(data: bytes) -> tuple[list[bytes], bytes]:
    """The unfolded header lines (start line first) and the bytes after them."""
    # RFC 3261 section 7.5: CRLFs before the start line are ignored.
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        raise SipParseError("no end of headers")
    # Line folding (RFC 3261 section 7.3.1): the CRLF and the whitespace after it are one SP.
    head = _FOLDING_BYTES.sub(b" ", data[start:end])
    lines = head.split(b"\r\n")
    if len(lines) > MAX_HEADER_FIELDS:
        raise SipParseError("too many header fields")
    return lines, data[end + 4 :]


def _parse(data: bytes) -> SipMessage:
    lines, body = _split_head(data)
    message = _start_line(lines[0])
    lengths: list[str] = []
    for raw in lines[1:]:
        if b"\r" in raw or b"\n" in raw:
            raise SipParseError("bare CR or LF in a header")
        name_bytes, sep, value_bytes = raw.partition(b":")
        name = name_bytes.rstrip(b" \t").decode("ascii", "replace")
        if not sep or not _TOKEN.fullmatch(name):
            raise SipParseError("bad header line")
        key = _COMPACT.get(name.lower(), name.lower())
        name = COMPACT_FORMS.get(name.lower(), name)
        try:
            value = value_bytes.decode("utf-8").strip(" \t")
        except UnicodeDecodeError:
            if key in _STRICT_UTF8:
                raise SipParseError(f"{name} is not UTF-8") from None
            value = value_bytes.decode("utf-8", "replace").strip(" \t")
        if key == "content-length":
            lengths.append(value)
        if key in _LISTS:
            for element in _split_list(value, name):
                message.headers.add(name, element)
        else:
            message.headers.add(name, value)
    message.body = _body(body, lengths)
    return message


def _start_line(line: bytes) -> SipMessage:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError("start line is not UTF-8") from None
    if text.startswith("SIP/"):
        match = _STATUS_LINE.fullmatch(text)
        if match is None:
            if not text.startswith("SIP/2.0 "):
                raise SipParseError("unsupported SIP version")
            raise SipParseError("bad status line")
        return Response(int(match.group(1)), match.group(2))
    # Request-Line: exactly one SP between its three elements (RFC 4475 3.1.2.7-10).
    parts = text.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SipParseError("bad request line")
    method, uri, version = parts
    if version.upper() != "SIP/2.0":
        raise SipParseError("unsupported SIP version")
    if not _TOKEN.fullmatch(method):
        raise SipParseError("bad method")
    try:
        return Request(method, URI.parse(uri))
    except ValueError:
        raise SipParseError("unsupported Request-URI") from None


def _split_list(value: str, name: str) -> list[str]:
    """The comma-separated elements of a header value, quotes and <> respected."""
    elements: list[str] = []
    start, quoted, angle, escaped = 0, False, False, False
    for i, char in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            if char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char == "<":
            angle = True
        elif char == ">":
            angle = False
        elif char == "," and not angle:
            elements.append(value[start:i].strip(" \t"))
            start = i + 1
    elements.append(value[start:].strip(" \t"))
    if not all(elements):
        raise SipParseError(f"empty element in {name}")
    return elements


def _body(rest: bytes, lengths: list[str]) -> bytes:
    """The body: ``Content-Length`` octets of ``rest``, or all of it when absent."""
    if not lengths:
        return rest
    if len(set(lengths)) > 1:
        raise SipParseError("conflicting Content-Length")
    if not _DIGITS.fullmatch(lengths[0]):
        raise SipParseError("bad Content-Length")
    length = int(lengths[0])
    if length > len(rest):
        raise SipParseError("Content-Length beyond the message")
    # Octets after the body (RFC 4475 3.1.1.8) are ignored.
    return rest[:length]


def _check(message: SipMessage) -> None:
    """Read every header the user agent relies on, so later reads cannot fail."""
    if isinstance(message, Response) and not 100 <= message.code <= 699:
        raise SipParseError("status code out of range")
    for name in _SINGLE:
        if len(message.headers.getlist(name)) > 1:
            raise SipParseError(f"more than one {name}")
    for name in ("From", "To", "Call-ID", "CSeq", "Via"):
        if message.headers.get(name) is None:
            raise SipParseError(f"missing {name}")
    for name, read in _READERS:
        try:
            read(message)
        except (ValueError, KeyError, IndexError):
            raise SipParseError(f"bad {name}") from None
    if not _CALL_ID.fullmatch(message.call_id):
        raise SipParseError("bad Call-ID")
    cseq = message.cseq
    if cseq.sequence >= 2**31:
        raise SipParseError("CSeq out of range")
    if isinstance(message, Request) and cseq.method != message.method:
        raise SipParseError("CSeq method does not match")
    for name, limit in (("Max-Forwards", 255), ("Expires", 2**32 - 1), ("Retry-After", 2**32 - 1)):
        value = message.headers.get(name)
        if value is not None:
            digits = value.split(";", 1)[0].split("(", 1)[0].strip()
            if not _DIGITS.fullmatch(digits) or int(digits) > limit:
                raise SipParseError(f"bad {name}")


_READERS: tuple[tuple[str, Callable[[SipMessage], object]], ...] = (
    ("Via", lambda m: m.via),
    ("From", lambda m: m.from_address),
    ("To", lambda m: m.to_address),
    ("CSeq", lambda m: m.cseq),
    ("Contact", lambda m: m.contact),
    ("Record-Route", lambda m: m.record_route),
)


def summary(message: SipMessage) -> str:
    """The start line without the SIP version, e.g. ``INVITE`` or ``180 Ringing``."""
    if isinstance(message, Request):
        return message.method
    return f"{message.code} {message.phrase}"


def top_branch(message: SipMessage) -> str:
    """The branch of the topmost Via ("" when absent)."""
    return str(message.via[0].parameters.get("branch") or "")


def tag_of(value: str) -> str:
    """The ``tag`` parameter of a From/To header value ("" when absent)."""
    try:
        return str(Address.parse(value).parameters.get("tag") or "")
    except ValueError:
        return ""


def bad_request(data: bytes, reason: str = "") -> bytes | None:
    """A 400 to a request we could not parse, if its top Via can be read.

    ``reason`` (the ``SipParseError`` text) goes into the reason phrase,
    ``400 Bad Request (missing Call-ID)``. Via, From, To, Call-ID and CSeq are
    echoed as far as they are there; To gets a tag when it has none. None for
    responses, ACKs, data over ``MAX_MESSAGE_SIZE`` and anything without a
    readable top Via: those are dropped.
    """
    if len(data) > MAX_MESSAGE_SIZE:
        return None
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2
    end = data.find(b"\r\n\r\n", start)
    head = data[start : end if end >= 0 else len(data)].decode("utf-8", "replace")
    lines = _FOLDING.sub(" ", head).split("\r\n")[:MAX_HEADER_FIELDS]
    method = lines[0].split(" ", 1)[0]
    if not _TOKEN.fullmatch(method) or method == "ACK":
        return None
    vias: list[str] = []
    single: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        key = name.strip(" \t").lower()
        key = _COMPACT.get(key, key)
        value = value.strip(" \t")
        if not sep or _UNSAFE.search(value):
            if key == "via":
                return None
            continue
        if key == "via":
            vias.append(value)
        elif key in _ECHOED_KEYS and key not in single:
            single[key] = value
    try:
        Via.parse_many(vias[0])
    except (ValueError, IndexError):
        return None
    if "to" in single and not tag_of(single["to"]):
        with contextlib.suppress(ValueError):
            Address.parse(single["to"])  # a tag only on a To that can carry one
            single["to"] += f";tag={new_tag()}"
    phrase = "Bad Request"
    if reason := _UNSAFE.sub("", reason)[:80].strip():
        phrase += f" ({reason})"
    lines = [f"SIP/2.0 400 {phrase}", *(f"Via: {value}" for value in vias)]
    lines += [f"{_ECHOED_KEYS[key]}: {value}" for key, value in single.items()]
    return ("\r\n".join([*lines, "Content-Length: 0"]) + "\r\n\r\n").encode("utf-8")


# --- building --------------------------------------------------------------------


def make_request(
    method: str,
    uri: URI | str,
    headers: Iterable[tuple[str, str]],
    body: bytes = b"",
    content_type: str | None = None,
) -> Request:
    """A request with ``headers`` in order, then Content-Type and Content-Length."""
    request = Request(method, uri if isinstance(uri, URI) else URI.parse(uri), body)
    for name, value in headers:
        request.headers.add(name, value)
    if body and content_type:
        request.headers.add("Content-Type", content_type)
    request.headers.add("Content-Length", str(len(body)))
    return request


def make_cancel(invite: Request, user_agent: str) -> Request:
    """The CANCEL of ``invite`` (RFC 3261 9.1): its Via, Route set, From, To and Call-ID."""
    return make_request(
        "CANCEL",
        invite.uri,
        [
            ("Via", invite.headers.getlist("Via")[0]),
            # The same Route as the INVITE (a preloaded outbound proxy).
            *(("Route", route) for route in invite.headers.getlist("Route")),
            ("Max-Forwards", "70"),
            ("From", invite.headers["From"]),
            ("To", invite.headers["To"]),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{invite.cseq.sequence} CANCEL"),
            ("User-Agent", user_agent),
        ],
    )


def make_response(
    request: Request,
    code: int,
    phrase: str | None = None,
    *,
    to_tag: str = "",
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
) -> Response:
    """A response echoing the request's Via, From, To, Call-ID and CSeq verbatim.

    ``headers`` follow in order, then Content-Type (with a body) and Content-Length.
    """
    response = Response(code, phrase or REASON_PHRASES.get(code, "Unknown"), body)
    for name in _ECHOED:
        for value in request.headers.getlist(name):
            if name == "To" and to_tag and not tag_of(value):
                value = f"{value};tag={to_tag}"
            response.headers.add(name, value)
    for name, value in headers:
        response.headers.add(name, value)
    if body and content_type:
        response.headers.add("Content-Type", content_type)
    response.headers.add("Content-Length", str(len(body)))
    return response
