"""Our answer to a trunk's offer (calls in): codec, telephone-event, SRTP, refused m-lines."""

from __future__ import annotations

import base64

import pytest

from proto import errors
from services.common import sdp
from services.common.sdp_codecs import RtpMap
from services.media import sdes
from services.media.rtp import RtpPacket
from services.media.sdp import G722, OPUS, PCMA, PCMU, NoCommonCodecError, SdpError
from services.media.trunk_answer import build_answer, choose_codec, read_offer

KEY = base64.b64encode(bytes(range(30))).decode()


def offer(*media: str, session: str = "c=IN IP4 198.51.100.7") -> str:
    head = ["v=0", "o=trunk 5 1 IN IP4 198.51.100.7", "s=-", session, "t=0 0"]
    return "\r\n".join([*head, *media]) + "\r\n"


G711_OFFER = offer(
    "m=audio 30000 RTP/AVP 8 0 96",
    "a=rtpmap:96 telephone-event/8000",
    "a=fmtp:96 0-15",
    "a=sendrecv",
)


def answer_of(text: str, browser: object, srtp: str = sdes.OFF) -> sdp.SessionDescription:
    trunk = read_offer(text, srtp)
    assert isinstance(browser, type(PCMU))
    codec = choose_codec(trunk, browser)
    key = sdes.answer(trunk.crypto[0]) if trunk.crypto else None
    return sdp.parse(build_answer(trunk, codec, "203.0.113.1", 40000, 77, key))


def test_the_browsers_codec_passes_through_with_the_trunks_numbers() -> None:
    answer = answer_of(G711_OFFER, PCMU)
    (audio,) = answer.media
    assert (audio.port, audio.proto, audio.formats) == (40000, "RTP/AVP", ("0", "96"))
    assert answer.connection == sdp.Connection("203.0.113.1", "IP4")
    assert audio.rtpmap(96) == RtpMap(96, "telephone-event", 8000)
    assert audio.fmtp(96) == "0-15" and audio.ptime == 20
    assert answer.direction_of(audio) == "sendrecv"


def test_the_trunks_first_codec_when_the_browser_has_none_of_them() -> None:
    trunk = read_offer(G711_OFFER, sdes.OFF)
    assert trunk.names == ("PCMA", "PCMU")
    assert choose_codec(trunk, OPUS) == PCMA  # converted Opus <-> PCMA
    (audio,) = answer_of(G711_OFFER, OPUS).media
    assert audio.formats == ("8", "96")


def test_renumbered_codecs_keep_the_trunks_payload_type() -> None:
    text = offer(
        "m=audio 30000 RTP/AVP 18 107 9",
        "a=rtpmap:107 opus/48000/2",
        "a=rtpmap:18 G729/8000",
    )
    trunk = read_offer(text, sdes.OFF)
    assert [c.name for c in trunk.codecs] == ["opus", "G722"]  # G.729: not ours
    assert choose_codec(trunk, OPUS).payload_type == 107
    assert choose_codec(trunk, G722) == G722
    (audio,) = answer_of(text, OPUS).media
    assert audio.formats == ("107",) and audio.rtpmap(107) == RtpMap(107, "opus", 48000, 2)
    assert audio.telephone_event() is None  # not offered: not answered


def test_other_m_lines_are_refused_in_the_offers_order() -> None:
    text = offer(
        "m=video 30002 RTP/AVP 97",
        "a=rtpmap:97 H264/90000",
        "m=audio 30000 RTP/AVP 0",
        "m=application 30004 UDP/BFCP *",
    )
    answer = answer_of(text, PCMU)
    assert [(m.media, m.port, m.formats) for m in answer.media] == [
        ("video", 0, ("97",)),
        ("audio", 40000, ("0",)),
        ("application", 0, ("*",)),
    ]
    assert answer.media[0].rtpmaps == ()


