"""docs/benchmarks.md and docs/benchmarks.png from the figures ``bench.calls`` collected.

Pure formatting and arithmetic, apart from ``environment()`` (machine,
versions) and ``write()``/``plot()`` (files). Numbers are information only.
"""

from __future__ import annotations

import importlib.metadata
import itertools
import math
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

LIBRARIES = ("aiortc", "aioice", "pylibsrtp", "av", "uvloop")
MB_KIB = 1024.0

TARGETS = {
    "passthrough_vs_rtpengine": 1.3,
    "opus_calls_per_core": 100.0,
    "latency_passthrough_ms": 1.0,
    "latency_transcoding_ms": 30.0,
    "pesq_pcmu": 4.0,
    "pesq_opus": 3.8,
    "rss_mb_per_call": 1.0,
    "setup_p50_ms": 20.0,
}


def _tool_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({type(exc).__name__})"
    lines = [line.strip() for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    return lines[0] if lines else "?"


def environment() -> dict[str, Any]:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    libs = {}
    for name in LIBRARIES:
        try:
            libs[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            libs[name] = "not installed"
    try:
        from bench import janus, rtpengine

        rtpe, jan = rtpengine.version(), janus.version()
    except Exception as exc:
        rtpe = jan = f"unavailable ({exc})"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": model,
        "cores": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "libraries": libs,
        "rtpengine": rtpe,
        "janus": jan,
        "sipp": _tool_version(["sipp", "-v"]),
    }


def calls_per_core(point: dict[str, Any] | None) -> float:
    """100 / (% of a core per call); NaN when unknown or not positive."""
    if not point or "error" in point:
        return math.nan
    pct = point.get("core_pct_per_call")
    if not isinstance(pct, int | float) or not pct > 0:
        return math.nan
    return 100.0 / pct


def ratio(ours: float, theirs: float) -> float:
    if math.isnan(ours) or math.isnan(theirs) or theirs <= 0:
        return math.nan
    return ours / theirs


def num(value: Any, fmt: str = ".2f", unit: str = "") -> str:
    if isinstance(value, int | float) and not (isinstance(value, float) and math.isnan(value)):
        return f"{value:{fmt}}{unit}"
    return "–"


def at(points: list[dict[str, Any]], calls: int) -> dict[str, Any] | None:
    for p in points:
        if p.get("calls") == calls and "error" not in p:
            return p
    return None


def ok(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in points if "error" not in p and p.get("core_pct_per_call") is not None]


SATURATED_PCT = 95.0
"A media worker this busy (% of one core) is saturated: its per-call CPU is capped."


def saturated(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in points if p.get("core_pct", 0.0) >= SATURATED_PCT]


def unsaturated(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in points if p.get("core_pct", 0.0) < SATURATED_PCT]


def marginal_rss(points: list[dict[str, Any]]) -> list[tuple[int, int, float]]:
    """(n1, n2, KiB per call) between consecutive points' peak RSS: one-time costs cancel."""
    known = sorted(
        (p for p in points if p.get("rss_peak_kib") and p.get("held")), key=lambda p: p["calls"]
    )
    return [
        (a["calls"], b["calls"], (b["rss_peak_kib"] - a["rss_peak_kib"]) / (b["held"] - a["held"]))
        for a, b in itertools.pairwise(known)
        if b["held"] > a["held"]
    ]


def brief(point: dict[str, Any]) -> str:
    if "error" in point:
        return f"{point.get('calls')} calls: FAILED {point['error'][:200]}"
    held = point.get("held", point.get("calls"))
    loss = point.get("rx_loss_pct", point.get("forward_loss_pct"))
    return (
        f"{point.get('calls')} calls ({held} held): {num(point.get('core_pct_per_call'), '.3f')}"
        f" %core/call, {num(point.get('us_per_packet'), '.1f')} µs/packet, total"
        f" {num(point.get('core_pct'), '.1f')} %, loss {num(loss, '.3f')} %"
    )


def verdict(value: float, target: float, higher_is_better: bool) -> str:
    if math.isnan(value):
        return "not measured"
    if higher_is_better:
        met = value >= target
        by = (value / target - 1) * 100
    else:
        met = value <= target
        by = (1 - value / target) * 100
    word = "**met**" if met else "**missed**"
    return f"{word} ({'+' if by >= 0 else ''}{by:.0f} % {'margin' if met else 'short'})"


def evaluate(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(target, measured, verdict, note) rows."""
    bridge = results.get("bridge", {})
    rtpe = results.get("rtpengine", {})
    pcmu, opus = ok(bridge.get("pcmu", [])), ok(bridge.get("opus", []))
    rows = []
    # Passthrough vs rtpengine WebRTC ↔ RTP (same job) at the largest common N.
    web = ok(rtpe.get("webrtc", []))
    common = sorted({p["calls"] for p in pcmu} & {p["calls"] for p in web})
    if common:
        n = common[-1]
        r = ratio(calls_per_core(at(pcmu, n)), calls_per_core(at(web, n)))
        rows.append(
            (
                "passthrough ≥ 1.3× rtpengine's calls per core",
                f"{num(r)}× (PCMU, {n} calls, vs rtpengine WebRTC ↔ RTP)",
                verdict(r, TARGETS["passthrough_vs_rtpengine"], True),
                "like-for-like job (DTLS-SRTP ↔ RTP); vs plain RTP relay in the comparison table",
            )
        )
    else:
        rows.append(
            (
                "passthrough ≥ 1.3× rtpengine's calls per core",
                "–",
                "not measured",
                "no common N with a result",
            )
        )
    if opus:
        fit = unsaturated(opus) or opus
        top = max(fit, key=lambda p: p["calls"])
        cpc = calls_per_core(top)
        note = "busy minus idle, one worker, largest point below saturation"
        for p in saturated(opus):
            note += (
                f"; at {p['calls']} calls the worker was saturated ({num(p['core_pct'], '.0f')} %"
                f" of a core, rx loss {num(p.get('rx_loss_pct'), '.3f')} %), which caps its"
                f" per-call figure ({num(calls_per_core(p), '.0f')} calls/core)"
            )
        rows.append(
            (
                "Opus ↔ PCMU ≥ 100 calls per media core",
                f"{num(cpc, '.0f')} ({top['calls']} calls)",
                verdict(cpc, TARGETS["opus_calls_per_core"], True),
                note,
            )
        )
    timed = [p for p in pcmu if (p.get("rtt_ms") or {}).get("n")]
    if timed:
        low = min(timed, key=lambda p: p["calls"])
        high = max(timed, key=lambda p: p["calls"])
        rtt = low["rtt_ms"]["p99"]
        word = verdict(rtt, TARGETS["latency_passthrough_ms"], False)
        if word.startswith("**missed**"):
            word = "inconclusive (round trip above the one-way target)"
        rows.append(
            (
                "added one-way latency p99 ≤ 1 ms (passthrough)",
                f"round trip p99 {num(rtt)} ms at {low['calls']} calls,"
                f" {num(high['rtt_ms']['p99'])} ms at {high['calls']} calls",
                word,
                "only the round trip is measured: bridge both ways + Python echo trunk + load "
                "generator on the same 2 cores; one-way added latency is below it. "
                "Round trips through rtpengine and Janus with the same peers: their tables",
            )
        )
    rows.append(
        (
            "added one-way latency p99 ≤ 30 ms (transcoding)",
            "–",
            "not measured",
            "Opus carries no echo tags: no round trip for the Opus path",
        )
    )
    pesq = bridge.get("pesq", {})
    for codec, key, label in (
        ("PCMU", "pesq_pcmu", "≥ 4.0 passthrough"),
        ("opus", "pesq_opus", "≥ 3.8 Opus"),
    ):
        score = pesq.get(codec)
        value = score if isinstance(score, int | float) else math.nan
        rows.append(
            (
                f"PESQ-NB {label}",
                num(value),
                verdict(value, TARGETS[key], True),
                "round trip (both directions, echoed)"
                if not isinstance(score, str)
                else f"failed: {score[:120]}",
            )
        )
    for name, points in (("PCMU", pcmu), ("Opus", opus)):
        if not points:
            continue
        top = max(points, key=lambda p: p["calls"])
        steps = marginal_rss(points)
        if steps:
            n1, n2, kib = steps[-1]
            mb = kib / MB_KIB
            measured = f"{num(mb, '.2f')} MB marginal ({n1} → {n2} calls)"
            note = (
                f"(peak RSS at {n2} − peak at {n1}) / {n2 - n1}; "
                f"delta over the RSS before the {top['calls']}-call point:"
                f" {num(top.get('rss_kib_per_call', math.nan) / MB_KIB, '.2f')} MB/call"
            )
        else:
            mb = top.get("rss_kib_per_call", math.nan) / MB_KIB
            measured = f"{num(mb, '.2f')} MB ({top['calls']} calls)"
            note = "peak media RSS during the point minus RSS before it, / calls held"
        word = verdict(mb, TARGETS["rss_mb_per_call"], False)
        first = min(points, key=lambda p: p["calls"])
        idle_rss = bridge.get("idle_rss_kib") or 0
        if idle_rss and (first.get("rss_before_kib") or 0) > 1.2 * idle_rss:
            word = "inconclusive (reads low)"
            note += (
                f"; these points ran on a heap earlier points grew"
                f" ({num(first['rss_before_kib'] / MB_KIB, '.0f')} MB before, idle"
                f" {num(idle_rss / MB_KIB, '.0f')} MB): freed memory was reused"
            )
        rows.append(
            (
                f"≤ 1 MB RSS per call ({name})",
                measured,
                word,
                note,
            )
        )
    fast = [s for s in bridge.get("setup", []) if "error" not in s and s.get("rate") == 50]
    if fast:
        p50 = fast[0]["offer_to_answer"]["p50"]
        rows.append(
            (
                "offer → answer p50 ≤ 20 ms at 50 attempts/s",
                f"{num(p50, '.1f')} ms",
                verdict(p50, TARGETS["setup_p50_ms"], False),
                f"{fast[0]['calls']} calls",
            )
        )
    return rows


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bridge, rtpe, janus = (results.get(k, {}) for k in ("bridge", "rtpengine", "janus"))
    lines = [
        ("ours: PCMU passthrough", ok(bridge.get("pcmu", [])), "o-"),
        ("ours: Opus ↔ PCMU", ok(bridge.get("opus", [])), "s-"),
        ("rtpengine: plain RTP ↔ RTP", ok(rtpe.get("plain", [])), "^--"),
        (
            f"rtpengine: WebRTC ↔ RTP ({rtpe.get('webrtc_peers', '')})",
            ok(rtpe.get("webrtc", [])),
            "v--",
        ),
        (f"Janus SIP plugin ({janus.get('peers', '')})", ok(janus.get("runs", [])), "d:"),
    ]
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for label, points, style in lines:
        points = sorted(points, key=lambda p: p["calls"])
        if points:
            xs = [p["calls"] for p in points]
            ax.plot(xs, [p["core_pct_per_call"] for p in points], style, label=label)
            if label.startswith("ours"):
                for p in saturated(points):
                    ax.annotate(
                        "worker saturated",
                        (p["calls"], p["core_pct_per_call"]),
                        textcoords="offset points",
                        xytext=(-40, -14),
                        fontsize=7,
                    )
    ax.set_xlabel("concurrent calls")
    ax.set_ylabel("media CPU, % of one core per call")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    meta = results.get("meta", {})
    ax.set_title(
        f"Media CPU per call — {meta.get('cores')} cores, {meta.get('date', '')}", fontsize=10
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write(results: dict[str, Any], out: Path) -> None:
    from bench.report_md import markdown

    png = out.with_suffix(".png")
    try:
        plot(results, png)
    except Exception as exc:
        results.setdefault("meta", {})["plot_error"] = f"{type(exc).__name__}: {exc}"
    out.write_text(markdown(results, png.name))
