"""Opus encoder and decoder: a small ctypes binding to libopus.

aiortc exposes none of libopus's encoder controls (bitrate, complexity, in-band FEC, expected
loss), and PyAV's decoder ignores the requested sample rate, so neither can decode straight to
8 kHz or decode the FEC copy of a lost frame. libopus is loaded from the system (Debian libopus0)
or, failing that, from the copy bundled in PyAV's wheel; no new dependency.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib.util
from pathlib import Path
from typing import Any

__all__ = ["OpusDecoder", "OpusEncoder", "OpusError", "OpusUnavailableError"]

_APPLICATION_VOIP = 2048
_SET_BITRATE = 4002
_SET_COMPLEXITY = 4010
_SET_INBAND_FEC = 4012
_SET_PACKET_LOSS_PERC = 4014
_SET_SIGNAL = 4024
_SIGNAL_VOICE = 3001

_OK = 0
_BAD_ARG = -1
_INVALID_PACKET = -4

_MAX_PACKET = 1275  # bytes in the largest single-frame Opus packet
_MAX_FRAME_MS = 120  # longest packet libopus decodes

_PcmPtr = ctypes.POINTER(ctypes.c_int16)
_BytePtr = ctypes.POINTER(ctypes.c_ubyte)
_IntPtr = ctypes.POINTER(ctypes.c_int)


class OpusUnavailableError(RuntimeError):
    """Neither the system libopus nor PyAV's bundled copy could be loaded."""


class OpusError(ValueError):
    """libopus returned an error code, or the codec was used after close()."""


def _candidates() -> list[str]:
    found = ctypes.util.find_library("opus")
    if found:
        return [found]
    try:
        spec = importlib.util.find_spec("av")
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None:
        return []
    libs = Path(spec.origin).parent.parent / "av.libs"
    return [str(path) for path in sorted(libs.glob("libopus-*.so*"))]


@functools.cache
def _lib() -> ctypes.CDLL:
    lib: ctypes.CDLL | None = None
    for name in _candidates():
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    if lib is None:
        raise OpusUnavailableError(
            "libopus not found: install the Debian package libopus0, or PyAV with its bundled copy"
        )
    i32, cint, vp = ctypes.c_int32, ctypes.c_int, ctypes.c_void_p
    lib.opus_strerror.argtypes = [cint]
    lib.opus_strerror.restype = ctypes.c_char_p
    lib.opus_encoder_create.argtypes = [i32, cint, cint, _IntPtr]
    lib.opus_encoder_create.restype = vp
    lib.opus_encoder_destroy.argtypes = [vp]
    lib.opus_encoder_destroy.restype = None
    lib.opus_encode.argtypes = [vp, _PcmPtr, cint, _BytePtr, i32]
    lib.opus_encode.restype = i32
    lib.opus_encoder_ctl.restype = cint  # variadic: no argtypes, every argument passed as c_int
    lib.opus_decoder_create.argtypes = [i32, cint, _IntPtr]
    lib.opus_decoder_create.restype = vp
    lib.opus_decoder_destroy.argtypes = [vp]
    lib.opus_decoder_destroy.restype = None
    lib.opus_decode.argtypes = [vp, ctypes.c_char_p, i32, _PcmPtr, cint, cint]
    lib.opus_decode.restype = cint
    lib.opus_packet_get_nb_samples.argtypes = [ctypes.c_char_p, i32, i32]
    lib.opus_packet_get_nb_samples.restype = cint
    return lib


def _error(code: int) -> OpusError:
    text = _lib().opus_strerror(code)
    return OpusError(f"opus: {text.decode() if text else code}")


def _packet(payload: bytes | bytearray | memoryview) -> bytes | ctypes.Array[ctypes.c_char]:
    """The payload as something a c_char_p argument takes, copying only a read-only view."""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, memoryview) and (payload.readonly or not payload.c_contiguous):
        return payload.tobytes()
    view = memoryview(payload).cast("B")
    if not view.nbytes:
        return b""
    return (ctypes.c_char * view.nbytes).from_buffer(view)


class _OpusState:
    """A libopus encoder or decoder state, destroyed once: by ``close`` or when collected."""

    _st: ctypes.c_void_p | None = None
    _destroy: Any = None

    def close(self) -> None:
        st, self._st = self._st, None
        if st is not None:
            self._destroy(st)

    def __del__(self) -> None:
        self.close()  # needs no module globals, which may be gone at interpreter shutdown


