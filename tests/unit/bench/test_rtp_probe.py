"""The probe stream: tagged packets out, loss, jitter and round trips of what comes back."""

from __future__ import annotations

import struct

from bench.rtp_probe import RING, TAG, ProbeStream, tone_payloads
from bench.webrtc_sdp import OPUS, PCMU


def header(packet: bytes | bytearray) -> tuple[int, int, int, int, int]:
    return struct.unpack_from("!BBHII", packet)


def echo(packet: bytes | bytearray, seq: int, timestamp: int = 0) -> bytes:
    """What the bridge relays back: its own header, our payload untouched."""
    return struct.pack("!BBHII", 0x80, 0, seq, timestamp, 999) + bytes(packet[12:])


def test_pcmu_tone_payloads() -> None:
    payloads = tone_payloads("PCMU")
    assert len(payloads) == 150
    assert all(len(p) == 160 for p in payloads)
    assert len(set(payloads[0])) > 4  # a tone, not silence


def test_packets_are_tagged_and_numbered() -> None:
    stream = ProbeStream(PCMU, ssrc=77, peer_id=5, first_seq=65535)
    one, two = stream.next_packet(1.0), stream.next_packet(1.02)
    assert len(one) == 12 + 160
    b0, b1, seq, ts, ssrc = header(one)
    assert (b0, b1, seq, ts, ssrc) == (0x80, 0x80, 65535, 0, 77)  # marker on the first
    b0, b1, seq, ts, ssrc = header(two)
    assert (b1, seq, ts) == (0, 0, 160)  # sequence wraps, timestamp +160
    assert one[12:14] == TAG
    assert struct.unpack_from("!HI", one, 14) == (5, 0)
    assert struct.unpack_from("!HI", two, 14) == (5, 1)
    assert stream.counter == 2


def test_opus_is_untagged_with_a_48khz_clock() -> None:
    stream = ProbeStream(OPUS, ssrc=1, peer_id=5)
    one, two = stream.next_packet(0.0), stream.next_packet(0.02)
    assert header(one)[1] & 0x7F == 111
    assert header(two)[3] == 960
    assert one[12:14] != TAG or len(one) < 20


def test_round_trips_and_echo_loss_in_the_window() -> None:
    stream = ProbeStream(PCMU, ssrc=1, peer_id=9)
    stream.next_packet(0.0)  # before the window: not counted
    stream.open_window()
    sent = [stream.next_packet(1.0 + 0.02 * i) for i in range(10)]
    stream.close_window()
    late = stream.next_packet(1.3)  # after the window: not counted
    for i, packet in enumerate(sent):
        if i != 4:  # one lost
            stream.receive(echo(packet, seq=100 + i, timestamp=160 * i), 1.005 + 0.02 * i)
    stream.receive(echo(late, seq=110), 1.31)
    counts = stream.window_counts()
    assert counts.sent == 10
    assert counts.echoed == 9
    assert len(stream.rtts) == 9
    assert all(abs(rtt - 0.005) < 1e-6 for rtt in stream.rtts)


def test_another_peers_audio_is_misrouted() -> None:
    mine, other = ProbeStream(PCMU, 1, peer_id=1), ProbeStream(PCMU, 2, peer_id=2)
    mine.open_window()
    mine.receive(echo(other.next_packet(0.0), seq=1), 0.01)
    assert mine.misrouted == 1
    assert mine.window_counts().echoed == 0


def test_sequence_gaps_duplicates_and_late_packets() -> None:
    stream = ProbeStream(PCMU, 1, peer_id=1)
    packet = stream.next_packet(0.0)
    stream.open_window()
    for seq in (65534, 65535, 1, 2, 2, 0):  # 0 is late, 2 twice
        stream.receive(echo(packet, seq=seq), 0.0)
    stream.close_window()
    counts = stream.window_counts()
    assert counts.expected == 5  # 65534 .. 2
    assert counts.received == 6
    assert (stream.duplicates, stream.late) == (1, 1)


def test_jitter_of_a_steady_stream_is_zero_and_grows_with_delay_changes() -> None:
    stream = ProbeStream(PCMU, 1, peer_id=1)
    packet = stream.next_packet(0.0)
    for i in range(50):
        stream.receive(echo(packet, seq=i, timestamp=160 * i), 10.0 + 0.02 * i)
    assert stream.jitter < 1e-6
    stream.receive(echo(packet, seq=50, timestamp=160 * 50), 10.0 + 0.02 * 50 + 0.010)
    # one packet 10 ms late: 80 timestamp units / 16
    assert abs(stream.jitter - 80 / 16) < 1e-6


def test_round_trips_older_than_the_ring_are_not_timed() -> None:
    stream = ProbeStream(PCMU, 1, peer_id=1)
    stream.open_window()
    first = stream.next_packet(0.0)
    for i in range(RING + 5):
        stream.next_packet(0.02 * (i + 1))
    stream.receive(echo(first, seq=1), 100.0)
    assert stream.rtts == []
    assert stream.window_counts().echoed == 1
