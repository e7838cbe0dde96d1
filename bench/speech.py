"""Speech quality through the bridge: PESQ-NB of spoken words sent and heard back.

espeak-ng (Debian) speaks a few sentences; the aiortc browser stand-in plays
them as its microphone; the demo echo peer sends them back, so the page hears
them after both directions (browser → trunk → browser): a round trip, each
leg's conversion twice. The received audio is aligned with the original by
cross-correlation and scored by ITU-T P.862 (the ``pesq`` package).
"""

from __future__ import annotations

import asyncio
import fractions
import subprocess
import tempfile
import wave
from pathlib import Path

import av
import numpy as np
from aiortc.mediastreams import AudioStreamTrack

from tests.integration.client import BridgeClient

TEXT = (
    "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background. "
    "It is easy to tell the depth of a well. These days a chicken leg is a rare dish."
)
RATE = 8000


def speak(text: str = TEXT) -> np.ndarray:
    """``text`` spoken by espeak-ng, as 8 kHz 16-bit samples."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-s", "150", "-w", str(path), text], check=True)
        with wave.open(str(path)) as wav:
            rate = wav.getframerate()
            pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = rate
    out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    out += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(out).astype(np.int16)


class SpeechTrack(AudioStreamTrack):
    """A microphone that says ``pcm`` (8 kHz) once after ``lead`` seconds, silence around it."""

    def __init__(self, pcm: np.ndarray, lead: float = 1.0) -> None:
        super().__init__()
        self._pcm = np.concatenate([np.zeros(int(lead * RATE), np.int16), pcm])
        self._at = 0

    async def recv(self) -> av.AudioFrame:  # type: ignore[override]
        frame = await super().recv()  # paced, 20 ms at 48 kHz stereo? aiortc gives 8 kHz mono
        samples = frame.samples
        chunk = np.zeros(samples, np.int16)
        if frame.sample_rate == RATE:
            part = self._pcm[self._at : self._at + samples]
            chunk[: len(part)] = part
            self._at += samples
        out = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        out.sample_rate = frame.sample_rate
        out.pts = frame.pts
        out.time_base = fractions.Fraction(1, frame.sample_rate)
        return out


def align(reference: np.ndarray, heard: np.ndarray) -> np.ndarray:
    """``heard`` shifted so that it lines up with ``reference`` (same length)."""
    ref = reference.astype(np.float64)
    deg = heard.astype(np.float64)
    size = 1 << int(np.ceil(np.log2(len(ref) + len(deg))))
    corr = np.fft.irfft(np.fft.rfft(deg, size) * np.conj(np.fft.rfft(ref, size)), size)
    lag = int(np.argmax(corr[: len(deg)]))
    shifted = deg[lag : lag + len(ref)]
    if len(shifted) < len(ref):
        shifted = np.concatenate([shifted, np.zeros(len(ref) - len(shifted))])
    return shifted.astype(np.int16)


def to_8k(pcm: np.ndarray, rate: int) -> np.ndarray:
    if rate == RATE:
        return pcm.astype(np.int16)
    resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
    frame = av.AudioFrame.from_ndarray(
        pcm.astype(np.int16).reshape(1, -1), format="s16", layout="mono"
    )
    frame.sample_rate = rate
    out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    out += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(out).astype(np.int16)


async def pesq_round_trip(base_url: str, codec: str, speech: np.ndarray) -> float:
    """PESQ-NB of ``speech`` said by a browser offering ``codec`` and heard back via the echo."""
    from pesq import pesq

    client = await BridgeClient(base_url).connect()
    try:
        await client.offer(codec=codec, destination=None, microphone=SpeechTrack(speech))
        await client.accept_answer()
        await client.expect("connected", 20)
        client.clear_audio()
        await asyncio.sleep(1.0 + len(speech) / RATE + 1.5)
        heard, rate = client.received_audio()
        await client.hangup()
        await client.expect("ended")
    finally:
        await client.close()
    if heard.size == 0:
        return float("nan")
    aligned = align(speech, to_8k(heard, rate))
    return float(pesq(RATE, speech.astype(np.float64), aligned.astype(np.float64), "nb"))
