import asyncio
import contextlib
import socket
from collections.abc import Callable

import av
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from proto import errors
from services.common.settings import Settings
from services.media.g711 import ulaw_decode, ulaw_encode
from services.media.relay import TrunkAudioTrack, pump_browser_audio
from services.media.rtp import RtpPacket, RtpSession
from services.media.sdp import PCMU
from services.media.trunk_leg import TrunkLeg
from services.media.webrtc_leg import (
    BadOfferError,
    WebRtcLeg,
    add_public_candidates,
    ice_configuration,
)

from .test_relay import ToneTrack

ANSWER = (
    "v=0\r\n"
    "m=audio 50000 UDP/TLS/RTP/SAVPF 111\r\n"
    "c=IN IP4 10.0.0.5\r\n"
    "a=candidate:1 1 udp 2130706431 10.0.0.5 50000 typ host\r\n"
    "a=candidate:2 1 udp 2130706431 172.17.0.1 50002 typ host\r\n"
    "a=candidate:3 1 udp 2130706431 fe80::1 50004 typ host\r\n"
    "a=end-of-candidates\r\n"
    "a=ice-ufrag:abcd\r\n"
)


def test_public_candidates_are_added_per_port() -> None:
    sdp = add_public_candidates(ANSWER, "203.0.113.7")
    lines = sdp.split("\r\n")
    public = [line for line in lines if " 203.0.113.7 " in line]
    assert public == [
        "a=candidate:pub1 1 udp 2130706430 203.0.113.7 50000 typ host",
        "a=candidate:pub2 1 udp 2130706430 203.0.113.7 50002 typ host",
    ]
    # After the section's candidates, before end-of-candidates; originals kept.
    assert lines.index(public[-1]) < lines.index("a=end-of-candidates")
    assert "a=candidate:1 1 udp 2130706431 10.0.0.5 50000 typ host" in lines
    assert sdp.endswith("\r\n")


def test_public_candidates_not_added_when_already_gathered() -> None:
    assert add_public_candidates(ANSWER, "10.0.0.5") == ANSWER
    assert add_public_candidates(ANSWER, "not-an-ip") == ANSWER


def test_ice_servers_empty_by_default() -> None:
    assert ice_configuration(Settings()).iceServers == []
    configured = ice_configuration(
        Settings(ice_servers=("stun:stun.example.org",), ice_username="u", ice_credential="p")
    )
    assert configured.iceServers is not None
    (server,) = configured.iceServers
    assert server.urls == ["stun:stun.example.org"]
    assert (server.username, server.credential) == ("u", "p")


def browser() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


async def browser_offer(pc: RTCPeerConnection) -> str:
    await pc.setLocalDescription(await pc.createOffer())
    return str(pc.localDescription.sdp)


def leg(events: list[str]) -> WebRtcLeg:
    return WebRtcLeg(
        Settings(), lambda: events.append("connected"), lambda: events.append("failed")
    )


@pytest.mark.parametrize("offer", ["", "garbage", "v=0\r\nm=audio x\r\n"])
async def test_bad_offer(offer: str) -> None:
    webrtc = leg([])
    with pytest.raises(BadOfferError) as info:
        await webrtc.answer(offer, TrunkAudioTrack())
    assert info.value.code == errors.BAD_SDP
    await webrtc.close()


async def test_offer_without_audio() -> None:
    pc = browser()
    pc.createDataChannel("chat")
    webrtc = leg([])
    with pytest.raises(BadOfferError, match="no audio"):
        await webrtc.answer(await browser_offer(pc), TrunkAudioTrack())
    await webrtc.close()
    await pc.close()


async def test_trickled_candidates() -> None:
    pc = browser()
    pc.addTransceiver("audio")
    webrtc = leg([])
    await webrtc.answer(await browser_offer(pc), TrunkAudioTrack())
    # Garbage is ignored, a valid line and end-of-candidates are accepted.
    await webrtc.add_candidate("candidate:garbage", "0", 0)
    await webrtc.add_candidate("candidate:1 1 udp 2130706431 127.0.0.1 9 typ host", "0", 0)
    await webrtc.add_candidate("", None, None)
    await webrtc.close()
    await pc.close()


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


def peak_hz(pcm: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
    return float(np.argmax(spectrum) * rate / len(pcm))


async def test_audio_flows_both_ways_through_the_bridge() -> None:
    """Browser (aiortc, Opus) ⇄ WebRtcLeg ⇄ relay ⇄ TrunkLeg ⇄ a plain RTP socket."""
    loop = asyncio.get_running_loop()
    events: list[str] = []
    playout = TrunkAudioTrack()

    # The trunk: a plain UDP socket collecting what we send.
    received: list[bytes] = []

    class Trunk(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            received.append(data)

    trunk_transport, _ = await loop.create_datagram_endpoint(Trunk, local_addr=("127.0.0.1", 0))
    trunk_addr = trunk_transport.get_extra_info("sockname")[:2]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    media_addr = sock.getsockname()[:2]
    trunk_leg = await TrunkLeg.open(sock, playout.push)

    pc = browser()
    pc.addTrack(ToneTrack(frames=10_000))
    heard: list[np.ndarray] = []
    listeners: list[asyncio.Future[None]] = []

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        async def listen() -> None:
            with contextlib.suppress(MediaStreamError):
                while True:
                    frame = await track.recv()
                    assert isinstance(frame, av.AudioFrame)
                    heard.append(frame.to_ndarray().reshape(-1)[::2].copy())  # left channel

        listeners.append(asyncio.ensure_future(listen()))

    webrtc = leg(events)
    pump = None
    try:
        answer = await webrtc.answer(await browser_offer(pc), playout)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        assert webrtc.remote_audio is not None
        pump = asyncio.create_task(pump_browser_audio(webrtc.remote_audio, trunk_leg))
        await wait_for(lambda: events == ["connected"])

        # Nothing goes to the trunk before its answer is known.
        await asyncio.sleep(0.2)
        assert received == []
        trunk_leg.start(trunk_addr, PCMU)
        await wait_for(lambda: len(received) >= 60)
        packets = [RtpPacket.parse(data) for data in received]
        assert {p.payload_type for p in packets} == {0}
        assert all(len(p.payload) == 160 for p in packets)
        audio = np.concatenate([ulaw_decode(p.payload) for p in packets[10:]])
        assert abs(peak_hz(audio, 8000) - 1000) < 30

        # Trunk → browser: a 1 kHz PCMU stream toward the media port.
        session = RtpSession(media_addr, 0)
        t = np.arange(160) / 8000
        for n in range(75):
            tone = (8000 * np.sin(2 * np.pi * 1000 * (t + n * 0.02))).astype(np.int16)
            trunk_transport.sendto(session.packet_for(ulaw_encode(tone), 160, 0), media_addr)
            await asyncio.sleep(0.02)
        await wait_for(lambda: len(heard) >= 50)
        rate = 48000
        loud = [f for f in heard if np.abs(f).max() > 1000]
        assert len(loud) >= 20
        assert abs(peak_hz(np.concatenate(loud[5:25]), rate) - 1000) < 30
        assert trunk_leg.stats is not None and trunk_leg.stats.packets_in == 75
    finally:
        for task in [pump, *listeners]:
            if task is not None:
                task.cancel()
        await webrtc.close()
        await pc.close()
        trunk_leg.close()
        trunk_transport.close()
        playout.stop()
