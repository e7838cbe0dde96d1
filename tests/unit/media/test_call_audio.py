"""Audio through a media worker: an aiortc browser ⇄ MediaCall ⇄ a plain RTP trunk socket.

The trunk answers PCMU. A browser offering PCMU is relayed untouched (no
``Transcoder`` is ever made); one offering only Opus is transcoded. Either
way the browser's 1 kHz tone reaches the trunk and the trunk's 1 kHz tone
reaches the browser, found by FFT.
"""

import asyncio
import contextlib
import fractions
import itertools
from typing import Any

import av
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from proto import subjects
from proto.events import CallAnswered, CallStatsReported, MediaConnected, MediaPrepared
from services.media import core as core_module
from services.media import rtcp
from services.media.g711 import ulaw_decode, ulaw_encode
from services.media.rtp import RtpPacket, RtpSession
from services.media.sdp import build_offer

from .test_app import make_worker, request, until
from .test_ports import free_range


def parsed(reports: list[bytes]) -> list[rtcp.Report]:
    found: list[rtcp.Report] = []
    for data in reports:
        found += rtcp.parse(data)
    return found


class ToneTrack(MediaStreamTrack):
    """A 1 kHz tone at 48 kHz stereo, 20 ms per frame, paced like a microphone."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._pts = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        await asyncio.sleep(0.02)
        t = (self._pts + np.arange(960)) / 48000
        mono = (8000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.repeat(mono, 2).reshape(1, -1), "s16", "stereo")
        frame.sample_rate = 48000
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, 48000)
        self._pts += 960
        return frame


def peak_hz(pcm: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
    return float(np.argmax(spectrum) * rate / len(pcm))


@pytest.mark.parametrize(("codec", "passthrough"), [("PCMU", True), ("opus", False)])
async def test_tone_both_ways(codec: str, passthrough: bool, monkeypatch: Any) -> None:
    made: list[Any] = []
    real = core_module.Transcoder

    def counting(*args: Any) -> Any:
        made.append(args)
        return real(*args)

    monkeypatch.setattr(core_module, "Transcoder", counting)
    loop = asyncio.get_running_loop()
    received: list[bytes] = []

    class Trunk(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            received.append(data)

    reports: list[bytes] = []

    class TrunkRtcp(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            reports.append(data)

    trunk_port, _ = free_range(1)
    trunk, _ = await loop.create_datagram_endpoint(Trunk, local_addr=("127.0.0.1", trunk_port))
    trunk_rtcp, _ = await loop.create_datagram_endpoint(
        TrunkRtcp, local_addr=("127.0.0.1", trunk_port + 1)
    )
    worker, bus, _ports = make_worker()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    transceiver = pc.addTransceiver(ToneTrack(), direction="sendrecv")
    transceiver.setCodecPreferences(
        [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType.endswith(codec)]
    )
    heard: list[np.ndarray] = []
    rates: set[int] = set()
    listeners: list[asyncio.Future[None]] = []

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        async def listen() -> None:
            with contextlib.suppress(MediaStreamError):
                while True:
                    frame = await track.recv()
                    assert isinstance(frame, av.AudioFrame)
                    channels = len(frame.layout.channels)
                    heard.append(frame.to_ndarray().reshape(-1)[::channels].copy())  # the left
                    rates.add(frame.sample_rate)

        listeners.append(asyncio.ensure_future(listen()))

    try:
        await pc.setLocalDescription(await pc.createOffer())
        await worker.on_work(request("c1", pc.localDescription.sdp))
        prepared = await bus.next_event(MediaPrepared)
        await pc.setRemoteDescription(RTCSessionDescription(prepared.answer_sdp, "answer"))
        await bus.next_event(MediaConnected)
        media_port = int(prepared.trunk_offer_sdp.split("m=audio ")[1].split()[0])
        await asyncio.sleep(0.2)
        assert received == []  # nothing goes to the trunk before its answer
        answer = build_offer("127.0.0.1", trunk_port, 7)
        await bus.deliver(
            subjects.call_events("c1", "sipagent"), CallAnswered(call_id="c1", answer_sdp=answer)
        )

        await until(lambda: len(received) >= 60)
        packets = [RtpPacket.parse(data) for data in received]
        assert {p.payload_type for p in packets} == {0}
        audio = np.concatenate([ulaw_decode(p.payload) for p in packets[10:]])
        assert abs(peak_hz(audio, 8000) - 1000) < 30
        sequences = [p.sequence_number for p in packets]
        assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(sequences))

        session = RtpSession(("127.0.0.1", media_port), 0)
        t = np.arange(160) / 8000
        for n in range(75):
            tone = (8000 * np.sin(2 * np.pi * 1000 * (t + n * 0.02))).astype(np.int16)
            trunk.sendto(session.packet_for(ulaw_encode(tone), 160, 0), ("127.0.0.1", media_port))
            await asyncio.sleep(0.02)
        await until(lambda: sum(np.abs(f).max() > 1000 for f in heard) >= 30)
        loud = [f for f in heard if np.abs(f).max() > 1000]
        (rate,) = rates
        assert abs(peak_hz(np.concatenate(loud[5:25]), rate) - 1000) < 30
        assert (made == []) is passthrough

        # RTCP is ours on each leg: a sender report reached the trunk's RTCP port,
        # about the stream we sent it and with a block about the stream it sent us.
        await until(lambda: any(r.ntp is not None and r.blocks for r in parsed(reports)))
        report = next(r for r in parsed(reports) if r.ntp is not None and r.blocks)
        assert report.ssrc == packets[0].ssrc
        assert report.blocks[0].ssrc == session.ssrc
        # The browser got our sender reports (aiortc shows them as remote-outbound-rtp).
        receiver = pc.getReceivers()[0]

        async def browser_saw_a_report() -> bool:
            stats = await receiver.getStats()
            return any(s.type == "remote-outbound-rtp" for s in stats.values())

        async with asyncio.timeout(15):
            while not await browser_saw_a_report():
                await asyncio.sleep(0.2)
    finally:
        for task in listeners:
            task.cancel()
        await pc.close()
        await worker.close()
        trunk.close()
        trunk_rtcp.close()
    # The call's figures, published at its end: both legs counted.
    final = [e for _, e in bus.published if isinstance(e, CallStatsReported) and e.final]
    assert len(final) == 1
    (stats,) = final
    assert stats.passthrough is passthrough
    assert stats.trunk is not None and stats.trunk.packets_in == 75
    assert stats.trunk.codec == "PCMU" and stats.browser.codec.upper() == codec.upper()
    assert stats.browser.packets_in > 50 and stats.browser.packets_out > 50
    assert stats.browser.mos > 4.0
