"""Each codec the media tier converts, as 16-bit PCM in and out at its own rate.

G.711 by table lookup (8 kHz); Opus through libopus (decoded straight to,
and encoded from, 8 or 16 kHz: whatever the other leg needs); G.722 through
PyAV's codec (16 kHz; its RTP clock is 8000 by RFC 3551's old mistake),
with one reused input frame. ``decode`` returns a view valid until the next
call; ``encode`` takes one packet's worth of samples.
"""

from __future__ import annotations

from typing import Protocol

import av
import numpy as np
from numpy.typing import NDArray

from services.media import g711
from services.media.opus import OpusDecoder, OpusEncoder, OpusError

Pcm = NDArray[np.int16]
OPUS_COMPLEXITY = {8000: 1, 16000: 5}
"""libopus encoder complexity by input rate. Measured on espeak-ng speech, 20 ms frames,
encode and decode: at 8 kHz (toward G.711) complexity 1 takes 41 µs a frame for PESQ-NB 4.18,
5 takes 89 µs for 3.87; at 16 kHz (toward G.722) 1 gives PESQ-WB 2.45 in 66 µs, 5 gives 3.17
in 127 µs. Narrow-band speech loses nothing at 1; wide-band needs 5."""
OPUS_BITRATE = 24000
_MAX_SAMPLES = 5760
"The longest payload we convert: 360 ms at 16 kHz."


class CodecError(ValueError):
    """A payload could not be decoded, or samples not encoded."""


class PcmCodec(Protocol):
    rate: int
    "PCM sample rate of ``decode``'s output and ``encode``'s input."

    def decode(self, payload: bytes | memoryview) -> Pcm: ...

    def encode(self, pcm: Pcm) -> bytes: ...

    def close(self) -> None: ...


class G711Codec:
    rate = 8000

    def __init__(self, name: str) -> None:
        self._encode = g711.ENCODE_TABLES[name]
        self._decode = g711.DECODE_TABLES[name]
        self._pcm = np.zeros(_MAX_SAMPLES, dtype=np.int16)

    def decode(self, payload: bytes | memoryview) -> Pcm:
        codes = np.frombuffer(payload, dtype=np.uint8)
        if len(codes) > _MAX_SAMPLES:
            raise CodecError("payload too long")
        pcm = self._pcm[: len(codes)]
        np.take(self._decode, codes, out=pcm)
        return pcm

    def encode(self, pcm: Pcm) -> bytes:
        return bytes(self._encode[pcm.view(np.uint16)].tobytes())

    def close(self) -> None:
        pass


class OpusCodec:
    """libopus at ``rate`` (8 or 16 kHz), FEC on; frames of 10, 20, 40 or 60 ms."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._decoder = OpusDecoder(rate, 1)
        self._encoder = OpusEncoder(
            rate, 1, bitrate=OPUS_BITRATE, complexity=OPUS_COMPLEXITY.get(rate, 5), fec=True
        )
        self._frames = frozenset(rate * ms // 1000 for ms in (10, 20, 40, 60))

    def decode(self, payload: bytes | memoryview) -> Pcm:
        try:
            return np.frombuffer(self._decoder.decode(payload), dtype=np.int16)
        except OpusError as exc:
            raise CodecError(str(exc)) from None

    def conceal(self, samples: int, next_payload: bytes | memoryview, fec: bool) -> Pcm:
        """``samples`` standing in for a lost frame: from ``next_payload``'s FEC copy when
        ``fec`` (the frame just before it), else libopus's concealment."""
        try:
            if fec:
                try:
                    view = self._decoder.decode(next_payload, fec=True, samples=samples)
                    return np.frombuffer(view, dtype=np.int16)
                except OpusError:
                    pass
            return np.frombuffer(self._decoder.conceal(samples), dtype=np.int16)
        except OpusError as exc:
            raise CodecError(str(exc)) from None

    def encode(self, pcm: Pcm) -> bytes:
        if len(pcm) not in self._frames:
            raise CodecError(f"{len(pcm)} samples at {self.rate} Hz are no Opus frame")
        try:
            return self._encoder.encode(pcm.data.cast("B"))
        except OpusError as exc:
            raise CodecError(str(exc)) from None

    def close(self) -> None:
        self._decoder.close()
        self._encoder.close()


class G722Codec:
    """ITU-T G.722 (64 kbit/s, 16 kHz) through PyAV's codec, one input frame reused."""

    rate = 16000

    def __init__(self) -> None:
        self._encoder = av.CodecContext.create("g722", "w")
        self._encoder.sample_rate = 16000
        self._encoder.layout = "mono"
        self._encoder.format = "s16"
        self._decoder = av.CodecContext.create("g722", "r")
        self._decoder.sample_rate = 16000
        self._decoder.layout = "mono"
        self._frames: dict[int, av.AudioFrame] = {}
        self._pcm = np.zeros(_MAX_SAMPLES, dtype=np.int16)

    def decode(self, payload: bytes | memoryview) -> Pcm:
        size = 0
        try:
            for frame in self._decoder.decode(av.Packet(bytes(payload))):
                samples = frame.to_ndarray().reshape(-1)
                if size + len(samples) > _MAX_SAMPLES:
                    raise CodecError("payload too long")
                self._pcm[size : size + len(samples)] = samples
                size += len(samples)
        except av.FFmpegError as exc:
            raise CodecError(str(exc)) from None
        return self._pcm[:size]

    def encode(self, pcm: Pcm) -> bytes:
        count = len(pcm)
        frame = self._frames.get(count)
        if frame is None:
            frame = self._frames[count] = av.AudioFrame(format="s16", layout="mono", samples=count)
            frame.sample_rate = 16000
        frame.planes[0].update(pcm.tobytes())
        frame.pts = None
        try:
            return b"".join(bytes(packet) for packet in self._encoder.encode(frame))
        except av.FFmpegError as exc:
            raise CodecError(str(exc)) from None

    def close(self) -> None:
        pass


def resample(pcm: Pcm, source: int, target: int) -> Pcm:
    """8 ↔ 16 kHz for voice: linear interpolation up, the mean of each pair down."""
    if source == target:
        return pcm
    if source == 8000 and target == 16000:
        out = np.empty(2 * len(pcm), dtype=np.int16)
        out[0::2] = pcm
        wide = pcm.astype(np.int32)
        out[1:-1:2] = (wide[:-1] + wide[1:]) // 2
        if len(pcm):
            out[-1] = pcm[-1]
        return out
    if source == 16000 and target == 8000:
        pairs = pcm[: len(pcm) // 2 * 2].astype(np.int32).reshape(-1, 2)
        down: Pcm = (pairs.sum(axis=1) // 2).astype(np.int16)
        return down
    raise CodecError(f"no resampling from {source} to {target} Hz")
