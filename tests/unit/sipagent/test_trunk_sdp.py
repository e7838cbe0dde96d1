"""Our SDP answers and offers in a confirmed dialog (RFC 3264)."""

from __future__ import annotations

import pytest

from services.sipagent.trunk_sdp import (
    Audio,
    LocalSdp,
    SdpOfferError,
    answer_direction,
    has_telephone_event,
    is_held,
    narrowed,
)
from tests.unit.sipagent.peer import OUR_OFFER, trunk_sdp


@pytest.mark.parametrize(
    ("offered", "local_hold", "answered"),
    [
        ("sendrecv", False, "sendrecv"),
        ("sendonly", False, "recvonly"),
        ("recvonly", False, "sendonly"),
        ("inactive", False, "inactive"),
        ("sendrecv", True, "sendonly"),
        ("sendonly", True, "inactive"),
    ],
)
def test_answer_direction(offered: str, local_hold: bool, answered: str) -> None:
    assert answer_direction(offered, local_hold) == answered


def test_answer_keeps_our_address_and_takes_the_offers_numbers() -> None:
    local = LocalSdp(OUR_OFFER)
    offer = trunk_sdp(formats="8 0 18 96").replace("a=sendrecv", "a=rtpmap:96 telephone-event/8000")
    answer = Audio.parse(local.answer(offer, local_hold=False))
    assert answer.connection == "192.0.2.1" and answer.port == 40000
    assert answer.formats == ["8", "0", "96"]
    assert answer.encodings["96"] == "TELEPHONE-EVENT/8000"


def test_no_telephone_event_unless_offered() -> None:
    answer = LocalSdp(OUR_OFFER).answer(trunk_sdp(formats="0"), local_hold=False)
    assert not has_telephone_event(answer)


def test_version_rises_only_when_our_sdp_changes() -> None:
    local = LocalSdp(OUR_OFFER)
    versions = []
    for direction in ("sendonly", "sendonly", "sendrecv"):
        sdp = local.offer(direction)
        versions.append(int(sdp.split("o=- 7 ", 1)[1].split()[0]))
    assert versions == [8, 8, 9]


def test_no_common_codec() -> None:
    with pytest.raises(SdpOfferError):
        LocalSdp(OUR_OFFER).answer(trunk_sdp(formats="18"), local_hold=False)


def test_hold_forms() -> None:
    assert is_held(trunk_sdp("sendonly")) and is_held(trunk_sdp("inactive"))
    assert is_held(trunk_sdp(address="0.0.0.0"))
    assert not is_held(trunk_sdp()) and not is_held("garbage")
    session_level = (
        trunk_sdp().replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n").replace("a=sendrecv\r\n", "")
    )
    assert is_held(session_level)


def test_answer_keeps_the_offers_m_lines_refusing_all_but_audio() -> None:
    local = LocalSdp(OUR_OFFER)
    video = "m=video 30002 RTP/AVP 96 97\r\na=rtpmap:96 H264/90000\r\n"
    after = trunk_sdp() + video
    answer = local.answer(after, local_hold=False)
    m_lines = [line for line in answer.splitlines() if line.startswith("m=")]
    assert m_lines == ["m=audio 40000 RTP/AVP 0 101", "m=video 0 RTP/AVP 96"]
    assert "H264" not in answer
    audio_at = trunk_sdp().index("m=audio")
    before = trunk_sdp()[:audio_at] + video + trunk_sdp()[audio_at:]
    answer = local.answer(before, local_hold=False)
    m_lines = [line for line in answer.splitlines() if line.startswith("m=")]
    assert m_lines == ["m=video 0 RTP/AVP 96", "m=audio 40000 RTP/AVP 0 101"]


def test_narrowed_drops_telephone_event_we_did_not_accept() -> None:
    offer = trunk_sdp(formats="0 101")
    answer = trunk_sdp(formats="0")
    remote = narrowed(offer, answer)
    assert Audio.parse(remote).formats == ["0"]
    assert not has_telephone_event(remote)
    assert narrowed(offer, offer) == offer
