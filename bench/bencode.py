"""Bencode, the encoding of rtpengine's ng control protocol.

Four kinds of value: integers (``i42e``), byte strings (``4:spam``), lists
(``l...e``) and dictionaries (``d...e``, keys byte strings in sorted order).
``encode`` takes ``str`` (as UTF-8) or ``bytes`` for strings, ``bool`` as 0/1;
``decode`` gives ``bytes`` for every string unless ``text=True``, which
decodes strings as UTF-8 (keys always).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class BencodeError(ValueError):
    """Malformed input to ``decode``, or a value ``encode`` cannot represent."""


def encode(value: Any) -> bytes:
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: Any, out: list[bytes]) -> None:
    if isinstance(value, bool):
        out.append(b"i1e" if value else b"i0e")
    elif isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, str):
        _encode(value.encode(), out)
    elif isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        out.append(b"%d:" % len(raw))
        out.append(raw)
    elif isinstance(value, Mapping):
        items: list[tuple[bytes, Any]] = []
        for key, item in value.items():
            if isinstance(key, str):
                key = key.encode()
            if not isinstance(key, bytes):
                raise BencodeError(f"dictionary key {key!r} is not a string")
            items.append((key, item))
        items.sort(key=lambda pair: pair[0])
        out.append(b"d")
        for key, item in items:
            _encode(key, out)
            _encode(item, out)
        out.append(b"e")
    elif isinstance(value, Sequence):
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    else:
        raise BencodeError(f"cannot bencode {type(value).__name__}")


def decode(data: bytes, *, text: bool = False) -> Any:
    """The one value in ``data``; trailing bytes are an error."""
    value, end = decode_prefix(data, 0, text=text)
    if end != len(data):
        raise BencodeError(f"{len(data) - end} trailing bytes after the value")
    return value


def decode_prefix(data: bytes, start: int = 0, *, text: bool = False) -> tuple[Any, int]:
    """The value starting at ``start`` and the offset just past it."""
    return _Decoder(bytes(data), text).value(start)


class _Decoder:
    # Nesting deeper than this is refused rather than recursed into.
    MAX_DEPTH = 64

    def __init__(self, data: bytes, text: bool) -> None:
        self.data = data
        self.text = text

    def value(self, pos: int, depth: int = 0) -> tuple[Any, int]:
        if depth > self.MAX_DEPTH:
            raise BencodeError("nested too deep")
        data = self.data
        if pos >= len(data):
            raise BencodeError("truncated: value expected")
        lead = data[pos : pos + 1]
        if lead == b"i":
            end = data.find(b"e", pos + 1)
            if end < 0:
                raise BencodeError("truncated integer")
            digits = data[pos + 1 : end]
            if not _valid_int(digits):
                raise BencodeError(f"bad integer {digits!r}")
            return int(digits), end + 1
        if lead == b"l":
            items: list[Any] = []
            pos += 1
            while True:
                if pos >= len(data):
                    raise BencodeError("truncated list")
                if data[pos : pos + 1] == b"e":
                    return items, pos + 1
                item, pos = self.value(pos, depth + 1)
                items.append(item)
        if lead == b"d":
            result: dict[Any, Any] = {}
            pos += 1
            while True:
                if pos >= len(data):
                    raise BencodeError("truncated dictionary")
                if data[pos : pos + 1] == b"e":
                    return result, pos + 1
                raw_key, pos = self.string(pos)
                key = raw_key.decode(errors="replace")
                result[key], pos = self.value(pos, depth + 1)
        if lead.isdigit():
            raw, pos = self.string(pos)
            return (raw.decode(errors="replace") if self.text else raw), pos
        raise BencodeError(f"unexpected byte {lead!r} at offset {pos}")

    def string(self, pos: int) -> tuple[bytes, int]:
        colon = self.data.find(b":", pos)
        if colon < 0:
            raise BencodeError("truncated string length")
        length = self.data[pos:colon]
        if not length.isdigit() or (len(length) > 1 and length[:1] == b"0"):
            raise BencodeError(f"bad string length {length!r}")
        start = colon + 1
        end = start + int(length)
        if end > len(self.data):
            raise BencodeError("truncated string")
        return self.data[start:end], end


def _valid_int(digits: bytes) -> bool:
    body = digits[1:] if digits[:1] == b"-" else digits
    if not body.isdigit():
        return False
    if len(body) > 1 and body[:1] == b"0":
        return False
    return digits != b"-0"
