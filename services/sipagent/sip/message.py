"""SIP messages on the wire: safe parsing, building, stream framing, identifiers.

``sipmessage`` does the grammar; this module makes sure nothing but
``SipParseError`` escapes from untrusted bytes, and builds the messages the
user agent sends with header values kept verbatim where they are echoed.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable

from sipmessage import URI, Address, Message, Request, Response, Via

MAX_MESSAGE_SIZE = 65536
"Largest SIP message accepted, headers and body together (bytes)."

MAGIC_COOKIE = "z9hG4bK"
"Prefix of RFC 3261 branch parameters."

SipMessage = Request | Response

# Header names echoed from a request into its response (RFC 3261 section 8.2.6.2).
_ECHOED = ("Via", "From", "To", "Call-ID", "CSeq")
# The compact forms of the headers this module reads from raw bytes.
_CONTENT_LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*(\S*)[ \t]*\r?$", re.I | re.M)
_FOLDING = re.compile(r"\r\n[ \t]+")

REASON_PHRASES = {
    100: "Trying",
    200: "OK",
    400: "Bad Request",
    408: "Request Timeout",
    481: "Call/Transaction Does Not Exist",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    500: "Server Internal Error",
    501: "Not Implemented",
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


def parse_message(data: bytes) -> SipMessage:
    """Parse one datagram or framed stream message.

    Raises ``SipParseError`` (and nothing else) on any malformed input, when
    a mandatory header is missing or unreadable, or above ``MAX_MESSAGE_SIZE``.
    """
    if len(data) > MAX_MESSAGE_SIZE:
        raise SipParseError(f"message of {len(data)} bytes is over {MAX_MESSAGE_SIZE}")
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise SipParseError("no end of headers")
    try:
        text = _FOLDING.sub(" ", head.decode("utf-8"))
        message = Message.parse(text.encode("utf-8") + b"\r\n\r\n")
        _check(message)
        length = message.content_length
    except SipParseError:
        raise
    except Exception as exc:  # the parser may raise anything on garbage
        raise SipParseError(f"malformed message: {exc}") from None
    if length is not None:
        if length < 0 or length > len(body):
            raise SipParseError("Content-Length beyond the message")
        body = body[:length]
    message.body = body
    return message


def _check(message: SipMessage) -> None:
    """Read every header the user agent relies on, so later reads cannot fail."""
    if isinstance(message, Response) and not 100 <= message.code <= 699:
        raise SipParseError(f"status code {message.code} out of range")
    if isinstance(message, Request) and not re.fullmatch(r"[A-Z]{2,16}", message.method):
        raise SipParseError("bad method")
    if not message.via:
        raise SipParseError("no Via")
    _ = (message.cseq, message.from_address, message.to_address)
    _ = (message.contact, message.record_route)
    if not message.call_id.strip():
        raise SipParseError("empty Call-ID")


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


def bad_request(data: bytes) -> bytes | None:
    """A 400 response to a request we could not parse, if its Via can be read."""
    try:
        head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
        lines = _FOLDING.sub(" ", head).split("\r\n")
        start = lines[0].split(" ")
        if len(start) != 3 or start[2] != "SIP/2.0" or start[0] == "ACK":
            return None
        echoed: list[str] = []
        for line in lines[1:]:
            name = line.split(":", 1)[0].strip().lower()
            if name in ("via", "v", "from", "f", "to", "t", "call-id", "i", "cseq"):
                echoed.append(line)
        vias = [line for line in echoed if line.split(":", 1)[0].strip().lower() in ("via", "v")]
        if not vias:
            return None
        Via.parse_many(vias[0].split(":", 1)[1])
    except (ValueError, IndexError):
        return None
    text = "SIP/2.0 400 Bad Request\r\n" + "".join(line + "\r\n" for line in echoed)
    return (text + "Content-Length: 0\r\n\r\n").encode("utf-8")


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


def make_response(
    request: Request,
    code: int,
    phrase: str | None = None,
    *,
    to_tag: str = "",
    headers: Iterable[tuple[str, str]] = (),
) -> Response:
    """A response echoing the request's Via, From, To, Call-ID and CSeq verbatim."""
    response = Response(code, phrase or REASON_PHRASES.get(code, "Unknown"))
    for name in _ECHOED:
        for value in request.headers.getlist(name):
            if name == "To" and to_tag and not tag_of(value):
                value = f"{value};tag={to_tag}"
            response.headers.add(name, value)
    for name, value in headers:
        response.headers.add(name, value)
    response.headers.add("Content-Length", "0")
    return response


# --- stream framing --------------------------------------------------------------


class StreamFramer:
    """Cut a TCP byte stream into SIP messages by Content-Length (RFC 3261 18.3)."""

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE) -> None:
        self._buffer = bytearray()
        self._max = max_size

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the complete messages now available.

        Raises ``SipParseError`` when the stream cannot be resynchronised (a
        message over the size limit or a bad Content-Length): close it.
        """
        self._buffer += data
        messages: list[bytes] = []
        while True:
            # CRLF keep-alives (RFC 5626) may sit between messages.
            while self._buffer[:2] == b"\r\n":
                del self._buffer[:2]
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > self._max:
                    raise SipParseError("headers over the size limit")
                return messages
            head_end = end + 4
            match = _CONTENT_LENGTH.search(bytes(self._buffer[:end]))
            length = 0
            if match is not None:
                raw = match.group(1)
                if not raw.isdigit():
                    raise SipParseError("bad Content-Length")
                length = int(raw)
            if head_end + length > self._max:
                raise SipParseError("message over the size limit")
            if len(self._buffer) < head_end + length:
                return messages
            messages.append(bytes(self._buffer[: head_end + length]))
            del self._buffer[: head_end + length]
