"""Fuzz of the SDP the SIP agent reads from the trunk (``services.sipagent.trunk_sdp``).

A trunk's re-INVITE or UPDATE offer (its body decoded as UTF-8 with
replacement, as ``sdp_of`` does) goes to ``LocalSdp.answer``; ``is_held``,
``has_telephone_event`` and ``narrowed`` read any SDP it sends. Property:
``Audio.parse`` and ``answer`` give a result or ``SdpOfferError`` (a 488),
the readers never raise, and an answer is one we can send: our address and
port, only formats the offer had, one m-line per offered m-line, no line
break smuggled into a line.
"""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from services.sipagent.trunk_sdp import (
    DIRECTIONS,
    Audio,
    LocalSdp,
    SdpOfferError,
    has_telephone_event,
    is_held,
    narrowed,
)
from tests.unit.fuzz.support import any_text, fuzz, mutate_lines

OUR_OFFER = (
    "v=0\r\no=- 7 7 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
)
OUR_OPUS_OFFER = (
    "v=0\r\no=- 9 9 IN IP6 2001:db8::1\r\ns=-\r\nc=IN IP6 2001:db8::1\r\nt=0 0\r\n"
    "m=audio 40002 RTP/SAVP 111 0 101\r\na=rtpmap:111 opus/48000/2\r\n"
    "a=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendrecv\r\n"
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n"
)
TRUNK_OFFERS = (
    "v=0\r\no=trunk 5 2 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n"
    "m=audio 30000 RTP/AVP 8 0 18 96\r\na=rtpmap:96 telephone-event/8000\r\n"
    "a=fmtp:96 0-15\r\na=fmtp:18 annexb=no\r\na=sendonly\r\n",
    "v=0\r\no=trunk 5 3 IN IP4 0.0.0.0\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\na=inactive\r\n"
    "m=video 30002 RTP/AVP 97\r\na=rtpmap:97 H264/90000\r\n"
    "m=audio 30000 RTP/AVP 0\r\nc=IN IP4 198.51.100.7\r\n"
    "m=application 30004 UDP/BFCP *\r\n",
    "v=0\no=trunk 5 4 IN IP4 198.51.100.7\ns=-\nc=IN IP4 198.51.100.7\nt=0 0\n"
    "m=audio 30000/2 RTP/AVP 111 101\na=rtpmap:111 OPUS/48000/2\n"
    "a=rtpmap:101 TELEPHONE-EVENT/8000\n",
)
SNIPPETS = (
    "m=audio 99999999999 RTP/AVP 0",
    "m=audio 0 RTP/AVP 0",
    "m=audio x RTP/AVP 0",
    "m=audio 30000 RTP/AVP",
    "m=audio 30000",
    "m=audio ",
    "m=",
    "a=rtpmap:",
    "a=rtpmap:0",
    "a=rtpmap:0 ",
    "a=rtpmap:0 /",
    "a=rtpmap:8 PCMU/8000",
    "a=fmtp:",
    "a=fmtp:0",
    "a=sendonly",
    "a=recvonly",
    "a=inactive",
    "c=",
    "c=IN IP4",
    "c=IN IP4 0.0.0.0/127",
    "o=",
    "o=- x",
    "a=fmtp:0 mode=\r30",
    "a=fmtp:8 a\x00b",
    "\r",
    "\x00",
)


@st.composite
def trunk_offers(draw: st.DrawFn) -> str:
    base = draw(st.sampled_from(TRUNK_OFFERS))
    if draw(st.booleans()):
        lines = base.replace("\r\n", "\n").split("\n")
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(SNIPPETS)))
        base = "\r\n".join(lines)
    text = mutate_lines(draw(st.data()), base, max_mutations=2)
    # A body off the wire: bytes, decoded as ``sdp_of`` does.
    raw = text.encode("utf-8", "surrogatepass") + draw(st.binary(max_size=4))
    return raw.decode("utf-8", "replace")


def sdps() -> st.SearchStrategy[str]:
    return st.one_of(
        trunk_offers(),
        trunk_offers(),
        trunk_offers(),
        any_text(200).map(lambda s: s.encode("utf-8", "surrogatepass").decode("utf-8", "replace")),
    )


def m_lines(sdp: str) -> list[str]:
    return [line for line in sdp.replace("\r\n", "\n").split("\n") if line.startswith("m=")]


@fuzz(300)
@given(sdps())
@example("")
@example("m=audio 30000 RTP/AVP 0")
def test_readers_never_raise(sdp: str) -> None:
    assert is_held(sdp) in (True, False)
    assert has_telephone_event(sdp) in (True, False)
    try:
        audio = Audio.parse(sdp)
    except SdpOfferError:
        return
    assert audio.lines[audio.audio].startswith("m=audio ")
    assert audio.audio < audio.end <= len(audio.lines)
    assert audio.port >= 0 and audio.direction in DIRECTIONS
    assert set(audio.formats) <= set(audio.encodings)


@fuzz(300)
@given(st.sampled_from((OUR_OFFER, OUR_OPUS_OFFER)), sdps(), st.booleans())
def test_answer_is_sendable_or_488(ours: str, offer: str, local_hold: bool) -> None:
    local = LocalSdp(ours)
    try:
        answer = local.answer(offer, local_hold=local_hold)
    except SdpOfferError:
        return
    answer.encode("utf-8")  # the 200's body
    assert answer.startswith("v=0")
    lines = answer.split("\r\n")
    assert lines[-1] == ""
    for line in lines:
        assert "\r" not in line and "\n" not in line, line
    theirs, base = Audio.parse(offer), Audio.parse(ours)
    # RFC 3264 6: one m-line per offered m-line, in its order; ours where its audio was.
    offered, answered = m_lines(offer), m_lines(answer)
    assert len(answered) == len(offered)
    at = sum(line.startswith("m=") for line in theirs.lines[: theirs.audio])
    fields = answered[at].split()
    assert fields[:3] == base.lines[base.audio].split()[:3]  # m=audio, our port, profile
    assert fields[3:] and set(fields[3:]) <= set(theirs.formats)
    for i, line in enumerate(answered):
        if i != at:
            assert line.split()[1] == "0", line  # every other stream refused
    mine = Audio.parse(answer)
    assert mine.connection == base.connection and mine.direction in DIRECTIONS
    narrowed(offer, answer)


@fuzz(200)
@given(sdps(), sdps())
def test_narrowed_never_raises(offer: str, answer: str) -> None:
    result = narrowed(offer, answer)
    assert isinstance(result, str)


def test_bug_answer_does_not_echo_a_bare_cr_from_the_offer() -> None:
    offer = "v=0\r\nc=IN IP4 198.51.100.7\r\nm=audio 3000 RTP/AVP 0\r\na=fmtp:0 x\ry\r\n"
    answer = LocalSdp(OUR_OFFER).answer(offer, local_hold=False)
    assert all("\r" not in line for line in answer.split("\r\n"))
