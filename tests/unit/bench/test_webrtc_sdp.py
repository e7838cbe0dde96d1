"""The lean peer's offer, and what it reads from the bridge's (aiortc's) answer."""

from __future__ import annotations

import pytest

from bench.webrtc_sdp import (
    OPUS,
    PCMU,
    AnswerError,
    Candidate,
    LocalDescription,
    build_offer,
    check_addresses,
    codec_named,
    parse_answer,
)

ANSWER = "\r\n".join(
    [
        "v=0",
        "o=- 4005420724 4005420724 IN IP4 0.0.0.0",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        "a=msid-semantic:WMS *",
        "m=audio 41968 UDP/TLS/RTP/SAVPF 0",
        "c=IN IP4 192.0.2.2",
        "a=sendrecv",
        "a=mid:0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=rtcp-mux",
        "a=ssrc:4125985576 cname:fe975f32",
        "a=rtpmap:0 PCMU/8000",
        "a=candidate:f957 1 udp 2130706431 192.0.2.2 41968 typ host",
        "a=candidate:d0bc 1 udp 2130706431 fd00::2 57679 typ host",
        "a=candidate:pubf957 1 udp 2130706430 127.0.0.1 41968 typ host",
        "a=end-of-candidates",
        "a=ice-ufrag:z1Ex",
        "a=ice-pwd:WnbfckPMwJ79s2uySEEnE3",
        "a=fingerprint:sha-256 eb:6d:d8",
        "a=fingerprint:sha-384 4E:48:2B",
        "a=setup:active",
        "",
    ]
)


def local(codec=PCMU) -> LocalDescription:
    return LocalDescription(
        codec=codec,
        host="127.0.0.1",
        port=40000,
        ice_ufrag="abcd",
        ice_pwd="p" * 24,
        fingerprint="AA:BB",
        ssrc=1234,
        cname="lean1",
        session_id=99,
    )


def test_pcmu_offer_has_what_a_browser_sends() -> None:
    sdp = build_offer(local())
    lines = sdp.split("\r\n")
    assert sdp.startswith("v=0\r\n") and sdp.endswith("\r\n")
    assert "m=audio 40000 UDP/TLS/RTP/SAVPF 0" in lines
    for line in (
        "a=rtpmap:0 PCMU/8000",
        "a=rtcp-mux",
        "a=setup:actpass",
        "a=ice-ufrag:abcd",
        "a=ice-pwd:" + "p" * 24,
        "a=fingerprint:sha-256 AA:BB",
        "a=mid:0",
        "a=sendrecv",
        "a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host",
        "a=ssrc:1234 cname:lean1",
    ):
        assert line in lines
    assert not any(line.startswith("a=fmtp") for line in lines)
    # one media section
    assert sum(line.startswith("m=") for line in lines) == 1


def test_opus_offer() -> None:
    lines = build_offer(local(OPUS)).split("\r\n")
    assert "m=audio 40000 UDP/TLS/RTP/SAVPF 111" in lines
    assert "a=rtpmap:111 opus/48000/2" in lines
    assert "a=fmtp:111 minptime=10;useinbandfec=1" in lines


def test_codec_named() -> None:
    assert codec_named("pcmu") is PCMU
    assert codec_named("OPUS") is OPUS
    with pytest.raises(ValueError):
        codec_named("G722")


def test_parse_answer() -> None:
    remote = parse_answer(ANSWER)
    assert (remote.ice_ufrag, remote.ice_pwd) == ("z1Ex", "WnbfckPMwJ79s2uySEEnE3")
    assert remote.setup == "active"
    assert remote.dtls_role == "server"
    assert remote.fingerprints == [("sha-256", "EB:6D:D8"), ("sha-384", "4E:48:2B")]
    assert remote.payload_type == 0
    assert (remote.codec_name, remote.clock_rate) == ("PCMU", 8000)
    assert remote.ssrc == 4125985576
    assert [c.host for c in remote.candidates] == ["192.0.2.2", "fd00::2", "127.0.0.1"]


def test_passive_answer_makes_us_the_dtls_client() -> None:
    assert parse_answer(ANSWER.replace("setup:active", "setup:passive")).dtls_role == "client"


def test_session_level_attributes_are_defaults() -> None:
    sdp = ANSWER.replace("a=ice-ufrag:z1Ex\r\n", "").replace("t=0 0", "t=0 0\r\na=ice-ufrag:sess")
    assert parse_answer(sdp).ice_ufrag == "sess"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.replace("m=audio 41968", "m=audio 0"), "rejected"),
        (lambda s: s.replace("m=audio", "m=video"), "not audio"),
        (lambda s: s.split("m=audio")[0], "no audio"),
        (lambda s: s.replace("a=fingerprint", "a=x-fingerprint"), "fingerprint"),
        (lambda s: s.replace("a=ice-pwd", "a=x-pwd"), "ice-pwd"),
    ],
)
def test_unusable_answers(change, message) -> None:
    with pytest.raises(AnswerError, match=message):
        parse_answer(change(ANSWER))


def test_check_addresses_loopback_first_ipv4_only() -> None:
    remote = parse_answer(ANSWER)
    assert check_addresses(remote.candidates) == [("127.0.0.1", 41968), ("192.0.2.2", 41968)]


def test_check_addresses_by_priority_and_limited() -> None:
    cands = [
        Candidate("a", 1, "udp", 10, "10.0.0.1", 1, "host"),
        Candidate("b", 1, "udp", 30, "10.0.0.2", 2, "host"),
        Candidate("c", 2, "udp", 50, "10.0.0.3", 3, "host"),  # RTCP component
        Candidate("d", 1, "tcp", 50, "10.0.0.4", 4, "host"),
        Candidate("e", 1, "udp", 20, "peer.local", 5, "host"),  # mDNS
        Candidate("f", 1, "udp", 5, "10.0.0.2", 2, "srflx"),  # same address again
    ]
    assert check_addresses(cands) == [("10.0.0.2", 2), ("10.0.0.1", 1)]
    assert check_addresses(cands, limit=1) == [("10.0.0.2", 2)]


def test_candidate_parse() -> None:
    c = Candidate.parse("1 1 UDP 2130706431 127.0.0.1 5000 typ host generation 0")
    assert (c.transport, c.host, c.port, c.type, c.priority) == (
        "udp",
        "127.0.0.1",
        5000,
        "host",
        2130706431,
    )
    with pytest.raises(ValueError):
        Candidate.parse("1 1 udp 1 127.0.0.1")
