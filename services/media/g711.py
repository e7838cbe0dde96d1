"""G.711 µ-law (PCMU) and A-law (PCMA) for 16-bit PCM, by table lookup.

The tables follow ITU-T G.711 as implemented in the classic Sun reference
code. They are built once at import with vectorised numpy, so encoding or
decoding a packet is a single fancy-index: 65536 entries indexed by the
uint16 view of the samples to encode, 256 entries indexed by the bytes to
decode.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

Pcm = NDArray[np.int16]
Encoder = Callable[[Pcm], bytes]
Decoder = Callable[[bytes], Pcm]

_ULAW_BIAS = 0x84
_ULAW_CLIP = 8159
_ULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_ALAW_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)


def _all_samples() -> NDArray[np.int32]:
    # Entry i is the int16 whose bit pattern is i, matching the uint16 view used to index.
    return np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16).astype(np.int32)


def _build_ulaw_encode() -> NDArray[np.uint8]:
    value = _all_samples() >> 2  # µ-law works on 14-bit magnitudes
    negative = value < 0
    mask = np.where(negative, 0x7F, 0xFF)
    value = np.minimum(np.where(negative, -value, value), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    segment = np.searchsorted(_ULAW_SEG_END, value, side="left").astype(np.int32)
    code = (segment << 4) | ((value >> (segment + 1)) & 0x0F)
    code = np.where(segment >= 8, 0x7F, code)
    return ((code ^ mask) & 0xFF).astype(np.uint8)


def _build_ulaw_decode() -> NDArray[np.int16]:
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    magnitude = (((mantissa << 3) + _ULAW_BIAS) << exponent) - _ULAW_BIAS
    return np.where(code & 0x80, -magnitude, magnitude).astype(np.int16)


def _build_alaw_encode() -> NDArray[np.uint8]:
    value = _all_samples() >> 3  # A-law works on 13-bit magnitudes
    negative = value < 0
    mask = np.where(negative, 0x55, 0xD5)
    value = np.where(negative, -value - 1, value)
    segment = np.searchsorted(_ALAW_SEG_END, value, side="left").astype(np.int32)
    shift = np.where(segment < 2, 1, segment)
    code = (segment << 4) | ((value >> shift) & 0x0F)
    code = np.where(segment >= 8, 0x7F, code)
    return ((code ^ mask) & 0xFF).astype(np.uint8)


def _build_alaw_decode() -> NDArray[np.int16]:
    code = np.arange(256, dtype=np.int32) ^ 0x55
    segment = (code & 0x70) >> 4
    base = (code & 0x0F) << 4
    magnitude = np.where(
        segment == 0,
        base + 8,
        (base + 0x108) << np.maximum(segment - 1, 0),
    )
    return np.where(code & 0x80, magnitude, -magnitude).astype(np.int16)


_ULAW_ENCODE = _build_ulaw_encode()
_ULAW_DECODE = _build_ulaw_decode()
_ALAW_ENCODE = _build_alaw_encode()
_ALAW_DECODE = _build_alaw_decode()


def ulaw_encode(pcm: Pcm) -> bytes:
    """µ-law bytes of 16-bit samples."""
    return _ULAW_ENCODE[pcm.view(np.uint16)].tobytes()


def ulaw_decode(data: bytes) -> Pcm:
    """16-bit samples of µ-law bytes."""
    return _ULAW_DECODE[np.frombuffer(data, dtype=np.uint8)]


def alaw_encode(pcm: Pcm) -> bytes:
    """A-law bytes of 16-bit samples."""
    return _ALAW_ENCODE[pcm.view(np.uint16)].tobytes()


def alaw_decode(data: bytes) -> Pcm:
    """16-bit samples of A-law bytes."""
    return _ALAW_DECODE[np.frombuffer(data, dtype=np.uint8)]


DECODE_TABLES: dict[str, NDArray[np.int16]] = {"PCMU": _ULAW_DECODE, "PCMA": _ALAW_DECODE}
"Sample of each code byte, by SDP encoding name, for decoding into a reused buffer."

CODECS: dict[str, tuple[Encoder, Decoder]] = {
    "PCMU": (ulaw_encode, ulaw_decode),
    "PCMA": (alaw_encode, alaw_decode),
}
"Encoder and decoder by SDP encoding name (upper case)."

ENCODE_TABLES: dict[str, NDArray[np.uint8]] = {"PCMU": _ULAW_ENCODE, "PCMA": _ALAW_ENCODE}
"Code byte of each 16-bit sample (indexed by its uint16 view), by SDP encoding name."
