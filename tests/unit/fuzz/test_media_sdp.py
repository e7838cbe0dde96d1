"""Fuzz of the SDP the media tier reads: the trunk's answer and the browser's offer.

``services.media.sdp`` parses the trunk's answer itself (``parse_answer``,
with ``parse_crypto`` for SDES) and reads our own answer to the browser
(``first_codec``, ``first_codec_name``, ``add_public_candidates``). Property:
a result that is safe to use, or ``SdpError`` (its ``code`` a ``proto.errors``
code); nothing else escapes.

The browser's offer goes to aiortc (``WebRtcLeg.answer``), whose parser
raises many kinds of exception; the leg promises to turn every one into
``BadOfferError`` (``bad_sdp``). That is checked end to end on a bounded
number of mutated offers, with every ``a=candidate`` line removed first so
that no ICE check leaves the host (the answer gathers on 127.0.0.1 only, see
``tests/conftest.py``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib

import pytest
from hypothesis import event as note_event
from hypothesis import example, given
from hypothesis import strategies as st

from proto import errors
from services.common.settings import Settings
from services.media.sdes import SUITES, Crypto, parse_crypto
from services.media.sdp import (
    BY_NAME,
    DEFAULT_CODECS,
    G722,
    OPUS,
    PCMA,
    PCMU,
    Codec,
    SdpError,
    TrunkMedia,
    first_codec,
    first_codec_name,
    parse_answer,
)
from services.media.webrtc_leg import BadOfferError, WebRtcLeg, add_public_candidates
from tests.unit.fuzz.support import any_text, fuzz, mutate_lines, mutate_text

KEY = base64.b64encode(bytes(range(30))).decode()
CRYPTO = f"AES_CM_128_HMAC_SHA1_80 inline:{KEY}"
TRUNK_ANSWERS = (
    # A carrier's plain G.711 answer with telephone-event.
    "v=0\r\no=- 5 6 IN IP4 203.0.113.5\r\ns=-\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\n"
    "m=audio 30000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n",
    # Static payload type only, connection at media level, IPv6.
    "v=0\r\no=- 1 1 IN IP6 2001:db8::5\r\ns=-\r\nt=0 0\r\n"
    "m=audio 4000 RTP/AVP 0\r\nc=IN IP6 2001:db8::5\r\n",
    # SRTP (SDES) with a video stream refused first.
    "v=0\r\no=- 1 1 IN IP4 198.51.100.9\r\ns=-\r\nc=IN IP4 198.51.100.9\r\nt=0 0\r\n"
    "m=video 0 RTP/AVP 96\r\n"
    "m=audio 5004 RTP/SAVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
    f"a=rtpmap:101 telephone-event/8000\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}\r\n",
    # Opus and G.722, LF line ends.
    "v=0\no=- 1 1 IN IP4 192.0.2.7\ns=-\nc=IN IP4 192.0.2.7\nt=0 0\n"
    "m=audio 6000 RTP/AVP 111 9\na=rtpmap:111 opus/48000/2\na=rtpmap:9 G722/8000\n",
)
OFFERED_SETS = (DEFAULT_CODECS, (OPUS, PCMU), (G722, PCMA, PCMU, OPUS), (PCMU,))

# What Chrome sends (trimmed of nothing that matters), and what aiortc sends.
CHROME_OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        "a=extmap-allow-mixed",
        "a=msid-semantic: WMS 5bd6b2b4",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126",
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=candidate:1467250027 1 udp 2122260223 127.0.0.1 46243 typ host generation 0",
        "a=ice-ufrag:KMMo",
        "a=ice-pwd:wr0mKzsfWlGy3t1P0r9A0JVb",
        "a=ice-options:trickle",
        "a=fingerprint:sha-256 0F:74:31:25:CB:A2:13:EC:28:6F:6D:2C:61:FF:5D:C2:BC:B9:DB:3D:"
        "98:14:8D:1A:BB:EA:33:0C:A4:60:A8:8E",
        "a=setup:actpass",
        "a=mid:0",
        "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
        "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=sendrecv",
        "a=msid:5bd6b2b4 3b1c7d2e",
        "a=rtcp-mux",
        "a=rtpmap:111 opus/48000/2",
        "a=rtcp-fb:111 transport-cc",
        "a=fmtp:111 minptime=10;useinbandfec=1",
        "a=rtpmap:63 red/48000/2",
        "a=fmtp:63 111/111",
        "a=rtpmap:9 G722/8000",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:13 CN/8000",
        "a=rtpmap:110 telephone-event/48000",
        "a=rtpmap:126 telephone-event/8000",
        "a=ssrc:3735928559 cname:abcdEFGHijklMNOP",
        "",
    ]
)
AIORTC_OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 4005427260 4005427260 IN IP4 0.0.0.0",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        "a=msid-semantic:WMS *",
        "m=audio 52527 UDP/TLS/RTP/SAVPF 96 9 0 8",
        "c=IN IP4 127.0.0.1",
        "a=sendrecv",
        "a=mid:0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=rtcp-mux",
        "a=ssrc:2446355978 cname:4db4e171",
        "a=rtpmap:96 opus/48000/2",
        "a=rtpmap:9 G722/8000",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=end-of-candidates",
        "a=ice-ufrag:bG0b",
        "a=ice-pwd:Iy1L6Z4lbxyJtlN1XS6dC8",
        "a=fingerprint:sha-256 15:F2:44:58:12:87:2A:F0:03:2A:88:22:9A:A8:61:D5:7C:A9:6F:E1:"
        "F1:FF:96:46:C8:B4:3B:97:25:54:D0:C1",
        "a=setup:actpass",
        "",
    ]
)
SDP_SNIPPETS = (
    "m=audio 99999999999999999999 RTP/AVP 0",
    "m=audio 70000 RTP/AVP 0",
    "m=audio -1 RTP/AVP 0",
    "m=audio 4000/2 RTP/AVP 0",
    "m=audio 4000 RTP/AVP 128 -1 300 abc",
    "m=audio 4000 RTP/AVP",
    "m=audio",
    "m=",
    "c=IN IP4",
    "c=IN IP9 1.2.3.4",
    "c=IN IP4 224.2.1.1/127/3",
    "a=rtpmap:",
    "a=rtpmap:0",
    "a=rtpmap:0 PCMU",
    "a=rtpmap:0 PCMU/",
    "a=rtpmap:0 PCMU/abc",
    "a=rtpmap:x PCMU/8000",
    "a=rtpmap:96 telephone-event/8000",
    f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20|1:4",
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:!!!!",
    "a=crypto:99999999999 AEAD_AES_128_GCM inline:AAAA",
    "a=fingerprint:sha-256 zz",
    "a=setup:bogus",
    "a=ice-ufrag:",
    "a=mid:",
    "a=candidate:1 1 udp 1 127.0.0.1 9 typ host",
    "a=ssrc:notanumber cname:x",
    "a=extmap:abc urn:x",
    "=",
    "x",
    "\x00",
)


@st.composite
def mutated_sdp(draw: st.DrawFn, bases: tuple[str, ...]) -> str:
    """A valid SDP with lines dropped, duplicated, swapped, broken or replaced by snippets."""
    base = draw(st.sampled_from(bases))
    data = draw(st.data())
    if draw(st.booleans()):
        lines = base.replace("\r\n", "\n").split("\n")
        at = draw(st.integers(0, len(lines)))
        lines.insert(at, draw(st.sampled_from(SDP_SNIPPETS)))
        base = "\r\n".join(lines)
    text = mutate_lines(data, base, max_mutations=2)
    if draw(st.integers(0, 7)) == 0:
        # Bytes off the wire that were not UTF-8, decoded as the bus would see them.
        raw = text.encode("utf-8", "surrogatepass") + draw(st.binary(max_size=8))
        text = raw.decode("utf-8", "replace")
    return text


def any_sdp(bases: tuple[str, ...]) -> st.SearchStrategy[str]:
    return st.one_of(mutated_sdp(bases), mutated_sdp(bases), any_text(200))


# --- the trunk's answer ---------------------------------------------------------------


def check_trunk_media(media: TrunkMedia, offered: tuple[Codec, ...]) -> None:
    """What the media core may rely on in a parsed answer."""
    assert isinstance(media.address, str) and media.address
    assert 0 < media.port <= 65535
    assert media.codec.name in {codec.name for codec in offered}
    for crypto in media.crypto:
        assert len(crypto.key) == SUITES[crypto.suite][1]


def payload_types_in_range(media: TrunkMedia) -> bool:
    """RTP payload types are 7 bits (RFC 3550 5.1): what goes into every packet header."""
    pts = [media.codec.payload_type] + ([media.dtmf_pt] if media.dtmf_pt is not None else [])
    return all(0 <= pt <= 127 for pt in pts)


def parse_trunk_answer(sdp: str, offered: tuple[Codec, ...]) -> TrunkMedia | SdpError:
    try:
        media = parse_answer(sdp, offered)
    except SdpError as exc:
        assert exc.code in (errors.BAD_SDP, errors.NO_COMMON_CODEC)
        return exc
    check_trunk_media(media, offered)
    return media


@fuzz(500)
@given(any_sdp(TRUNK_ANSWERS), st.sampled_from(OFFERED_SETS))
@example("", DEFAULT_CODECS)
@example("v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 0\r\n", DEFAULT_CODECS)
@example("v=0\r\nm=audio 4000 RTP/AVP 0\r\n", DEFAULT_CODECS)
@example("v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 0 RTP/AVP 0\r\n", DEFAULT_CODECS)
@example("v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP " + "9" * 5000 + "\r\n", (PCMU,))
def test_trunk_answer_is_usable_or_sdp_error(sdp: str, offered: tuple[Codec, ...]) -> None:
    result = parse_trunk_answer(sdp, offered)
    note_event(type(result).__name__)
    if isinstance(result, TrunkMedia):
        assert payload_types_in_range(result)


@st.composite
def crypto_values(draw: st.DrawFn) -> str:
    return mutate_text(draw(st.data()), f"crypto:1 {CRYPTO}")


@fuzz(200)
@given(st.one_of(any_text(120), crypto_values()))
def test_crypto_attribute_is_usable_or_none(value: str) -> None:
    crypto = parse_crypto(value)
    if crypto is not None:
        assert isinstance(crypto, Crypto)
        assert crypto.suite in SUITES and len(crypto.key) == SUITES[crypto.suite][1]
        assert crypto.tag >= 0


@pytest.mark.parametrize("pt", ["-5", "128", "300"])
def test_bug_answer_payload_type_out_of_rtp_range_is_refused(pt: str) -> None:
    sdp = f"v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP {pt}\r\na=rtpmap:{pt} PCMU/8000\r\n"
    with pytest.raises(SdpError):
        parse_answer(sdp)


@pytest.mark.parametrize("port", ["٤٠٠٠", "4_000", "+4000", "４０００"])
def test_bug_answer_port_must_be_ascii_digits(port: str) -> None:
    sdp = f"v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio {port} RTP/AVP 0\r\n"
    with pytest.raises(SdpError):
        parse_answer(sdp)


# --- our answer to the browser, read back ------------------------------------------------


@fuzz(300)
@given(any_sdp((AIORTC_OFFER, CHROME_OFFER)))
def test_first_codec_never_raises(sdp: str) -> None:
    codec = first_codec(sdp)
    assert codec is None or codec.name in {c.name for c in BY_NAME.values()}
    assert isinstance(first_codec_name(sdp), str)


@fuzz(300)
@given(
    any_sdp((AIORTC_OFFER, CHROME_OFFER)),
    st.sampled_from(("203.0.113.7", "2001:db8::7", "127.0.0.1", "not-an-ip", "")),
)
def test_public_candidates_keep_every_line_and_are_idempotent(sdp: str, public_ip: str) -> None:
    once = add_public_candidates(sdp, public_ip)
    original = sdp.split("\r\n")
    added = once.split("\r\n")
    # Every original line is kept, in order; the new ones are host candidates of public_ip.
    it = iter(added)
    assert all(any(line == other for other in it) for line in original)
    extra = len(added) - len(original)
    assert extra >= 0
    if extra:
        assert sum(f" {public_ip} " in line for line in added) >= extra
    assert add_public_candidates(once, public_ip) == once


# --- the browser's offer, end to end through the leg (aiortc) -----------------------------


def without_candidates(sdp: str) -> str:
    return "\n".join(line for line in sdp.split("\n") if "candidate" not in line)


async def answer(sdp: str) -> str | BadOfferError:
    leg = WebRtcLeg(Settings(public_ip="203.0.113.7"), lambda: None, lambda: None)
    result: str | BadOfferError
    try:
        result = await leg.answer(sdp, lambda _packet: None, lambda _packet: None)
    except BadOfferError as exc:
        result = exc
    await leg.close()
    return result


@fuzz(200)
@given(mutated_sdp((AIORTC_OFFER, CHROME_OFFER)))
@example(AIORTC_OFFER)
@example(CHROME_OFFER)
@example(CHROME_OFFER.replace("\r\n", "\n"))
@example(AIORTC_OFFER.replace("a=group:BUNDLE 0", "a=group:BUNDLE x 0"))
def test_browser_offer_is_answered_or_bad_offer(sdp: str) -> None:
    result = asyncio.run(answer(without_candidates(sdp)))
    note_event(type(result).__name__)
    if isinstance(result, BadOfferError):
        assert result.code == errors.BAD_SDP
    elif isinstance(result, str):
        assert result.startswith("v=0")
        assert first_codec(result) is not None


def test_bug_bundle_group_naming_an_unknown_mid_first_is_bad_offer() -> None:
    offer = AIORTC_OFFER.replace("a=group:BUNDLE 0", "a=group:BUNDLE x 0")

    async def run() -> None:
        leg = WebRtcLeg(Settings(), lambda: None, lambda: None)
        try:
            with pytest.raises(BadOfferError):
                await leg.answer(offer, lambda _packet: None, lambda _packet: None)
        finally:
            with contextlib.suppress(AttributeError):
                await leg.close()

    asyncio.run(run())


def test_valid_offers_are_answered() -> None:
    for sdp in (AIORTC_OFFER, CHROME_OFFER):
        result = asyncio.run(answer(without_candidates(sdp)))
        assert isinstance(result, str), result
