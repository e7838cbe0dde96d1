import asyncio
import fractions

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from services.media.g711 import Pcm
from services.media.relay import (
    FRAME_SAMPLES,
    JITTER_CAPACITY,
    PcmFifo,
    TrunkAudioTrack,
    pump_browser_audio,
)


def test_fifo_wraps_and_drops_oldest() -> None:
    fifo = PcmFifo(8)
    fifo.push(np.arange(6, dtype=np.int16))
    out = np.zeros(4, np.int16)
    assert fifo.pull(out) and out.tolist() == [0, 1, 2, 3]
    fifo.push(np.arange(10, 16, dtype=np.int16))  # wraps around the ring
    assert len(fifo) == 8
    fifo.push(np.array([16, 17], np.int16))  # full: 4 and 5 are dropped
    assert fifo.overflow == 2
    out = np.zeros(8, np.int16)
    assert fifo.pull(out) and out.tolist() == [10, 11, 12, 13, 14, 15, 16, 17]
    assert not fifo.pull(out)
    fifo.push(np.arange(20, dtype=np.int16))  # larger than the ring: keep the newest
    assert fifo.pull(out) and out.tolist() == list(range(12, 20))


async def test_trunk_track_plays_silence_then_audio() -> None:
    track = TrunkAudioTrack()
    frame = await track.recv()
    assert frame.samples == FRAME_SAMPLES and frame.sample_rate == 8000
    assert frame.format.name == "s16" and frame.layout.name == "mono"
    assert not frame.to_ndarray().any()
    track.push(np.full(FRAME_SAMPLES, 100, np.int16))
    assert not (await track.recv()).to_ndarray().any()  # still prebuffering
    track.push(np.full(FRAME_SAMPLES, 200, np.int16))
    first, second = await track.recv(), await track.recv()
    assert (first.to_ndarray() == 100).all() and (second.to_ndarray() == 200).all()
    assert first.pts == 2 * FRAME_SAMPLES
    assert not (await track.recv()).to_ndarray().any()
    assert track.underruns == 1
    track.stop()
    with pytest.raises(MediaStreamError):
        await track.recv()


async def test_trunk_track_paces_at_20ms() -> None:
    track = TrunkAudioTrack()
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(6):
        await track.recv()
    assert 0.09 <= loop.time() - start < 0.3


def test_trunk_track_bounds_its_buffer() -> None:
    track = TrunkAudioTrack()
    for _ in range(20):
        track.push(np.zeros(FRAME_SAMPLES, np.int16))
    assert track.overflow == 20 * FRAME_SAMPLES - JITTER_CAPACITY


class ToneTrack(MediaStreamTrack):
    """Frames of a tone at 48 kHz stereo, like aiortc's Opus decoder produces."""

    kind = "audio"

    def __init__(self, frames: int, samples: int = 960, rate: int = 48000) -> None:
        super().__init__()
        self._left = frames
        self._samples = samples
        self._rate = rate
        self._pts = 0

    async def recv(self) -> av.AudioFrame:
        if self._left == 0:
            raise MediaStreamError
        self._left -= 1
        t = (self._pts + np.arange(self._samples)) / self._rate
        mono = (8000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
        data = np.repeat(mono, 2).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(data, format="s16", layout="stereo")
        frame.sample_rate = self._rate
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, self._rate)
        self._pts += self._samples
        return frame


class Sink:
    def __init__(self, sending: bool = True) -> None:
        self.sending = sending
        self.frames: list[Pcm] = []

    def send_pcm(self, pcm: Pcm) -> None:
        self.frames.append(pcm.copy())


async def test_pump_resamples_and_cuts_20ms_frames() -> None:
    sink = Sink()
    await pump_browser_audio(ToneTrack(frames=50), sink)
    assert all(len(f) == FRAME_SAMPLES for f in sink.frames)
    assert 45 <= len(sink.frames) <= 50
    audio = np.concatenate(sink.frames[5:]).astype(np.float64)
    peak = np.argmax(np.abs(np.fft.rfft(audio))) * 8000 / len(audio)
    assert abs(peak - 1000) < 20


async def test_pump_drops_audio_until_the_trunk_answers() -> None:
    sink = Sink(sending=False)
    await pump_browser_audio(ToneTrack(frames=10), sink)
    assert sink.frames == []
