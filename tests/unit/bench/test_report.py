"""The benchmark report's arithmetic and text (bench.report, bench.report_md)."""

from __future__ import annotations

import math

from bench.bridge_bench import is_media
from bench.report import brief, calls_per_core, evaluate, num, ratio, verdict
from bench.report_md import markdown


def point(calls: int, pct: float, **extra: object) -> dict[str, object]:
    return {"calls": calls, "held": calls, "core_pct_per_call": pct, "us_per_packet": pct * 100,
            "core_pct": pct * calls, "rx_loss_pct": 0.0, **extra}  # fmt: skip


def test_calls_per_core() -> None:
    assert calls_per_core(point(10, 0.5)) == 200.0
    assert math.isnan(calls_per_core(None))
    assert math.isnan(calls_per_core({"calls": 10, "error": "boom"}))
    assert math.isnan(calls_per_core(point(10, 0.0)))


def test_ratio_and_num() -> None:
    assert ratio(200.0, 100.0) == 2.0
    assert math.isnan(ratio(math.nan, 1.0))
    assert math.isnan(ratio(1.0, 0.0))
    assert num(math.nan) == "–"
    assert num(None) == "–"
    assert num(1.234, ".1f", " ms") == "1.2 ms"


def test_verdict() -> None:
    assert verdict(130.0, 100.0, True).startswith("**met** (+30 %")
    assert verdict(80.0, 100.0, True).startswith("**missed** (-20 %")
    assert verdict(0.5, 1.0, False).startswith("**met** (+50 %")
    assert verdict(math.nan, 1.0, False) == "not measured"


def test_brief_of_a_failure() -> None:
    assert "FAILED" in brief({"calls": 5, "error": "RuntimeError: x"})


def test_evaluate_compares_at_the_largest_common_n() -> None:
    results = {
        "bridge": {
            "pcmu": [point(50, 0.5, rtt_ms={"n": 10, "p99": 0.8}, rss_kib_per_call=512.0),
                     point(200, 0.4, rtt_ms={"n": 10, "p99": 0.9}, rss_kib_per_call=300.0)],
            "opus": [point(100, 2.0, rss_kib_per_call=2048.0)],
            "setup": [{"rate": 50, "calls": 100, "offer_to_answer": {"p50": 5.0}}],
            "pesq": {"PCMU": 4.3, "opus": "RuntimeError: no audio"},
        },
        "rtpengine": {"webrtc": [point(50, 1.0), point(200, 0.8)]},
    }  # fmt: skip
    rows = {row[0]: row for row in evaluate(results)}
    passthrough = rows["passthrough ≥ 1.3× rtpengine's calls per core"]
    assert "2.00×" in passthrough[1] and "200 calls" in passthrough[1]
    assert passthrough[2].startswith("**met**")
    assert rows["Opus ↔ PCMU ≥ 100 calls per media core"][2].startswith("**missed**")
    assert rows["PESQ-NB ≥ 4.0 passthrough"][2].startswith("**met**")
    assert rows["PESQ-NB ≥ 3.8 Opus"][2] == "not measured"
    assert rows["≤ 1 MB RSS per call (Opus)"][2].startswith("**missed**")
    assert rows["offer → answer p50 ≤ 20 ms at 50 attempts/s"][2].startswith("**met**")


def test_markdown_of_failed_systems() -> None:
    text = markdown(
        {"bridge": {"error": "RuntimeError: bridge up did not start"},
         "rtpengine": {"plain": [{"calls": 50, "error": "TimeoutError: x"}]},
         "janus": {"error": "FileNotFoundError: janus"}},
        "benchmarks.png",
    )  # fmt: skip
    assert "bridge up did not start" in text
    assert "FileNotFoundError: janus" in text
    assert "| 50 | failed |" in text


def test_is_media() -> None:
    assert is_media("/venv/bin/python3 -m services.cli media --workers 1")
    assert is_media("python -m services.media")
    assert not is_media("python -m services.signaling")
