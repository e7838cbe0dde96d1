import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from proto import errors
from services.common.settings import Settings
from services.media.webrtc_leg import (
    BadOfferError,
    WebRtcLeg,
    add_public_candidates,
    codec_preferences,
    ice_configuration,
)

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
        await webrtc.answer(offer, ignore, ignore)
    assert info.value.code == errors.BAD_SDP
    await webrtc.close()


async def test_offer_without_audio() -> None:
    pc = browser()
    pc.createDataChannel("chat")
    webrtc = leg([])
    with pytest.raises(BadOfferError, match="no audio"):
        await webrtc.answer(await browser_offer(pc), ignore, ignore)
    await webrtc.close()
    await pc.close()


async def test_trickled_candidates() -> None:
    pc = browser()
    pc.addTransceiver("audio")
    webrtc = leg([])
    await webrtc.answer(await browser_offer(pc), ignore, ignore)
    # Garbage is ignored, a valid line and end-of-candidates are accepted.
    await webrtc.add_candidate("candidate:garbage", "0", 0)
    await webrtc.add_candidate("candidate:1 1 udp 2130706431 127.0.0.1 9 typ host", "0", 0)
    await webrtc.add_candidate("", None, None)
    await webrtc.close()
    await pc.close()


def ignore(_packet: memoryview) -> None:
    pass


def test_codec_preferences_put_the_trunk_codecs_first() -> None:
    names = [c.mimeType for c in codec_preferences(("PCMA", "PCMU"))]
    assert names == ["audio/PCMA", "audio/PCMU", "audio/opus"]
    names = [c.mimeType for c in codec_preferences(("opus", "PCMU"))]
    assert names == ["audio/opus", "audio/PCMU", "audio/PCMA"]


@pytest.mark.parametrize(("trunk", "expected"), [(("PCMU",), "PCMU"), (("opus",), "opus")])
async def test_answer_takes_the_first_trunk_codec_the_browser_offers(
    trunk: tuple[str, ...], expected: str
) -> None:
    pc = browser()
    pc.addTransceiver("audio")  # aiortc offers opus, PCMU, PCMA
    webrtc = WebRtcLeg(Settings(sip_codecs=trunk), lambda: None, lambda: None)
    try:
        await webrtc.answer(await browser_offer(pc), ignore, ignore)
        assert webrtc.codec is not None and webrtc.codec.name == expected
        assert webrtc.transport is not None
    finally:
        await webrtc.close()
        await pc.close()


def test_ice_gathers_on_the_bind_address_loopback_included() -> None:
    import aioice.ice

    from services.media.browser_transport import gather_on

    try:
        gather_on("127.0.0.1")
        assert aioice.ice.get_host_addresses(True, True) == ["127.0.0.1"]
        assert aioice.ice.get_host_addresses(False, True) == []
        gather_on("0.0.0.0")
        assert "127.0.0.1" in aioice.ice.get_host_addresses(True, False)
    finally:
        gather_on("127.0.0.1")  # what every test process uses (tests/conftest.py)