class OpusEncoder(_OpusState):
    """One libopus encoder (VOIP application, voice signal) for native-endian int16 PCM."""

    def __init__(
        self,
        sample_rate: int = 8000,
        channels: int = 1,
        *,
        bitrate: int = 24000,
        complexity: int = 5,
        fec: bool = True,
        expected_loss_percent: int = 5,
    ) -> None:
        lib = _lib()
        self.sample_rate = sample_rate
        self.channels = channels
        self._encode = lib.opus_encode
        self._destroy = lib.opus_encoder_destroy  # kept so close() needs no globals
        error = ctypes.c_int(_OK)
        st = lib.opus_encoder_create(sample_rate, channels, _APPLICATION_VOIP, ctypes.byref(error))
        if error.value != _OK or not st:
            raise _error(error.value if error.value != _OK else _BAD_ARG)
        self._st = ctypes.c_void_p(st)
        try:
            for request, value in (
                (_SET_BITRATE, bitrate),
                (_SET_COMPLEXITY, complexity),
                (_SET_INBAND_FEC, int(fec)),
                (_SET_PACKET_LOSS_PERC, expected_loss_percent),
                (_SET_SIGNAL, _SIGNAL_VOICE),
            ):
                code = lib.opus_encoder_ctl(self._st, ctypes.c_int(request), ctypes.c_int(value))
                if code != _OK:
                    raise _error(code)
        except BaseException:
            self.close()
            raise
        self._out = (ctypes.c_ubyte * _MAX_PACKET)()
        self._out_view = memoryview(self._out).cast("B")
        self._frame_bytes = 2 * channels

    def encode(self, pcm: bytes | bytearray | memoryview) -> bytes:
        """Encode one whole frame (2.5 to 60 ms) of int16 samples; returns the Opus packet."""
        st = self._st
        if st is None:
            raise OpusError("opus: encoder is closed")
        nbytes = pcm.nbytes if isinstance(pcm, memoryview) else len(pcm)
        samples = nbytes // self._frame_bytes
        if samples <= 0 or nbytes % self._frame_bytes:
            raise _error(_BAD_ARG)
        data: ctypes._Pointer[ctypes.c_int16] | ctypes.Array[ctypes.c_int16]
        if isinstance(pcm, bytes):
            data = ctypes.cast(ctypes.c_char_p(pcm), _PcmPtr)
        elif isinstance(pcm, memoryview) and (pcm.readonly or not pcm.c_contiguous):
            data = ctypes.cast(ctypes.c_char_p(pcm.tobytes()), _PcmPtr)
        else:
            data = (ctypes.c_int16 * (nbytes // 2)).from_buffer(pcm)
        n = self._encode(st, data, samples, self._out, _MAX_PACKET)
        if n < 0:
            raise _error(n)
        return self._out_view[:n].tobytes()


class OpusDecoder(_OpusState):
    """One libopus decoder producing native-endian int16 PCM at the given sample rate."""

    def __init__(self, sample_rate: int = 8000, channels: int = 1) -> None:
        lib = _lib()
        self.sample_rate = sample_rate
        self.channels = channels
        self._decode = lib.opus_decode
        self._destroy = lib.opus_decoder_destroy  # kept so close() needs no globals
        self._nb_samples = lib.opus_packet_get_nb_samples
        error = ctypes.c_int(_OK)
        st = lib.opus_decoder_create(sample_rate, channels, ctypes.byref(error))
        if error.value != _OK or not st:
            raise _error(error.value if error.value != _OK else _BAD_ARG)
        self._st = ctypes.c_void_p(st)
        self._capacity = sample_rate * _MAX_FRAME_MS // 1000  # samples per channel
        self._pcm = (ctypes.c_int16 * (self._capacity * channels))()
        self._pcm_view = memoryview(self._pcm).cast("B").cast("h")

    def decode(
        self,
        payload: bytes | bytearray | memoryview,
        *,
        fec: bool = False,
        samples: int | None = None,
    ) -> memoryview:
        """Decode one packet; returns int16 samples (interleaved), valid until the next call.

        With fec=True, decodes instead the in-band FEC copy of the frame *before* this packet;
        samples is then the lost frame's duration per channel (default: this packet's duration).
        Without fec, samples caps the decoded duration (default: 120 ms).
        """
        st = self._st
        if st is None:
            raise OpusError("opus: decoder is closed")
        data = _packet(payload)
        size = len(data)
        if not size:  # libopus would treat an empty packet as a loss and conceal it
            raise _error(_INVALID_PACKET)
        if samples is None:
            if fec:
                samples = self._nb_samples(data, size, self.sample_rate)
                if samples < 0:
                    raise _error(samples)
            else:
                samples = self._capacity
        elif not 0 < samples <= self._capacity:
            raise _error(_BAD_ARG)
        n = self._decode(st, data, size, self._pcm, samples, 1 if fec else 0)
        if n < 0:
            raise _error(n)
        return self._pcm_view[: n * self.channels]

    def conceal(self, samples: int) -> memoryview:
        """Packet loss concealment for `samples` per channel (a multiple of 2.5 ms)."""
        st = self._st
        if st is None:
            raise OpusError("opus: decoder is closed")
        if not 0 < samples <= self._capacity:
            raise _error(_BAD_ARG)
        n = self._decode(st, None, 0, self._pcm, samples, 0)
        if n < 0:
            raise _error(n)
        return self._pcm_view[: n * self.channels]

    @staticmethod
    def packet_samples(payload: bytes | bytearray | memoryview, sample_rate: int) -> int:
        """Samples per channel the packet holds when decoded at sample_rate."""
        data = _packet(payload)
        n: int = _lib().opus_packet_get_nb_samples(data, len(data), sample_rate)
        if n < 0:
            raise _error(n)
        return n
