"""The audio bridge between aiortc's tracks and the trunk leg's 8 kHz PCM.

Trunk → browser: ``TrunkAudioTrack`` is the browser leg's outgoing track. It
paces itself at 20 ms on its own clock and plays decoded trunk audio from a
small jitter buffer; aiortc then encodes Opus or PCMU for the browser.

Browser → trunk: ``pump_browser_audio`` reads the decoded frames of the
browser's track, resamples them to 8 kHz mono with one resampler per call and
sends them to the trunk in 20 ms (160-sample) frames.
"""

from __future__ import annotations

import asyncio
import fractions
from typing import Protocol, cast

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from services.media.g711 import Pcm

SAMPLE_RATE = 8000
FRAME_SAMPLES = 160  # 20 ms at 8 kHz
FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE
JITTER_CAPACITY = 1600  # 200 ms: beyond this the oldest audio is dropped
PREBUFFER = 2 * FRAME_SAMPLES  # wait for 40 ms before (re)starting playout
_TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
_MAX_LAG = 0.2  # seconds behind schedule before the pacing clock restarts


class PcmFifo:
    """A fixed ring of 16-bit samples that drops the oldest on overflow."""

    def __init__(self, capacity: int) -> None:
        self._ring = np.zeros(capacity, dtype=np.int16)
        self._start = 0
        self._size = 0
        self.overflow = 0
        "Samples dropped because the buffer was full."

    def __len__(self) -> int:
        return self._size

    def push(self, pcm: Pcm) -> None:
        capacity = len(self._ring)
        count = len(pcm)
        if count >= capacity:
            self.overflow += self._size + count - capacity
            pcm, count = pcm[count - capacity :], capacity
            self._start, self._size = 0, 0
        excess = self._size + count - capacity
        if excess > 0:
            self.overflow += excess
            self._start = (self._start + excess) % capacity
            self._size -= excess
        end = (self._start + self._size) % capacity
        first = min(count, capacity - end)
        self._ring[end : end + first] = pcm[:first]
        self._ring[: count - first] = pcm[first:]
        self._size += count

    def pull(self, out: Pcm) -> bool:
        """Fill ``out`` with the oldest samples; False (``out`` untouched) if too few."""
        count = len(out)
        if self._size < count:
            return False
        capacity = len(self._ring)
        first = min(count, capacity - self._start)
        out[:first] = self._ring[self._start : self._start + first]
        out[first:] = self._ring[: count - first]
        self._start = (self._start + count) % capacity
        self._size -= count
        return True


class TrunkAudioTrack(MediaStreamTrack):
    """The audio the browser hears: trunk PCM, 20 ms per ``recv``, silence when none."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._fifo = PcmFifo(JITTER_CAPACITY)
        self._playing = False
        self._start: float | None = None
        self._pts = 0
        self.underruns = 0

    def push(self, pcm: Pcm) -> None:
        """Queue decoded trunk audio (the trunk leg's sink)."""
        self._fifo.push(pcm)

    @property
    def overflow(self) -> int:
        return self._fifo.overflow

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        else:
            self._pts += FRAME_SAMPLES
            wait = self._start + self._pts / SAMPLE_RATE - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -_MAX_LAG:
                # The loop stalled: restart the clock rather than send a burst.
                self._start = loop.time() - self._pts / SAMPLE_RATE
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        # Play straight into the frame's own buffer: no intermediate copy.
        self._fill(np.frombuffer(memoryview(frame.planes[0]), dtype=np.int16, count=FRAME_SAMPLES))
        frame.pts = self._pts
        frame.sample_rate = SAMPLE_RATE
        frame.time_base = _TIME_BASE
        return frame

    def _fill(self, out: Pcm) -> None:
        if not self._playing and len(self._fifo) >= PREBUFFER:
            self._playing = True
        if self._playing and self._fifo.pull(out):
            return
        if self._playing:
            self._playing = False
            self.underruns += 1
        out.fill(0)


class PcmSender(Protocol):
    """Where browser audio goes (the trunk leg)."""

    @property
    def sending(self) -> bool: ...

    def send_pcm(self, pcm: Pcm) -> None: ...


class _Framer:
    """Cuts a stream of samples into fixed frames without a per-frame allocation."""

    def __init__(self, frame: int, capacity: int) -> None:
        self._buffer = np.zeros(capacity, dtype=np.int16)
        self._frame = frame
        self._size = 0

    def push(self, pcm: Pcm, send: PcmSender) -> None:
        offset = 0
        total = len(pcm)
        while offset < total:
            count = min(total - offset, len(self._buffer) - self._size)
            self._buffer[self._size : self._size + count] = pcm[offset : offset + count]
            self._size += count
            offset += count
            whole = self._size - self._size % self._frame
            for start in range(0, whole, self._frame):
                send.send_pcm(self._buffer[start : start + self._frame])
            rest = self._size - whole
            self._buffer[:rest] = self._buffer[whole : self._size]
            self._size = rest


async def pump_browser_audio(track: MediaStreamTrack, trunk: PcmSender) -> None:
    """Forward the browser's audio to the trunk until the track ends."""
    # Always resample, even before the trunk answers, so the resampler sees one
    # continuous stream; only sending waits for the answer.
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    framer = _Framer(FRAME_SAMPLES, 8 * 960)
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        if not isinstance(frame, av.AudioFrame):
            continue
        for out in resampler.resample(frame):
            if trunk.sending:
                # s16 mono: one plane of int16 samples.
                framer.push(cast(Pcm, out.to_ndarray().reshape(-1)), trunk)
