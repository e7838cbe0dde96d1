import struct

import pytest

from services.media.rtp import HEADER_SIZE, STALE_GRACE, RtpError, RtpPacket, RtpSession

TRUNK = ("192.0.2.10", 40000)


def packet(seq: int, pt: int = 0, ssrc: int = 0x1234, payload: bytes = b"\xff" * 160) -> bytes:
    return bytes(
        RtpPacket(
            payload_type=pt, sequence_number=seq, timestamp=seq * 160, ssrc=ssrc, payload=payload
        )
    )


def test_parse_serialize_round_trip() -> None:
    original = RtpPacket(
        payload_type=8,
        sequence_number=65535,
        timestamp=0xFFFFFFFF,
        ssrc=0xDEADBEEF,
        payload=b"abc",
        marker=True,
        csrc=[1, 2],
    )
    data = bytes(original)
    assert len(data) == HEADER_SIZE + 8 + 3
    assert RtpPacket.parse(data) == original


def test_parse_skips_extension_and_padding() -> None:
    header = struct.pack("!BBHII", 0x80 | 0x10 | 0x20, 0, 1, 2, 3)
    extension = struct.pack("!HH", 0xBEDE, 1) + b"\x00" * 4
    data = header + extension + b"pay" + b"\x00\x00\x03"
    assert RtpPacket.parse(data).payload == b"pay"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80\x00\x00",
        bytes(RtpPacket(0, 1, 2, 3, b"x"))[:11],
        b"\x40" + bytes(11),  # version 1
        b"\x83" + bytes(11),  # three CSRCs announced, none present
        b"\x90" + bytes(11) + b"\x00\x00",  # extension header cut short
        b"\x90" + bytes(11) + b"\xbe\xde\x00\x05",  # extension longer than the packet
        b"\xa0" + bytes(11) + b"\x00\x00\x09",  # padding longer than the packet
        b"\xa0" + bytes(11) + b"\x00",  # padding length zero
    ],
)
def test_malformed_packets_are_refused(data: bytes) -> None:
    with pytest.raises(RtpError):
        RtpPacket.parse(data)
    assert issubclass(RtpError, ValueError)


def test_outgoing_packets() -> None:
    session = RtpSession(TRUNK, payload_type=8)
    first = RtpPacket.parse(session.packet_for(b"a" * 160, 160, now=1.0))
    second = RtpPacket.parse(session.packet_for(b"b" * 160, 160, now=1.02))
    assert first.marker and not second.marker
    assert first.payload_type == second.payload_type == 8
    assert first.ssrc == second.ssrc == session.ssrc
    assert second.sequence_number == (first.sequence_number + 1) & 0xFFFF
    assert second.timestamp == (first.timestamp + 160) & 0xFFFFFFFF
    assert second.payload == b"b" * 160
    assert session.stats.packets_out == 2
    assert session.stats.bytes_out == 2 * (HEADER_SIZE + 160)


def test_random_start() -> None:
    a, b = RtpSession(TRUNK, 0), RtpSession(TRUNK, 0)
    pa, pb = RtpPacket.parse(a.packet_for(b"", 160, 0)), RtpPacket.parse(b.packet_for(b"", 160, 0))
    assert (pa.ssrc, pa.sequence_number, pa.timestamp) != (
        pb.ssrc,
        pb.sequence_number,
        pb.timestamp,
    )


def test_sequence_and_timestamp_wrap() -> None:
    session = RtpSession(TRUNK, 0, sequence=0xFFFF, timestamp=0xFFFFFF00)
    first = RtpPacket.parse(session.packet_for(b"x", 160, 0))
    second = RtpPacket.parse(session.packet_for(b"x", 160, 0))
    assert (first.sequence_number, second.sequence_number) == (0xFFFF, 0)
    assert second.timestamp == (0xFFFFFF00 + 160) & 0xFFFFFFFF


def test_oversized_payload_is_refused() -> None:
    with pytest.raises(ValueError):
        RtpSession(TRUNK, 0).packet_for(b"x" * 2000, 160, 0)


def test_receive_returns_payload_and_counts() -> None:
    session = RtpSession(TRUNK, 0)
    assert session.receive(packet(1, payload=b"abc"), TRUNK, now=5.0) == b"abc"
    assert session.stats.packets_in == 1
    assert session.stats.bytes_in == HEADER_SIZE + 3
    assert session.stats.last_in == 5.0


def test_wrong_payload_type_and_garbage_are_dropped() -> None:
    session = RtpSession(TRUNK, 0)
    assert session.receive(packet(1, pt=101), TRUNK, 0) is None
    assert session.receive(b"\x00garbage", TRUNK, 0) is None
    assert session.stats.dropped == 2
    assert session.stats.packets_in == 0
    assert not session.latched


