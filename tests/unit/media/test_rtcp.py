"""RTCP per leg: reports written from the leg's own counters, the peer's read back."""

import struct

import pytest

from services.media import quality, rtcp
from services.media.core import BROWSER_RTCP, TRUNK_RTCP, MediaCore
from services.media.rtp import RtpSession
from services.media.sdp import PCMU

PEER = ("192.0.2.10", 40000)
WALL = 1_800_000_000.0


def voice(session: RtpSession, now: float) -> bytes:
    return bytes(session.packet_for(b"\xff" * 160, 160, now))


def test_build_parse_round_trip() -> None:
    block = rtcp.ReportBlock(0xCAFE, 12, -3, 0x1_0005, 40, 0x1234_5678, 65536)
    data = rtcp.build(0xBEEF, (rtcp.ntp_time(WALL), 1000, 50, 8000), (block,), b"cname")
    assert len(data) % 4 == 0
    (report,) = rtcp.parse(data)
    assert report.ssrc == 0xBEEF
    assert report.ntp == rtcp.ntp_time(WALL)
    assert report.blocks == (block,)
    (receiver,) = rtcp.parse(rtcp.build(7, None, (), b"x"))
    assert receiver == rtcp.Report(7, None, ())


@pytest.mark.parametrize(
    "data",
    [b"", b"\x80\xc8\x00", b"\x40\xc8\x00\x01" + bytes(4), b"\x81\xc9\x00\x07" + bytes(8)],
)
def test_malformed_reports_are_refused(data: bytes) -> None:
    with pytest.raises(rtcp.RtcpError):
        rtcp.parse(data)


def test_report_counts_what_we_sent_and_what_we_lost() -> None:
    session = RtpSession(PEER, 0, ssrc=0xAAAA)
    leg = rtcp.RtcpLeg(session, b"bridge", 0.0, WALL)
    for n in range(10):
        voice(session, n * 0.02)
    peer = RtpSession(("198.51.100.1", 1), 0, ssrc=0x5555, sequence=65530)
    sent = [voice(peer, n * 0.02) for n in range(20)]
    for index, data in enumerate(sent):
        if index not in (3, 4, 15):  # lost, across the sequence wrap
            session.receive(data, PEER, index * 0.02)
    (report,) = rtcp.parse(leg.report(1.0))
    assert report.ssrc == 0xAAAA and report.ntp is not None
    (block,) = report.blocks
    assert block.ssrc == 0x5555
    assert block.cumulative_lost == 3
    assert block.fraction_lost == 3 * 256 // 20
    assert block.highest_sequence == 0x10000 + (65530 + 19) % 65536


def test_round_trip_time_from_the_peers_report_block() -> None:
    session = RtpSession(PEER, 0, ssrc=0xAAAA)
    leg = rtcp.RtcpLeg(session, b"bridge", 0.0, WALL)
    voice(session, 0.0)
    (ours,) = rtcp.parse(leg.report(10.0))
    assert ours.ntp is not None
    # The peer holds our SR 0.2 s, answers after a 0.05 s path each way.
    block = rtcp.ReportBlock(0xAAAA, 64, 5, 100, 80, rtcp.middle(ours.ntp), int(0.2 * 65536))
    leg.receive(rtcp.build(0x5555, None, (block,), b"peer"), 10.3)
    assert leg.rtt is not None and abs(leg.rtt - 0.1) < 0.001
    assert leg.remote_fraction_lost == 0.25
    leg.receive(b"garbage", 10.4)  # ignored
    assert leg.reports_in == 1


def test_the_core_reports_on_both_legs_and_latches_the_trunks_rtcp() -> None:
    core = MediaCore(PCMU, 0x0B0B, rtp_timeout=30, now=0.0, wall_offset=WALL)
    assert core.get_timer() is not None  # the browser leg's first report
    core.apply_trunk_answer(PEER, PCMU, None, 0.0)
    assert core.trunk_rtcp_remote == (PEER[0], PEER[1] + 1)
    trunk = RtpSession(("192.0.2.10", 40002), 0, ssrc=0x7777)
    for n in range(50):
        core.receive_trunk(bytes(trunk.packet_for(b"\xff" * 160, 160, n * 0.02)), PEER, n * 0.02)
    sent: dict[str, list[bytes]] = {BROWSER_RTCP: [], TRUNK_RTCP: []}
    now = 0.0
    while now < 12.0:
        when = core.get_timer()
        assert when is not None
        now = when
        for where, packet in core.handle_timer(now):
            sent.setdefault(where, []).append(packet)
    assert len(sent[BROWSER_RTCP]) >= 2 and len(sent[TRUNK_RTCP]) >= 2
    (to_trunk, *_) = rtcp.parse(sent[TRUNK_RTCP][0])
    assert to_trunk.blocks[0].ssrc == 0x7777  # what we received of the trunk
    (to_browser, *_) = rtcp.parse(sent[BROWSER_RTCP][0])
    assert to_browser.ssrc == 0x0B0B and to_browser.ntp is not None  # an SR: we relayed RTP
    # The trunk's report comes from another port: it latches our RTCP there.
    core.receive_trunk_rtcp(rtcp.build(0x7777, None, (), b"t"), ("192.0.2.10", 40003), 13.0)
    assert core.trunk_rtcp_remote == ("192.0.2.10", 40003)
    core.receive_trunk_rtcp(b"\x80\xc9\x00\x01" + bytes(4), ("203.0.113.9", 9), 13.1)
    assert core.trunk_rtcp_remote == ("192.0.2.10", 40003)
    assert core.trunk_rtcp is not None and core.trunk_rtcp.reports_in == 1


def test_parse_skips_packets_it_does_not_read() -> None:
    bye = struct.pack("!BBHI", 0x81, rtcp.BYE, 1, 9)
    reports = rtcp.parse(rtcp.build(3, None, (), b"c") + bye)
    assert [r.ssrc for r in reports] == [3]


def test_mos_falls_with_loss_and_delay() -> None:
    clean = quality.mos(0.0, 40, "PCMU")
    assert 4.3 <= clean <= 4.5
    assert 3.0 < quality.mos(0.05, 40, "PCMU") < clean
    assert quality.mos(0.05, 40, "opus") < quality.mos(0.01, 40, "opus")
    assert quality.mos(0.0, 400, "PCMU") < 3.6
    assert quality.mos(1.0, 1000, "PCMU") == 1.0


def test_leg_quality_reads_loss_jitter_and_rtt() -> None:
    session = RtpSession(PEER, 0, ssrc=0xAAAA)
    leg = rtcp.RtcpLeg(session, b"bridge", 0.0, WALL)
    peer = RtpSession(("198.51.100.1", 1), 0, ssrc=0x5555)
    for n in range(100):
        data = voice(peer, n * 0.02)
        if n % 10 != 5:
            session.receive(data, PEER, n * 0.02)
    figures = quality.leg_quality(session, leg, "PCMU")
    assert figures.lost == 10 and figures.loss == 0.1
    assert figures.rtt_ms is None and figures.remote_loss is None
    assert figures.mos < quality.mos(0.0, 20, "PCMU")
