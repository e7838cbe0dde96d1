"""The shared SDP model: parse, read, build, serialize; refusals; a fuzz of the parser."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from services.common import sdp
from services.common.sdp_codecs import RtpMap
from tests.unit.fuzz.support import any_text, fuzz, mutate_lines

TRUNK = (
    "v=0\r\n"
    "o=trunk 5 2 IN IP4 198.51.100.7\r\n"
    "s=call\r\n"
    "c=IN IP4 198.51.100.7\r\n"
    "b=AS:64\r\n"
    "t=0 0\r\n"
    "a=sendonly\r\n"
    "m=video 0 RTP/AVP 97\r\n"
    "m=audio 30000 RTP/SAVP 8 0 96\r\n"
    "c=IN IP4 198.51.100.8\r\n"
    "a=rtpmap:96 telephone-event/8000\r\n"
    "a=fmtp:96 0-15\r\n"
    "a=ptime:30\r\n"
    "a=rtcp:30001\r\n"
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2Vj\r\n"
    "a=x-custom:1\r\n"
    "a=maxptime:60\r\n"
)


def test_parse_reads_every_part() -> None:
    description = sdp.parse(TRUNK)
    assert description.origin == sdp.Origin("trunk", "5", "2", "IN", "IP4", "198.51.100.7")
    assert description.session_name == "call" and description.direction == "sendonly"
    video, audio = description.media
    assert description.audio_index() == 1 and video.port == 0
    assert (audio.port, audio.proto, audio.formats) == (30000, "RTP/SAVP", ("8", "0", "96"))
    assert audio.secure and audio.payload_types == (8, 0, 96)
    assert description.connection_of(audio) == sdp.Connection("198.51.100.8")
    assert description.connection_of(video) == sdp.Connection("198.51.100.7")
    assert audio.rtpmap(8) == RtpMap(8, "PCMA", 8000)  # static, RFC 3551
    assert audio.find("pcmu") == 0 and audio.telephone_event() == 96
    assert audio.fmtp(96) == "0-15" and audio.ptime == 30 and audio.rtcp == sdp.Rtcp(30001)
    assert [a.name for a in audio.attributes] == ["x-custom", "maxptime"]
    assert audio.crypto[0].suite == "AES_CM_128_HMAC_SHA1_80"
    assert "inline" not in repr(audio.crypto[0])  # the key stays out of logs
    assert description.direction_of(audio) == "sendonly" and description.holds(audio)


def test_serialize_round_trips_with_crlf() -> None:
    description = sdp.parse(TRUNK.replace("\r\n", "\n"))
    text = description.serialize()
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")
    assert sdp.parse(text) == description
    assert "a=x-custom:1\r\na=maxptime:60\r\n" in text  # other attributes keep their order


def test_building_an_answer() -> None:
    offer = sdp.parse(TRUNK)
    audio = offer.media[1].with_formats(["0", "96"])
    assert audio.rtpmaps == (RtpMap(96, "telephone-event", 8000),)
    answer = offer.with_media(0, offer.media[0].rejected()).with_media(1, audio)
    assert [m.formats for m in answer.media] == [("97",), ("0", "96")]
    assert sdp.answer_direction("sendonly") == "recvonly"
    assert sdp.answer_direction("inactive") == "inactive"
    built = sdp.SessionDescription(
        sdp.Origin("-", "1", "1", "IN", "IP6", "2001:db8::1"),
        connection=sdp.Connection.of("2001:db8::1"),
        media=(sdp.MediaDescription("audio", 4000, "RTP/AVP", ("0",), direction="recvonly"),),
    )
    assert built.serialize() == (
        "v=0\r\no=- 1 1 IN IP6 2001:db8::1\r\ns=-\r\nc=IN IP6 2001:db8::1\r\nt=0 0\r\n"
        "m=audio 4000 RTP/AVP 0\r\na=recvonly\r\n"
    )
    assert built.origin is not None
    assert replace(built.origin, version="2").version_number == 2


def test_hold_forms() -> None:
    plain = sdp.parse(TRUNK.replace("a=sendonly\r\n", ""))
    assert not plain.holds(plain.media[1])
    old_style = sdp.parse(TRUNK.replace("a=sendonly\r\n", "").replace("198.51.100.8", "0.0.0.0"))
    assert old_style.holds(old_style.media[1])


def test_tolerated() -> None:
    # LF ends, blank lines, no o=/s=/t=, a format that is no number, an a= line with a
    # control character (dropped, so it cannot be echoed).
    text = "v=0\n\nc=IN IP4 192.0.2.1\nm=audio 4000 RTP/AVP 0 \u00b2\na=fmtp:0 x\ry\na=ptime:2.5\n"
    description = sdp.parse(text)
    (audio,) = description.media
    assert description.origin is None and audio.formats == ("0", "\u00b2")
    assert audio.payload_types == (0,) and audio.fmtps == () and audio.ptime is None
    assert sdp.parse("v=0\r\nm=video 0 RTP/AVP\r\n").media[0].formats == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "v=0"),
        ("o=- 1 1 IN IP4 1.2.3.4\r\n", "v=0"),
        ("v=0\r\nhello\r\n", "malformed SDP line"),
        ("v=0\r\nx=1\r\n", "malformed SDP line"),
        ("v=0\r\ns=a\x00b\r\n", "control character"),
        ("v=0\r\nc=IN IP4\r\n", "malformed c="),
        ("v=0\r\nc=IN IP9 1.2.3.4\r\n", "malformed c="),
        ("v=0\r\no=- x\r\n", "malformed o="),
        ("v=0\r\nm=audio 4000 RTP/AVP\r\n", "malformed m="),
        ("v=0\r\nm=audio x RTP/AVP 0\r\n", "malformed m="),
        ("v=0\r\nm=audio \u0664000 RTP/AVP 0\r\n", "malformed m="),
        ("v=0\r\nm=audio 70000 RTP/AVP 0\r\n", "port out of range"),
        ("v=0\r\nm=audio 4000 RTP/AVP 128\r\n", "payload type out of range"),
        ("v=0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:x PCMU/8000\r\n", "rtpmap"),
        ("v=0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU\r\n", "rtpmap"),
        (
            "v=0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:0 PCMA/8000\r\n",
            "more than one",
        ),
        ("v=0\r\nm=audio 4000 RTP/AVP 0\r\na=rtcp:x\r\n", "rtcp"),
        ("v=0\r\nm=audio 4000 RTP/AVP 0\r\nt=0 0\r\n", "inside a media section"),
        ("v=0\r\n" + "a=x\r\n" * (sdp.MAX_LINES + 1), "too many lines"),
        ("v=0\r\n" + "m=audio 0 RTP/AVP 0\r\n" * (sdp.MAX_MEDIA + 1), "too many media"),
        ("v=0\r\ni=" + "x" * sdp.MAX_LINE_CHARS + "\r\n", "too long"),
        ("v=0\r\n" + " " * sdp.MAX_SDP_CHARS, "too large"),
    ],
)
def test_refused_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(sdp.SdpError, match=message):
        sdp.parse(text)


def test_a_crypto_error_never_quotes_the_key() -> None:
    with pytest.raises(sdp.SdpError) as info:
        sdp.parse("v=0\r\nm=audio 4000 RTP/SAVP 0\r\na=crypto:x SUITE inline:SECRETKEY\r\n")
    assert "SECRETKEY" not in str(info.value)


# --- fuzz ------------------------------------------------------------------------------

SNIPPETS = (
    "m=audio 99999999999 RTP/AVP 0",
    "m=audio 4000/0 RTP/AVP 0",
    "m=audio 4000 RTP/AVP 300 abc -1",
    "m=",
    "c=IN IP4 224.2.1.1/127/3",
    "a=rtpmap:",
    "a=rtpmap:96 opus/48000/x",
    "a=fmtp:",
    "a=crypto:1",
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAAA|2^20|1:4",
    "a=rtcp:9 IN IP4",
    "a=ptime:",
    "a=sendonly",
    "o=",
    "r=7d 1h 0 25h",
    "\x00",
)


@st.composite
def sdps(draw: st.DrawFn) -> str:
    base = draw(st.sampled_from((TRUNK, TRUNK.replace("\r\n", "\n"))))
    if draw(st.booleans()):
        lines = base.split("\r\n")
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(SNIPPETS)))
        base = "\r\n".join(lines)
    return mutate_lines(draw(st.data()), base, max_mutations=3)


@fuzz(400)
@given(st.one_of(sdps(), sdps(), any_text(300)))
@example("v=0\r\nm=audio 4000 RTP/AVP " + "9" * 5000 + "\r\n")
@example("v=0\r\n" + "m=audio 4000 RTP/AVP 0\r\n" * 40)
def test_parse_gives_a_model_that_round_trips_or_sdp_error(text: str) -> None:
    try:
        description = sdp.parse(text)
    except sdp.SdpError as exc:
        assert str(exc) and len(str(exc)) < 300
        return
    out = description.serialize()
    out.encode("utf-8")  # no lone surrogate can reach a SIP body
    assert all(line.isprintable() for line in out.split("\r\n"))
    assert sdp.parse(out) == description
    for media in description.media:
        assert 0 <= media.port <= 65535
        assert all(0 <= pt <= sdp.MAX_PAYLOAD_TYPE for pt in media.payload_types)
        assert description.direction_of(media) in sdp.DIRECTIONS
        assert all(0 <= m.payload_type <= sdp.MAX_PAYLOAD_TYPE for m in media.rtpmaps)
