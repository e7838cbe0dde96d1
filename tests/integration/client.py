"""A browser stand-in: aiortc plus the bridge's WebSocket protocol.

It sends a pure tone as its microphone and records the audio the bridge
sends back, so a test can check by FFT that its own tone returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import aiohttp
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, MediaStreamTrack

from services.media.browser_transport import gather_on

TONE_HZ = 1000.0

# The stand-in's ICE candidates on 127.0.0.1 alone (aioice skips loopback by
# default and would gather on every other interface): test traffic stays on
# loopback, like the bridge under test (RTP_BIND_HOST=127.0.0.1). The bench
# uses this client outside pytest, so it says so itself (tests/conftest.py too).
gather_on("127.0.0.1")


class ToneTrack(AudioStreamTrack):
    """An 8 kHz microphone that plays a sine tone at ``frequency``."""

    def __init__(self, frequency: float = TONE_HZ, amplitude: int = 8000) -> None:
        super().__init__()
        self._frequency = frequency
        self._amplitude = amplitude
        self._sample = 0

    async def recv(self):  # type: ignore[no-untyped-def]
        frame = await super().recv()
        n = frame.samples
        t = (np.arange(n) + self._sample) / frame.sample_rate
        self._sample += n
        pcm = (self._amplitude * np.sin(2 * np.pi * self._frequency * t)).astype("<i2")
        frame.planes[0].update(pcm.tobytes())
        return frame


class BridgeClient:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.messages: list[dict[str, Any]] = []
        self.pc: RTCPeerConnection | None = None
        self._http: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._audio: list[np.ndarray] = []
        self._audio_rate = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def connect(
        self,
        *,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> BridgeClient:
        """Open the WebSocket; ``token`` goes in ``?token=``, ``headers`` on the upgrade
        (``Authorization``, ``Origin``, ``X-Forwarded-For``). A refused upgrade raises
        ``aiohttp.WSServerHandshakeError`` (its ``status``: 403, 503)."""
        self._http = aiohttp.ClientSession()
        url = self.base_url.replace("http", "ws", 1) + "/ws"
        if token is not None:
            url += "?" + urlencode({"token": token})
        try:
            self.ws = await self._http.ws_connect(url, headers=headers)
        except BaseException:
            await self._http.close()
            self._http = None
            raise
        self._tasks.append(asyncio.create_task(self._read()))
        return self

    async def wait_closed(self, timeout: float = 10.0) -> int | None:
        """Wait until the server has closed the WebSocket; its close code."""
        assert self.ws is not None
        async with asyncio.timeout(timeout):
            while not self.ws.closed:
                await asyncio.sleep(0.02)
        return self.ws.close_code

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                data = json.loads(msg.data)
                self.messages.append(data)
                await self._inbox.put(data)

    async def send(self, message: dict[str, Any] | str) -> None:
        assert self.ws is not None
        await self.ws.send_str(message if isinstance(message, str) else json.dumps(message))

    async def expect(self, kind: str, timeout: float = 15.0) -> dict[str, Any]:
        """The next message of type ``kind``; fails on timeout or an unexpected end."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self._inbox.get()
                if msg["type"] == kind:
                    return msg
                if msg["type"] in ("ended", "error") and kind not in ("ended", "error"):
                    raise AssertionError(f"wanted {kind}, got {msg}; all: {self.messages}")

    async def offer(
        self,
        codec: str = "opus",
        destination: str | None = "+15551234567",
        headers: dict[str, Any] | None = None,
        microphone: MediaStreamTrack | None = None,
    ) -> None:
        """Send an offer; the microphone plays ``TONE_HZ`` unless another track is given."""
        message: dict[str, Any] = {
            "type": "offer",
            "sdp": await self._local_offer(codec, microphone),
        }
        if destination is not None:
            message["destination"] = destination
        if headers is not None:
            message["headers"] = headers
        await self.send(message)

    async def listen(self, user: str | None = "alice", timeout: float = 10.0) -> dict[str, Any]:
        """Listen for inbound calls (``user``: without tokens); the ``listening`` reply."""
        message: dict[str, Any] = {"type": "listen"}
        if user is not None:
            message["user"] = user
        await self.send(message)
        return await self.expect("listening", timeout)

    async def accept(
        self, call_id: str, codec: str = "opus", microphone: MediaStreamTrack | None = None
    ) -> None:
        """Accept an ``incoming`` call with a fresh offer; then ``accept_answer``."""
        sdp = await self._local_offer(codec, microphone)
        await self.send({"type": "accept", "call_id": call_id, "sdp": sdp})

    async def reject(self, call_id: str) -> None:
        await self.send({"type": "reject", "call_id": call_id})

    async def _local_offer(self, codec: str, microphone: MediaStreamTrack | None) -> str:
        # No ICE servers: aiortc's default would ask a public STUN server.
        pc = self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        transceiver = pc.addTransceiver(microphone or ToneTrack(), direction="sendrecv")
        wanted = f"audio/{codec}".lower()
        codecs = [
            c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType.lower() == wanted
        ]
        assert codecs, f"aiortc has no {codec}"
        transceiver.setCodecPreferences(codecs)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._tasks.append(asyncio.create_task(self._record(track)))

        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)

    async def accept_answer(self, timeout: float = 15.0) -> None:
        answer = await self.expect("answer", timeout)
        assert self.pc is not None
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))

    async def _record(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                pcm = frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0]
                self._audio_rate = frame.sample_rate
                self._audio.append(pcm.astype(np.float64))

    def clear_audio(self) -> None:
        self._audio.clear()

    def received_audio(self) -> tuple[np.ndarray, int]:
        if not self._audio:
            return np.zeros(0), 0
        return np.concatenate(self._audio), self._audio_rate

    def dominant_frequency(self) -> tuple[float, float]:
        """(peak frequency in Hz, RMS level) of the audio received so far."""
        pcm, rate = self.received_audio()
        if pcm.size < 1024:
            return 0.0, 0.0
        window = pcm * np.hanning(pcm.size)
        spectrum = np.abs(np.fft.rfft(window))
        spectrum[0] = 0
        peak = float(np.argmax(spectrum) * rate / pcm.size)
        return peak, float(np.sqrt(np.mean(pcm**2)))

    async def hangup(self) -> None:
        await self.send({"type": "hangup"})

    async def drop_socket(self) -> None:
        if self.ws is not None:
            await self.ws.close()

    async def close(self) -> None:
        if self.pc is not None:
            await self.pc.close()
        if self.ws is not None:
            await self.ws.close()
        if self._http is not None:
            await self._http.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def connected_client(base_url: str, codec: str = "PCMU") -> BridgeClient:
    """A browser stand-in whose call is connected: offer sent, answer taken, ``connected`` seen."""
    client = await BridgeClient(base_url).connect()
    await client.offer(codec=codec)
    await client.accept_answer()
    await client.expect("connected")
    return client
