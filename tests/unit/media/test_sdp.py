import pytest

from proto import errors
from services.media.sdp import (
    PCMA,
    PCMU,
    Codec,
    NoCommonCodecError,
    SdpError,
    build_offer,
    first_codec_name,
    parse_answer,
)


def answer(*lines: str) -> str:
    return "\r\n".join(["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", *lines]) + "\r\n"


def test_offer_contents() -> None:
    sdp = build_offer("198.51.100.4", 10002, session_id=42)
    lines = sdp.split("\r\n")
    assert sdp.endswith("\r\n")
    assert lines[0] == "v=0"
    assert "o=- 42 42 IN IP4 198.51.100.4" in lines
    assert "c=IN IP4 198.51.100.4" in lines
    assert "m=audio 10002 RTP/AVP 0 8 101" in lines
    for expected in (
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
        "a=sendrecv",
    ):
        assert expected in lines


def test_offer_ipv6_and_codec_choice() -> None:
    sdp = build_offer("2001:db8::1", 20000, session_id=1, codecs=(PCMA,))
    assert "c=IN IP6 2001:db8::1" in sdp
    assert "m=audio 20000 RTP/AVP 8 101" in sdp
    assert "PCMU" not in sdp


def test_offer_is_accepted_by_our_own_parser() -> None:
    media = parse_answer(build_offer("192.0.2.9", 10000, 1))
    assert (media.address, media.port, media.codec, media.dtmf_pt) == (
        "192.0.2.9",
        10000,
        PCMU,
        101,
    )


def test_pcma_only_answer() -> None:
    media = parse_answer(
        answer("c=IN IP4 203.0.113.5", "t=0 0", "m=audio 30000 RTP/AVP 8", "a=rtpmap:8 PCMA/8000")
    )
    assert media.address == "203.0.113.5"
    assert media.port == 30000
    assert media.codec == PCMA
    assert media.dtmf_pt is None


def test_first_codec_of_the_answer_wins() -> None:
    media = parse_answer(answer("c=IN IP4 203.0.113.5", "t=0 0", "m=audio 30000 RTP/AVP 8 0"))
    assert media.codec == PCMA  # static payload types need no rtpmap


def test_dynamic_telephone_event() -> None:
    media = parse_answer(
        answer(
            "c=IN IP4 203.0.113.5",
            "t=0 0",
            "m=audio 30000 RTP/AVP 0 96",
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:96 telephone-event/8000",
            "a=fmtp:96 0-15",
        )
    )
    assert media.codec == PCMU
    assert media.dtmf_pt == 96


def test_session_level_and_media_level_connection() -> None:
    session_only = parse_answer(answer("c=IN IP4 203.0.113.5", "t=0 0", "m=audio 4000 RTP/AVP 0"))
    assert session_only.address == "203.0.113.5"
    media_wins = parse_answer(
        answer("c=IN IP4 203.0.113.5", "t=0 0", "m=audio 4000 RTP/AVP 0", "c=IN IP4 203.0.113.6")
    )
    assert media_wins.address == "203.0.113.6"


def test_unoffered_codecs_are_skipped() -> None:
    media = parse_answer(
        answer(
            "c=IN IP4 203.0.113.5",
            "t=0 0",
            "m=audio 4000 RTP/AVP 18 9 0",
            "a=rtpmap:18 G729/8000",
            "a=rtpmap:9 G722/8000",
        )
    )
    assert media.codec == PCMU


def test_answer_renumbering_is_kept() -> None:
    media = parse_answer(
        answer("c=IN IP4 203.0.113.5", "t=0 0", "m=audio 4000 RTP/AVP 97", "a=rtpmap:97 pcma/8000")
    )
    assert media.codec == Codec("PCMA", 97, 8000)


def test_video_before_audio() -> None:
    media = parse_answer(
        answer(
            "c=IN IP4 203.0.113.5",
            "t=0 0",
            "m=video 0 RTP/AVP 96",
            "m=audio 4002 RTP/AVP 0",
        )
    )
    assert media.port == 4002


def test_no_common_codec() -> None:
    with pytest.raises(NoCommonCodecError) as info:
        parse_answer(
            answer(
                "c=IN IP4 203.0.113.5", "t=0 0", "m=audio 4000 RTP/AVP 18", "a=rtpmap:18 G729/8000"
            )
        )
    assert info.value.code == errors.NO_COMMON_CODEC


@pytest.mark.parametrize(
    ("sdp", "message"),
    [
        ("", "empty"),
        (answer("c=IN IP4 203.0.113.5", "t=0 0"), "no audio"),
        (answer("c=IN IP4 203.0.113.5", "t=0 0", "m=audio 0 RTP/AVP 0"), "port 0"),
        (answer("t=0 0", "m=audio 4000 RTP/AVP 0"), "no c="),
        (answer("c=IN IP4", "t=0 0", "m=audio 4000 RTP/AVP 0"), "c="),
        (answer("c=IN IP4 203.0.113.5", "m=audio port RTP/AVP 0"), "m="),
        (answer("c=IN IP4 203.0.113.5", "m=audio 99999 RTP/AVP 0"), "port"),
        (
            answer("c=IN IP4 203.0.113.5", "m=audio 4000 RTP/AVP 0", "a=rtpmap:x PCMU/8000"),
            "rtpmap",
        ),
        ("this is not sdp\r\n", "malformed"),
        ("<html>\x00</html>", "malformed"),
    ],
)
def test_bad_answers(sdp: str, message: str) -> None:
    with pytest.raises(SdpError, match=message) as info:
        parse_answer(sdp)
    assert info.value.code in (errors.BAD_SDP, errors.NO_COMMON_CODEC)


def test_first_codec_name() -> None:
    sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\na=rtpmap:111 opus/48000/2\r\n"
    assert first_codec_name(sdp) == "opus"
    assert first_codec_name("v=0\r\n") == "?"
