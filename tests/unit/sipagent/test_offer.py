"""The trunk offer narrowed to a trunk's codecs."""

from __future__ import annotations

import pytest

from services.sipagent.offer import restrict_codecs

OFFER = (
    "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    "m=audio 10000 RTP/AVP 0 8 101\r\n"
    "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\n"
)


def test_no_codecs_leaves_the_offer_alone() -> None:
    assert restrict_codecs(OFFER, ()) == OFFER


def test_subset_keeps_telephone_event() -> None:
    sdp = restrict_codecs(OFFER, ("PCMA",))
    assert "m=audio 10000 RTP/AVP 8 101\r\n" in sdp
    assert "a=rtpmap:0 " not in sdp
    assert "a=rtpmap:8 PCMA/8000" in sdp and "a=fmtp:101 0-16" in sdp
    assert sdp.endswith("a=ptime:20\r\n")


def test_order_follows_the_trunk() -> None:
    sdp = restrict_codecs(OFFER, ("PCMA", "PCMU"))
    assert "m=audio 10000 RTP/AVP 8 0 101\r\n" in sdp


def test_no_common_codec() -> None:
    only_pcmu = OFFER.replace("RTP/AVP 0 8 101", "RTP/AVP 0 101")
    with pytest.raises(ValueError, match="none of the trunk's codecs"):
        restrict_codecs(only_pcmu.replace("a=rtpmap:8 PCMA/8000\r\n", ""), ("PCMA",))
