"""SDES (RFC 4568): our a=crypto offer, the answer, SRTP both ways, keys kept out of logs."""

import base64

import pylibsrtp
import pytest

from services.media import sdes
from services.media.rtp import RtpPacket
from services.media.sdp import PCMU, build_offer, parse_answer
from services.media.srtp import SrtpError

PACKET = bytes(RtpPacket(0, 7, 160, 0x1234, b"\xff" * 160))


def answer(crypto: str, profile: str = "RTP/SAVP") -> str:
    return (
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        f"m=audio 4000 {profile} 0 101\r\na=rtpmap:0 PCMU/8000\r\n{crypto}"
    )


def test_offer_has_a_fresh_key_per_suite_and_savp_when_required() -> None:
    ours = sdes.offer()
    assert [c.suite for c in ours] == list(sdes.OFFERED)
    assert len({c.key for c in ours}) == len(ours)
    assert sdes.offer()[0].key != ours[0].key
    sdp = build_offer("192.0.2.9", 10000, 1, (PCMU,), crypto=ours, secure=True)
    assert "m=audio 10000 RTP/SAVP 0 101" in sdp
    assert sdp.count("a=crypto:") == 3
    optional = build_offer("192.0.2.9", 10000, 1, (PCMU,), crypto=ours)
    assert "RTP/AVP" in optional and "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" in optional
    # Keys never reach a log line.
    masked = sdes.mask(sdp)
    assert "inline:…" in masked
    assert all(base64.b64encode(c.key).decode() not in masked for c in ours)


def test_srtp_both_ways_with_the_answered_suite() -> None:
    ours = sdes.offer()
    trunk_key = bytes(range(30))
    line = f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{base64.b64encode(trunk_key).decode()}"
    media = parse_answer(answer(line + "\r\n"))
    assert media.secure and media.crypto[0].tag == 1
    protect, unprotect = sdes.transforms(ours, media.crypto)
    # The trunk reads what we send with our key, and sends with its own.
    trunk_rx = pylibsrtp.Session(
        pylibsrtp.Policy(key=ours[0].key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND)
    )
    trunk_tx = pylibsrtp.Session(
        pylibsrtp.Policy(key=trunk_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    )
    sent = bytes(protect.protect(PACKET))
    assert sent != PACKET and len(sent) == len(PACKET) + 10
    assert trunk_rx.unprotect(sent) == PACKET
    assert bytes(unprotect.unprotect(trunk_tx.protect(PACKET))) == PACKET
    with pytest.raises(SrtpError):
        unprotect.unprotect(PACKET[:-1] + b"\x00" * 11)  # forged


def test_gcm_suite_round_trip() -> None:
    ours = sdes.offer()
    gcm = next(c for c in ours if c.suite == "AEAD_AES_128_GCM")
    theirs = sdes.Crypto(gcm.tag, gcm.suite, bytes(28))
    protect, _ = sdes.transforms(ours, (theirs,))
    _, unprotect = sdes.transforms((theirs,), (gcm,))
    assert bytes(unprotect.unprotect(bytes(protect.protect(PACKET)))) == PACKET


@pytest.mark.parametrize(
    "value",
    [
        "crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + base64.b64encode(bytes(29)).decode(),
        "crypto:1 F8_128_HMAC_SHA1_80 inline:" + base64.b64encode(bytes(30)).decode(),
        "crypto:x AES_CM_128_HMAC_SHA1_80 inline:" + base64.b64encode(bytes(30)).decode(),
        "crypto:1 AES_CM_128_HMAC_SHA1_80 inline:not*base64",
        "crypto:1 AES_CM_128_HMAC_SHA1_80",
    ],
)
def test_unusable_crypto_attributes_are_skipped(value: str) -> None:
    assert sdes.parse_crypto(value) is None


def test_an_answer_matching_no_offered_tag_is_refused() -> None:
    ours = sdes.offer()
    stranger = sdes.Crypto(9, "AES_CM_128_HMAC_SHA1_80", bytes(30))
    with pytest.raises(sdes.SdesError):
        sdes.transforms(ours, (stranger,))
    wrong_suite = sdes.Crypto(1, "AES_CM_128_HMAC_SHA1_32", bytes(30))
    with pytest.raises(sdes.SdesError):
        sdes.transforms(ours, (wrong_suite,))
    assert "key=" not in repr(stranger)  # nor in any repr that reaches a log
