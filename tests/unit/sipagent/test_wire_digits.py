"""Numbers on the wire are ASCII digits: '²' is refused cleanly, never a traceback."""

from __future__ import annotations

import pytest
from sipmessage import Response

from services.common.digits import number
from services.common.sipaddr import parse_dns_servers
from services.demo.sdp import negotiate
from services.media.webrtc_leg import add_public_candidates
from services.sipagent.offer import restrict_codecs
from services.sipagent.resolve import retry_after
from services.sipagent.session_timer import min_se, session_expires
from services.sipagent.trunk_sdp import Audio, LocalSdp, SdpOfferError, has_telephone_event, is_held
from tests.unit.sipagent.peer import OUR_OFFER, trunk_sdp

SUPERSCRIPT = "\u00b2"  # '²': str.isdigit() says yes, int() says no


def test_number_takes_ascii_digits_only() -> None:
    assert number("42") == 42
    assert number(SUPERSCRIPT) is None and number("4" + SUPERSCRIPT) is None
    assert number("") is None and number("12345678901") is None


def test_session_timer_headers() -> None:
    assert session_expires(f"{SUPERSCRIPT};refresher=uac") is None
    response = Response(422, "Session Interval Too Small")
    response.headers.add("Min-SE", SUPERSCRIPT)
    assert min_se(response) is None


def test_retry_after() -> None:
    assert retry_after(SUPERSCRIPT) is None
    assert retry_after("120 (busy)") == 120.0


def test_trunk_sdp_port_is_an_sdp_error() -> None:
    bad = trunk_sdp().replace("m=audio 30000", f"m=audio 3000{SUPERSCRIPT}")
    with pytest.raises(SdpOfferError):
        Audio.parse(bad)
    assert is_held(bad) is False and has_telephone_event(bad) is False
    with pytest.raises(SdpOfferError):
        LocalSdp(OUR_OFFER).answer(bad, local_hold=False)


def test_our_origin_version() -> None:
    local = LocalSdp(OUR_OFFER.replace("o=- 7 7", f"o=- 7 {SUPERSCRIPT}"))
    assert local.version == 0


def test_static_payload_type() -> None:
    sdp = trunk_sdp(formats=f"0 {SUPERSCRIPT}")
    assert "m=audio 30000 RTP/AVP 0" in restrict_codecs(sdp, ("PCMU",))


def test_dns_server_port() -> None:
    with pytest.raises(ValueError, match="port"):
        parse_dns_servers(f"192.0.2.53:5{SUPERSCRIPT}")


def test_demo_answer() -> None:
    offer = trunk_sdp(formats=f"{SUPERSCRIPT} 0").encode()
    assert negotiate(offer) is not None


def test_public_candidate_priority() -> None:
    sdp = (
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
        f"a=candidate:1 1 udp {SUPERSCRIPT} 10.0.0.1 5000 typ host\r\n"
    )
    assert "a=candidate:pub1 1 udp 1 203.0.113.1 5000 typ host" in add_public_candidates(
        sdp, "203.0.113.1"
    )
