"""Cutting a SIP byte stream (TCP or TLS) into messages, sans-I/O (RFC 3261 18.3).

``StreamFramer.receive(data)`` takes the bytes as they arrive and returns what
they completed, in order:

- ``MessageFramed``: one whole message (header and ``Content-Length`` octets of
  body), for ``parse_message``;
- ``PingReceived``: an RFC 5626 keep-alive ping (CRLFCRLF between messages):
  write ``PONG`` back on the same connection;
- ``StreamBroken``: the stream cannot be framed any more (a header or body over
  the bounds, an unreadable ``Content-Length``): close the connection. The
  framer takes no bytes after it.

A single CRLF between messages (the pong to our own ping) is dropped. The
header search resumes where the last one stopped, and a header's
``Content-Length`` is read once, so a message arriving one byte at a time
costs work in proportion to its length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.common.sip.message import MAX_MESSAGE_SIZE

MAX_HEADER_SIZE = MAX_MESSAGE_SIZE // 2
"Largest header (start line to the blank line) accepted on a stream, in bytes."
MAX_BODY_SIZE = MAX_MESSAGE_SIZE // 2
"Largest ``Content-Length`` accepted on a stream, in bytes."

PING = b"\r\n\r\n"
"RFC 5626 section 3.5.1 keep-alive ping, sent by the side that opened the connection."
PONG = b"\r\n"
"The answer to a ping."

_CRLF = b"\r\n"
_END_OF_HEADER = b"\r\n\r\n"
_FOLDING = re.compile(rb"\r\n[ \t]+")
_DIGITS = re.compile(rb"[0-9]{1,20}")
_LENGTH_NAMES = (b"content-length", b"l")


class StreamEvent:
    """What a chunk of stream bytes completed."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class MessageFramed(StreamEvent):
    """One whole SIP message cut from the stream."""

    data: bytes
    "The message: header, blank line and ``Content-Length`` octets of body."


@dataclass(frozen=True, slots=True)
class PingReceived(StreamEvent):
    """The peer sent a keep-alive ping: write ``PONG`` back."""


@dataclass(frozen=True, slots=True)
class StreamBroken(StreamEvent):
    """The stream cannot be framed any more: close the connection."""

    reason: str
    "Why, in a few words fit for a log line (never any of the peer's bytes)."


class StreamFramer:
    """One connection's incoming bytes, cut into messages by ``Content-Length``."""

    def __init__(self, max_header: int = MAX_HEADER_SIZE, max_body: int = MAX_BODY_SIZE) -> None:
        self._max_header = max_header
        self._max_body = max_body
        self._buffer = bytearray()
        self._searched = 0
        "Bytes at the buffer's start known to hold no end of header (less three: a split CRLFCRLF)."
        self._total: int | None = None
        "Length of the message at the buffer's start once its header is read, header and body."
        self._broken = False

    @property
    def broken(self) -> bool:
        """A ``StreamBroken`` was returned: the framer takes no more bytes."""
        return self._broken

    @property
    def buffered(self) -> int:
        """Bytes received and not returned yet (at most ``max_header + max_body``)."""
        return len(self._buffer)

    def receive(self, data: bytes) -> list[StreamEvent]:
        """Add bytes from the stream; return the messages, pings and break they complete."""
        if self._broken:
            return []
        self._buffer += data
        events: list[StreamEvent] = []
        while self._buffer:
            if self._total is None and not self._skip_keepalives(events):
                break
            if self._total is None and not self._read_header(events):
                break
            assert self._total is not None
            if len(self._buffer) < self._total:
                break
            events.append(MessageFramed(bytes(self._buffer[: self._total])))
            del self._buffer[: self._total]
            self._total = None
            self._searched = 0
        return events

    def _skip_keepalives(self, events: list[StreamEvent]) -> bool:
        """Drop CRLFs before a message, noting pings; False when more bytes are needed."""
        buffer = self._buffer
        while buffer[:2] == _CRLF:
            if buffer[:4] == _END_OF_HEADER:
                del buffer[:4]
                events.append(PingReceived())
            elif len(buffer) == 2 or buffer[2:4] == b"\r":
                return False  # a pong, or the first half of a ping: wait for what follows
            else:
                del buffer[:2]  # a pong to our ping
        return bool(buffer)

    def _read_header(self, events: list[StreamEvent]) -> bool:
        """Find the end of the header and read its length; False when not complete."""
        end = self._buffer.find(_END_OF_HEADER, max(0, self._searched - 3))
        if end < 0:
            self._searched = len(self._buffer)
            if self._searched > self._max_header:
                self._break(events, f"header over {self._max_header} bytes")
            return False
        if end + 4 > self._max_header:
            self._break(events, f"header over {self._max_header} bytes")
            return False
        length = _content_length(bytes(self._buffer[:end]))
        if length is None:
            self._break(events, "unreadable Content-Length")
            return False
        if length > self._max_body:
            self._break(events, f"body of {length} bytes over {self._max_body}")
            return False
        self._total = end + 4 + length
        return True

    def _break(self, events: list[StreamEvent], reason: str) -> None:
        self._broken = True
        self._buffer.clear()
        self._total = None
        events.append(StreamBroken(reason))


def _content_length(head: bytes) -> int | None:
    """The ``Content-Length`` of a stream message's header; None when unreadable.

    A message without one is taken to have no body (RFC 3261 20.14 requires it
    on streams; an ACK or a response without a body may still leave it out).
    """
    values = set()
    for line in _FOLDING.sub(b" ", head).split(_CRLF)[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.rstrip(b" \t").lower() in _LENGTH_NAMES:
            values.add(value.strip(b" \t"))
    if not values:
        return 0
    raw = values.pop()
    if values or not _DIGITS.fullmatch(raw):
        return None
    return int(raw)
