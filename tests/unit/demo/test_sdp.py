"""SDP negotiation of the demo peer."""

from __future__ import annotations

from services.demo.sdp import build_answer, negotiate

BASE = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\n"


def test_static_payload_types_without_rtpmap() -> None:
    negotiated = negotiate((BASE + "m=audio 4000 RTP/AVP 8 0\r\n").encode())
    assert negotiated is not None
    assert (negotiated.codec, negotiated.payload_type) == ("PCMA", 8)


def test_rejects_video_keeps_line_count_and_mirrors_direction() -> None:
    offer = BASE + (
        "m=video 5000 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n"
        "m=audio 4000 RTP/AVP 0 100\r\na=rtpmap:100 telephone-event/8000\r\na=sendonly\r\n"
    )
    negotiated = negotiate(offer.encode())
    assert negotiated is not None and negotiated.dtmf_payload_type == 100
    answer = build_answer(negotiated, "127.0.0.1", 7000, 42, 0).decode()
    m_lines = [line for line in answer.splitlines() if line.startswith("m=")]
    assert m_lines == ["m=video 0 RTP/AVP 96", "m=audio 7000 RTP/AVP 0 100"]
    assert "a=recvonly" in answer


def test_unacceptable_offers() -> None:
    assert negotiate(b"\xff\xfe") is None
    assert negotiate((BASE + "m=audio 4000 RTP/SAVP 0\r\n").encode()) is None
    assert negotiate((BASE + "m=audio 0 RTP/AVP 0\r\n").encode()) is None
    assert (
        negotiate((BASE + "m=audio 4000 RTP/AVP 96\r\na=rtpmap:96 opus/48000/2\r\n").encode())
        is None
    )


def test_ipv6_answer() -> None:
    negotiated = negotiate((BASE + "m=audio 4000 RTP/AVP 0\r\n").encode())
    assert negotiated is not None
    assert "c=IN IP6 ::1" in build_answer(negotiated, "::1", 7000, 1, 0).decode()