def test_latches_to_the_actual_source() -> None:
    session = RtpSession(TRUNK, 0)
    behind_nat = ("198.51.100.7", 31000)
    assert session.receive(packet(1), behind_nat, 0) is not None
    assert session.remote == behind_nat and session.latched
    # Another source cannot take over the latched stream.
    assert session.receive(packet(2), ("203.0.113.9", 5004), 0) is None
    assert session.remote == behind_nat
    assert session.stats.dropped == 1


def test_retarget_latches_again() -> None:
    session = RtpSession(TRUNK, 0)
    session.receive(packet(1), TRUNK, 0)
    other = ("192.0.2.20", 50000)
    session.retarget(other, 8, 0)
    assert session.remote == other and not session.latched
    assert session.receive(packet(7, pt=8, ssrc=99), other, 0) is not None


def test_retarget_ignores_the_previous_source_for_a_while() -> None:
    # Early media latched to a media server behind NAT; the 200 names the callee.
    session = RtpSession(TRUNK, 0)
    early = ("198.51.100.7", 31000)
    assert session.receive(packet(1), early, 10.0) is not None
    callee = ("192.0.2.20", 50000)
    session.retarget(callee, 0, 10.0)
    # Early media still in flight cannot win the new latch...
    assert session.receive(packet(2), early, 10.5) is None
    assert not session.latched and session.remote == callee
    # ...the callee's stream can.
    assert session.receive(packet(1, ssrc=99), callee, 10.6) is not None
    assert session.latched and session.remote == callee
    assert session.receive(packet(3), early, 10.7) is None


def test_retarget_falls_back_to_the_previous_source_after_the_grace() -> None:
    # A far end that moved its SDP but still sends from where it did: heard again.
    session = RtpSession(TRUNK, 0)
    session.receive(packet(1), TRUNK, 0.0)
    session.retarget(("192.0.2.20", 50000), 0, 1.0)
    assert session.receive(packet(2), TRUNK, 1.0 + STALE_GRACE - 0.1) is None
    assert session.receive(packet(3), TRUNK, 1.0 + STALE_GRACE) is not None
    assert session.latched and session.remote == TRUNK


def test_retarget_to_the_same_address_latches_at_once() -> None:
    session = RtpSession(TRUNK, 0)
    session.receive(packet(1), TRUNK, 0.0)
    session.retarget(TRUNK, 8, 0.0)
    assert session.receive(packet(2, pt=8), TRUNK, 0.1) is not None


def test_loss_counting_with_wrap_and_reordering() -> None:
    session = RtpSession(TRUNK, 0)
    for seq in (65533, 65534, 1, 2):  # 65535 and 0 lost across the wrap
        session.receive(packet(seq), TRUNK, 0)
    assert session.stats.lost == 2
    session.receive(packet(0), TRUNK, 0)  # late arrival fills one gap
    assert session.stats.lost == 1
    session.receive(packet(2), TRUNK, 0)  # duplicate: no change
    assert session.stats.lost == 1


def test_new_ssrc_does_not_count_loss() -> None:
    session = RtpSession(TRUNK, 0)
    session.receive(packet(10, ssrc=1), TRUNK, 0)
    session.receive(packet(5000, ssrc=2), TRUNK, 0)
    assert session.stats.lost == 0


def test_jitter_follows_rfc3550() -> None:
    session = RtpSession(TRUNK, 0)
    # Packets 20 ms apart in RTP time arriving exactly 20 ms apart: no jitter.
    for seq in range(10):
        session.receive(packet(seq), TRUNK, now=seq * 0.020)
    assert session.stats.jitter == pytest.approx(0.0)
    # One packet 10 ms late (80 timestamp units at 8 kHz) adds 80/16 units.
    session.receive(packet(10), TRUNK, now=10 * 0.020 + 0.010)
    assert session.stats.jitter == pytest.approx(80 / 16)


def test_jitter_ignores_timestamp_wrap() -> None:
    session = RtpSession(TRUNK, 0)
    first = RtpPacket(payload_type=0, sequence_number=1, timestamp=0xFFFFFF60, ssrc=7)
    second = RtpPacket(payload_type=0, sequence_number=2, timestamp=0x00000000, ssrc=7)
    session.receive(bytes(first), TRUNK, now=1.0)
    session.receive(bytes(second), TRUNK, now=1.020)
    assert session.stats.jitter == pytest.approx(0.0, abs=1e-6)
