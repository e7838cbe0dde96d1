"""RFC 4733 DTMF: the sender's packets on a fake clock, the receiver's one digit per event."""

import struct

import pytest

from services.media.dtmf import (
    DIGIT_GAP,
    PACKET_INTERVAL,
    DtmfReceiver,
    DtmfSender,
    event_payload,
)
from services.media.rtp import RtpPacket, RtpSession

TRUNK = ("192.0.2.10", 40000)
EVENT_PT = 101


def session() -> RtpSession:
    return RtpSession(TRUNK, 0, ssrc=0xCAFE, sequence=65530, timestamp=1000)


def run(sender: DtmfSender, until: float = 10.0) -> list[tuple[float, RtpPacket]]:
    """Every packet the sender produces, with the time it was due, until it is idle."""
    out: list[tuple[float, RtpPacket]] = []
    while (when := sender.get_timer()) is not None and when < until:
        out += [(when, RtpPacket.parse(p)) for p in sender.handle_timer(when)]
    return out


def event(packet: RtpPacket) -> tuple[int, bool, int]:
    code, flags, duration = struct.unpack("!BBH", packet.payload)
    return code, bool(flags & 0x80), duration


def test_one_digit_is_one_event_with_growing_duration_and_three_end_packets() -> None:
    rtp = session()
    sender = DtmfSender(rtp, EVENT_PT)
    sender.queue("5", 100, now=0.0)
    packets = run(sender)
    assert all(p.payload_type == EVENT_PT and p.ssrc == 0xCAFE for _, p in packets)
    assert [p.marker for _, p in packets] == [True] + [False] * (len(packets) - 1)
    assert {p.timestamp for _, p in packets} == {1000}
    # 100 ms = 800 samples: 160, 320, 480, 640, then 800 with E, three times.
    assert [event(p) for _, p in packets] == [
        (5, False, 160),
        (5, False, 320),
        (5, False, 480),
        (5, False, 640),
        (5, True, 800),
        (5, True, 800),
        (5, True, 800),
    ]
    # One packet per 20 ms; the end copies go together.
    times = [t for t, _ in packets]
    assert times[:5] == pytest.approx([i * PACKET_INTERVAL for i in range(5)])
    assert times[5:] == [times[4], times[4]]
    # Sequence numbers go on without a gap, across the 16-bit wrap.
    assert [p.sequence_number for _, p in packets] == [65530, 65531, 65532, 65533, 65534, 65535, 0]
    assert sender.get_timer() is None and not sender.active


def test_voice_continues_the_sequence_and_the_media_clock() -> None:
    rtp = session()
    voice = RtpPacket.parse(bytes(rtp.packet_for(b"\xff" * 160, 160, 0.0)))
    sender = DtmfSender(rtp, EVENT_PT)
    sender.queue("1", 100, now=0.02)
    packets = run(sender)
    after = RtpPacket.parse(bytes(rtp.packet_for(b"\xff" * 160, 160, 1.0)))
    assert packets[0][1].sequence_number == voice.sequence_number + 1
    assert packets[0][1].timestamp == voice.timestamp + 160
    assert after.sequence_number == packets[-1][1].sequence_number + 1
    # The event's five packet intervals count on the clock voice resumes from.
    assert after.timestamp == packets[0][1].timestamp + 5 * 160
    assert after.payload_type == 0


def test_digits_follow_each_other_with_a_gap_and_their_own_timestamps() -> None:
    rtp = session()
    sender = DtmfSender(rtp, EVENT_PT)
    sender.queue("12#", 40, now=0.0)
    packets = run(sender)
    starts = [(t, p) for t, p in packets if p.marker]
    assert [event(p)[0] for _, p in starts] == [1, 2, 11]
    assert len({p.timestamp for _, p in starts}) == 3
    ends = [t for t, p in packets if event(p)[1]]
    # The next digit starts one interval plus the gap after the previous one's end.
    assert starts[1][0] - ends[0] == pytest.approx(PACKET_INTERVAL + DIGIT_GAP)
    assert sum(1 for _, p in packets if event(p)[1]) == 9


def test_active_only_while_an_event_is_on_the_wire() -> None:
    sender = DtmfSender(session(), EVENT_PT)
    sender.queue("9", 40, now=5.0)
    assert not sender.active
    assert sender.handle_timer(4.99) == []
    assert len(sender.handle_timer(5.0)) == 1 and sender.active
    assert len(sender.handle_timer(5.02)) == 3 and not sender.active


def test_clear_drops_queued_digits_but_ends_the_current_event() -> None:
    sender = DtmfSender(session(), EVENT_PT)
    sender.queue("123", 60, now=0.0)
    sender.handle_timer(0.0)
    sender.clear()
    rest = run(sender)
    assert [event(p) for _, p in rest][-1] == (1, True, 480)
    assert sender.get_timer() is None


def test_a_late_timer_does_not_bunch_packets() -> None:
    sender = DtmfSender(session(), EVENT_PT)
    sender.queue("4", 200, now=0.0)
    sender.handle_timer(0.0)
    sender.handle_timer(0.5)  # the loop stalled
    timer = sender.get_timer()
    assert timer is not None and timer > 0.5


def test_receiver_reports_each_event_once() -> None:
    receiver = DtmfReceiver()
    digits = [
        receiver.receive(8000, event_payload(1, False, 160)),
        receiver.receive(8000, event_payload(1, False, 320)),
        receiver.receive(8000, event_payload(1, True, 480)),
        receiver.receive(8000, event_payload(1, True, 480)),
        receiver.receive(8000, event_payload(1, True, 480)),
        receiver.receive(9600, event_payload(11, True, 480)),  # first packets lost
        receiver.receive(9600, event_payload(11, True, 480)),
        receiver.receive(11200, event_payload(1, False, 160)),  # the same key again
        receiver.receive(12800, event_payload(16, False, 160)),  # flash: not a digit
        receiver.receive(14400, b"\x01"),  # truncated
    ]
    assert [d for d in digits if d] == ["1", "#", "1"]


def test_rtp_session_hands_events_over_and_counts_them_in_sequence() -> None:
    rtp = RtpSession(TRUNK, 0)
    rtp.event_payload_type = EVENT_PT
    seen: list[tuple[int, bytes]] = []
    rtp.on_event = lambda ts, payload: seen.append((ts, payload))

    def pkt(seq: int, pt: int, payload: bytes) -> bytes:
        return bytes(RtpPacket(pt, seq, 160 * seq, 0x99, payload))

    assert rtp.receive(pkt(1, 0, b"\xff" * 160), TRUNK, 0.0) is not None
    assert rtp.receive(pkt(2, EVENT_PT, event_payload(3, False, 160)), TRUNK, 0.02) is None
    assert rtp.receive(pkt(3, 0, b"\xff" * 160), TRUNK, 0.04) is not None
    assert seen == [(320, event_payload(3, False, 160))]
    assert rtp.stats.lost == 0 and rtp.stats.dropped == 0 and rtp.stats.packets_in == 3
    # From anywhere but the latched trunk: dropped like audio.
    stray = pkt(4, EVENT_PT, event_payload(4, False, 160))
    assert rtp.receive(stray, ("192.0.2.99", 1), 0.06) is None
    assert len(seen) == 1 and rtp.stats.dropped == 1
