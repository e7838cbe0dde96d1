"""The load generator's arithmetic: rates, percentiles, the summary."""

from __future__ import annotations

import pytest

from bench.load_report import CallResult, percentile, spread_ms, summarize
from bench.loadgen import parse_rate
from bench.signaling_call import ws_url


def test_parse_rate() -> None:
    assert parse_rate("20/s") == 20.0
    assert parse_rate("5") == 5.0
    assert parse_rate("120/min") == 2.0
    with pytest.raises(ValueError):
        parse_rate("3/h")


def test_ws_url() -> None:
    assert ws_url("http://127.0.0.1:8080") == "ws://127.0.0.1:8080/ws"
    assert ws_url("https://bridge.example/") == "wss://bridge.example/ws"
    assert ws_url("ws://127.0.0.1:8080/ws") == "ws://127.0.0.1:8080/ws"


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([], 0.5) == 0.0
    assert spread_ms([0.001, 0.002])["max"] == 2.0


def test_summary_counts_failures_loss_and_round_trips() -> None:
    held = CallResult(0, phase="held", answer_s=0.01, connected_s=0.5, media_s=0.03)
    held.sent, held.echoed, held.received, held.expected = 100, 98, 99, 100
    held.rtts = [0.001, 0.002, 0.003]
    failed = CallResult(1, failure="ended: rejected", answer_s=0.02)
    summary = summarize([held, failed], {"codec": "PCMU"}, {"extra": 1})
    assert summary["calls"]["held"] == 1
    assert summary["calls"]["failures"] == {"ended: rejected": 1}
    assert summary["setup_ms"]["offer_to_answer"]["n"] == 2
    assert summary["setup_ms"]["offer_to_connected"]["n"] == 1
    media = summary["media"]
    assert media["echo_loss_pct"] == 2.0
    assert media["rx_loss_pct"] == 1.0
    assert media["calls_echo_loss_over_1pct"] == 1
    assert media["rtt_ms"]["p50"] == 2.0
    assert summary["extra"] == 1


def test_opus_summary_has_no_round_trips() -> None:
    held = CallResult(0, phase="held")
    held.sent, held.received, held.expected = 10, 10, 10
    media = summarize([held], {"codec": "opus"}, {})["media"]
    assert "rtt_ms" not in media and "echo_loss_pct" not in media
