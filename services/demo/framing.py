"""Cutting a SIP byte stream (TCP) into messages by Content-Length (RFC 3261 section 18.3)."""

from __future__ import annotations

MAX_HEADER = 64 * 1024
MAX_BODY = 64 * 1024


class FramingError(Exception):
    """The stream cannot be framed any more; the connection should be closed."""


def _content_length(header: bytes) -> int:
    for line in header.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() in (b"content-length", b"l"):
            try:
                length = int(value.strip())
            except ValueError:
                raise FramingError("bad Content-Length") from None
            if not 0 <= length <= MAX_BODY:
                raise FramingError("Content-Length out of range")
            return length
    # Mandatory on streams; a message without one is taken to have no body.
    return 0


def split_messages(buffer: bytearray) -> list[bytes]:
    """Remove every complete message from ``buffer`` and return them; keep the rest."""
    found: list[bytes] = []
    while True:
        # CRLFs between messages are keep-alives (RFC 5626 section 3.5.1).
        start = 0
        while buffer[start : start + 2] == b"\r\n":
            start += 2
        if start:
            del buffer[:start]
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEADER:
                raise FramingError("header too long")
            return found
        total = end + 4 + _content_length(bytes(buffer[:end]))
        if len(buffer) < total:
            return found
        found.append(bytes(buffer[:total]))
        del buffer[:total]