def test_hold_and_direction() -> None:
    text = G711_OFFER.replace("a=sendrecv", "a=sendonly")
    trunk = read_offer(text, sdes.OFF)
    assert trunk.held
    (audio,) = answer_of(text, PCMU).media
    assert audio.direction == "recvonly"
    assert read_offer(offer("m=audio 30000 RTP/AVP 0", session="c=IN IP4 0.0.0.0"), "off").held
    assert not read_offer(G711_OFFER, sdes.OFF).held


@pytest.mark.parametrize("srtp", [sdes.OPTIONAL, sdes.REQUIRED])
def test_sdes_offer_is_answered_with_our_own_key(srtp: str) -> None:
    text = offer(
        "m=audio 30000 RTP/SAVP 0",
        "a=crypto:1 F8_128_HMAC_SHA1_80 inline:AAAA",
        f"a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{KEY}",
    )
    trunk = read_offer(text, srtp)
    assert [c.tag for c in trunk.crypto] == [2]  # the unknown suite is skipped
    ours = sdes.answer(trunk.crypto[0])
    assert (ours.tag, ours.suite) == (2, "AES_CM_128_HMAC_SHA1_80") and ours.key != bytes(range(30))
    answer = sdp.parse(build_answer(trunk, PCMU, "203.0.113.1", 40000, 1, ours))
    (audio,) = answer.media
    assert audio.proto == "RTP/SAVP" and [c.tag for c in audio.crypto] == [2]
    assert KEY not in answer.serialize()
    # The keys work: what we protect, the trunk (with our key as its inbound key) reads.
    protect, _ = sdes.transforms((ours,), trunk.crypto)
    _, theirs_reads = sdes.transforms(trunk.crypto, (ours,))
    packet = bytes(RtpPacket(0, 1, 160, 0x1234, b"\xff" * 160))
    assert bytes(theirs_reads.unprotect(protect.protect(packet))) == packet


def test_plain_offer_with_crypto_is_keyed_when_allowed_and_plain_when_off() -> None:
    text = offer("m=audio 30000 RTP/AVP 0", f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}")
    assert len(read_offer(text, sdes.OPTIONAL).crypto) == 1
    off = read_offer(text, sdes.OFF)
    assert off.crypto == ()
    assert answer_of(text, PCMU).media[0].crypto == ()


@pytest.mark.parametrize(
    ("text", "srtp", "message"),
    [
        (
            offer("m=audio 30000 RTP/SAVP 0", f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}"),
            sdes.OFF,
            "SRTP is off",
        ),
        (offer("m=audio 30000 RTP/SAVP 0"), sdes.OPTIONAL, "without an a=crypto"),
        (offer("m=audio 30000 RTP/AVP 0"), sdes.REQUIRED, "required"),
        (offer("m=audio 30000 UDP/TLS/RTP/SAVPF 0"), sdes.OFF, "transport"),
        (offer("m=audio 0 RTP/AVP 0"), sdes.OFF, "no audio"),
        (offer("m=video 30000 RTP/AVP 96"), sdes.OFF, "no audio"),
        (offer("m=audio 30000 RTP/AVP 0", session="b=AS:64"), sdes.OFF, "no c="),
        ("", sdes.OFF, "no SDP"),
        ("v=0\r\nm=audio 30000 RTP/AVP 0\r\nc=IN IP4\r\n", sdes.OFF, "c="),
    ],
)
def test_offers_we_cannot_answer_are_bad_sdp(text: str, srtp: str, message: str) -> None:
    with pytest.raises(SdpError, match=message) as info:
        read_offer(text, srtp)
    assert info.value.code == errors.BAD_SDP


def test_no_codec_of_ours_is_no_common_codec() -> None:
    with pytest.raises(NoCommonCodecError) as info:
        read_offer(
            offer("m=audio 30000 RTP/AVP 18 101", "a=rtpmap:101 telephone-event/8000"), "off"
        )
    assert info.value.code == errors.NO_COMMON_CODEC
