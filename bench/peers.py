"""A WebRTC peer for the comparison drivers: aiortc sending a tone, loopback only.

The drivers (``bench.rtpengine``, ``bench.janus``) take an offer SDP and give
back an answer SDP, so any peer fits; this one is the stand-in until a leaner
one carries the load. Its ICE offers 127.0.0.1 alone and asks no STUN server
(aiortc's default would be a public one).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Protocol

import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from bench.procstat import Window
from tests.integration.client import TONE_HZ, ToneTrack


@contextlib.contextmanager
def loopback_candidates() -> Iterator[None]:
    """aioice gathers 127.0.0.1 as its only host candidate while this is entered.

    aioice skips loopback when it lists the machine's addresses; candidates are
    gathered in ``setLocalDescription``, so enter this around that call.
    """
    import aioice.ice

    original = aioice.ice.get_host_addresses

    def loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return ["127.0.0.1"] if use_ipv4 else []

    aioice.ice.get_host_addresses = loopback
    try:
        yield
    finally:
        aioice.ice.get_host_addresses = original


class AiortcPeer:
    """One browser stand-in: ``offer()`` → give the SDP to a driver → ``accept(answer)``."""

    def __init__(self, codec: str = "PCMU", frequency: float = TONE_HZ) -> None:
        self.codec = codec
        self.frequency = frequency
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.frames = 0
        self._audio: list[np.ndarray] = []
        self._rate = 0
        self._keep_audio = True
        self._tasks: list[asyncio.Task[None]] = []
        self.connected = asyncio.Event()

        @self.pc.on("connectionstatechange")
        def on_state() -> None:
            if self.pc.connectionState == "connected":
                self.connected.set()

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._tasks.append(asyncio.create_task(self._record(track)))

    async def offer(self) -> str:
        transceiver = self.pc.addTransceiver(ToneTrack(self.frequency), direction="sendrecv")
        wanted = f"audio/{self.codec}".lower()
        codecs = [
            c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType.lower() == wanted
        ]
        if not codecs:
            raise ValueError(f"aiortc has no {self.codec}")
        transceiver.setCodecPreferences(codecs)
        offer = await self.pc.createOffer()
        with loopback_candidates():
            await self.pc.setLocalDescription(offer)
        return str(self.pc.localDescription.sdp)

    async def accept(self, answer_sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(answer_sdp, "answer"))

    async def wait_connected(self, timeout: float = 15.0) -> None:
        async with asyncio.timeout(timeout):
            await self.connected.wait()

    async def _record(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame: Any = await track.recv()
                self.frames += 1
                if self._keep_audio:
                    pcm = frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0]
                    self._rate = frame.sample_rate
                    self._audio.append(pcm.astype(np.float64))

    def keep_audio(self, keep: bool) -> None:
        """Whether received frames are kept for ``dominant_frequency`` (costs CPU under load)."""
        self._keep_audio = keep
        if not keep:
            self._audio.clear()

    def clear(self) -> None:
        self.frames = 0
        self._audio.clear()

    def dominant_frequency(self) -> tuple[float, float]:
        """(peak frequency in Hz, RMS level) of the audio received and kept so far."""
        if not self._audio:
            return 0.0, 0.0
        pcm = np.concatenate(self._audio)
        if pcm.size < 1024:
            return 0.0, 0.0
        spectrum = np.abs(np.fft.rfft(pcm * np.hanning(pcm.size)))
        spectrum[0] = 0
        return float(np.argmax(spectrum) * self._rate / pcm.size), float(np.sqrt(np.mean(pcm**2)))

    def stats(self) -> dict[str, Any]:
        return {"frames": self.frames, "state": self.pc.connectionState}

    async def close(self) -> None:
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class Call(Protocol):
    """What a driver's ``call(offer_sdp)`` returns."""

    answer_sdp: str

    async def hangup(self) -> Any: ...


Gateway = Callable[[str], Awaitable[Call]]
"A driver's ``call``: takes a WebRTC offer, returns the call with its answer."

PACKETS_PER_CALL = 100
"RTP packets a second one call puts through a media server: 50 each way at 20 ms."


async def idle_share(pid: int, seconds: float) -> float:
    """Share of one core ``pid`` uses doing nothing in particular."""
    window = Window(pid).start()
    await asyncio.sleep(seconds)
    return window.stop().pid_share


async def measure_webrtc(
    gateway: Gateway,
    pid: int,
    calls: int,
    hold: float,
    idle: float = 0.0,
    codec: str = "PCMU",
    connect_timeout: float = 20.0,
    details: Callable[[list[Any]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """``calls`` aiortc peers through ``gateway`` at once, held ``hold`` seconds.

    The media server's CPU (process ``pid``, less ``idle``) is sampled over the
    hold; each peer counts the audio frames it gets back; the first one keeps
    its audio to check its own tone came back. ``details`` adds the driver's own
    figures from the calls it placed.
    """
    peers: list[AiortcPeer] = []
    placed: list[Call] = []
    setup_ms: list[float] = []
    try:
        for _ in range(calls):
            peer = AiortcPeer(codec)
            peers.append(peer)
            offer = await peer.offer()
            started = time.perf_counter()
            call = await gateway(offer)
            setup_ms.append((time.perf_counter() - started) * 1000)
            placed.append(call)
            await peer.accept(call.answer_sdp)
        for peer in peers:
            await peer.wait_connected(connect_timeout)
        await asyncio.sleep(1.0)
        for peer in peers:
            peer.clear()
            peer.keep_audio(peer is peers[0])
        window = Window(pid).start()
        await asyncio.sleep(hold)
        window.stop()
        frames = [peer.frames / window.wall for peer in peers]
        tone, level = peers[0].dominant_frequency()
    finally:
        for call in placed:
            with contextlib.suppress(Exception):
                await call.hangup()
        for peer in peers:
            await peer.close()
    per_call = (window.pid_share - idle) / calls
    return {
        "calls": calls,
        "idle_core_pct": idle * 100,
        "core_pct": window.pid_share * 100,
        "core_pct_per_call": per_call * 100,
        "us_per_packet": per_call * 1e6 / PACKETS_PER_CALL,
        "client_core_pct": window.own_share * 100,
        "machine_busy_pct": window.machine_busy * 100,
        "frames_per_s_min": min(frames),
        "frames_per_s_mean": sum(frames) / len(frames),
        "tone_hz": round(tone),
        "tone_ok": abs(tone - TONE_HZ) < 20 and level > 100,
        "setup_ms_median": sorted(setup_ms)[len(setup_ms) // 2],
        **(details(placed) if details is not None else {}),
    }


def describe_webrtc(run: dict[str, Any]) -> str:
    return (
        f"{run['calls']} calls: {run['core_pct_per_call']:.2f} %/call,"
        f" {run['us_per_packet']:.1f} µs/packet ({run['core_pct']:.1f} % total,"
        f" idle {run['idle_core_pct']:.2f} %), client {run['client_core_pct']:.0f} %,"
        f" machine {run['machine_busy_pct']:.0f} %; frames/s min {run['frames_per_s_min']:.1f},"
        f" tone {run['tone_hz']} Hz ok={run['tone_ok']}, setup median"
        f" {run['setup_ms_median']:.0f} ms"
    )
