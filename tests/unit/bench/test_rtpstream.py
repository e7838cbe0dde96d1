from __future__ import annotations

import random

import pytest

from bench.ports import ephemeral_range, free_port_range
from bench.procstat import parse_stat_cpu
from bench.rtpstream import (
    HEADER,
    SAMPLES,
    RtpLoad,
    Stats,
    audio_address,
    percentile,
    plain_sdp,
    read_stamp,
    restamp,
    stamped_packet,
)


def test_stamped_packet_is_20ms_of_pcmu() -> None:
    packet = stamped_packet(call=3, index=5, ssrc=0xABCDEF, now_ns=123456789)
    assert len(packet) == HEADER.size + SAMPLES
    first, second, seq, timestamp, ssrc = HEADER.unpack_from(packet)
    assert first == 0x80 and second == 0  # RTP version 2, PCMU
    assert (seq, timestamp, ssrc) == (5, 5 * SAMPLES, 0xABCDEF)
    assert read_stamp(packet) == (123456789, 3, 5, 0)


def test_sequence_and_timestamp_wrap() -> None:
    packet = stamped_packet(call=0, index=70000, ssrc=1, now_ns=0)
    _, _, seq, timestamp, _ = HEADER.unpack_from(packet)
    assert seq == 70000 % 65536
    assert timestamp == 70000 * SAMPLES


def test_restamp_writes_the_echo_time_only() -> None:
    packet = stamped_packet(call=1, index=2, ssrc=9, now_ns=10)
    echoed = restamp(packet, 99)
    assert len(echoed) == len(packet)
    assert read_stamp(echoed) == (10, 1, 2, 99)
    assert echoed[:12] == packet[:12]
    assert echoed[-100:] == packet[-100:]


def test_percentile() -> None:
    assert percentile([], 0.5) == 0.0
    assert percentile([5], 0.99) == 5
    values = list(range(1, 101))
    assert percentile(values, 0.5) in (50, 51)
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100


def test_stats_summary() -> None:
    stats = Stats(sent=100, forwarded=98, echoed=98, returned=97, per_call=[50, 48, 0])
    stats.forward_ns = [1_000_000, 2_000_000, 3_000_000]
    summary = stats.summary()
    assert summary["forward_loss_pct"] == pytest.approx(2.0)
    assert summary["back_loss_pct"] == pytest.approx(100 / 98)
    assert summary["forward_p50_ms"] == pytest.approx(2.0)
    assert summary["silent_calls"] == 1
    assert Stats().summary()["forward_loss_pct"] == 0.0


def test_plain_sdp_and_audio_address() -> None:
    sdp = plain_sdp(40000)
    assert "m=audio 40000 RTP/AVP 0 101\r\n" in sdp
    assert audio_address(sdp) == ("127.0.0.1", 40000)


def test_audio_address_prefers_the_media_connection_line() -> None:
    sdp = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=video 1000 RTP/AVP 96\r\nc=IN IP4 10.0.0.2\r\n"
    sdp += "m=audio 2000 RTP/AVP 0\r\nc=IN IP4 127.0.0.1\r\n"
    assert audio_address(sdp) == ("127.0.0.1", 2000)
    assert audio_address("v=0\r\nc=IN IP4 127.0.0.2\r\nm=audio 3000 RTP/AVP 0\r\n") == (
        "127.0.0.2",
        3000,
    )
    with pytest.raises(ValueError):
        audio_address("v=0\r\n")


async def test_direct_streams_on_loopback() -> None:
    """Three calls, A straight to B, a quarter second: nothing lost, delays recorded."""
    load = await RtpLoad().open(3)
    try:
        for pair in load.pairs:
            pair.target = pair.echo_address
        await load.run(0.2, warmup=0.04, drain=0.1)
    finally:
        load.close()
    summary = load.stats.summary()
    assert load.stats.sent == 3 * 12
    assert summary["forward_loss_pct"] == 0.0
    assert summary["back_loss_pct"] == 0.0
    assert summary["silent_calls"] == 0
    assert load.stats.forward_ns and load.stats.back_ns
    assert 0 < summary["forward_p50_ms"] < 100


async def test_run_needs_targets() -> None:
    load = await RtpLoad().open(1)
    try:
        with pytest.raises(RuntimeError):
            await load.run(0.02)
    finally:
        load.close()


def test_free_port_range_is_outside_the_ephemeral_range() -> None:
    first, last = free_port_range(40, rng=random.Random(1))
    low, high = ephemeral_range()
    assert last - first + 1 == 40
    assert first % 2 == 0
    assert last < low or first > high


def test_parse_stat_cpu_survives_odd_command_names() -> None:
    fields = ["S"] + ["0"] * 10 + ["250", "150"] + ["0"] * 30
    stat = "1234 (rtp engine) (x)) " + " ".join(fields)
    from bench.procstat import CLOCK_TICKS

    assert parse_stat_cpu(stat) == pytest.approx(400 / CLOCK_TICKS)
