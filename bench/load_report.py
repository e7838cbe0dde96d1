"""The load generator's numbers: CPU readings, percentiles, and the JSON summary.

Everything here is arithmetic on what ``LoadGenerator`` collected; the only
I/O is reading ``/proc`` for CPU time (our own, the machine's, and that of
watched processes with their descendants).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int | str = "self") -> float:
    """utime + stime of one process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def tree_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU seconds of ``pid`` and its descendants, by pid (gone processes left out)."""
    out = {}
    for p in descendants(pid):
        try:
            out[p] = process_cpu_seconds(p)
        except (OSError, IndexError, ValueError):
            continue
    return out


def command_name(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [a.decode(errors="replace") for a in argv if a]
    for i, word in enumerate(words):
        if word == "-m" and i + 1 < len(words):
            return words[i + 1]
    return os.path.basename(words[0]) if words else "?"


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


@dataclass
class CpuWindow:
    """CPU use between ``begin`` and ``end``: ours, the machine's, watched process trees."""

    watch: list[int] = field(default_factory=list)
    _own: float = 0.0
    _machine: tuple[int, int] = (0, 0)
    _trees: dict[int, dict[int, float]] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)

    def begin(self) -> None:
        self._own = process_cpu_seconds()
        self._machine = machine_jiffies()
        self._trees = {pid: tree_cpu_seconds(pid) for pid in self.watch}

    def end(self, wall: float) -> dict[str, Any]:
        own = process_cpu_seconds() - self._own
        busy, total = machine_jiffies()
        cores = os.cpu_count() or 1
        span = max(total - self._machine[1], 1)
        self.result = {
            "loadgen_pct": round(100.0 * own / wall, 1),
            "machine_busy_pct": round(100.0 * cores * (busy - self._machine[0]) / span, 1),
            "cores": cores,
        }
        watched: dict[str, float] = {}
        for pid, before in self._trees.items():
            for p, seconds in tree_cpu_seconds(pid).items():
                if p in before:
                    name = f"{command_name(p)}[{p}]"
                    watched[name] = round(100.0 * (seconds - before[p]) / wall, 1)
        if watched:
            self.result["watched_pct"] = watched
        return self.result


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0..1) of ``values``; 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[rank]


def spread_ms(seconds: list[float]) -> dict[str, float | int]:
    """p50, p90, p99 and max in milliseconds of durations given in seconds."""
    ms = [1000.0 * s for s in seconds]
    return {
        "n": len(ms),
        "p50": round(percentile(ms, 0.50), 2),
        "p90": round(percentile(ms, 0.90), 2),
        "p99": round(percentile(ms, 0.99), 2),
        "max": round(max(ms), 2) if ms else 0.0,
    }


@dataclass
class CallResult:
    """One call as the summary sees it."""

    index: int
    failure: str = ""
    phase: str = ""
    "How far it got: ws, offer, answer, connected, media, held."
    answer_s: float | None = None
    connected_s: float | None = None
    media_s: float | None = None
    sent: int = 0
    echoed: int = 0
    received: int = 0
    bytes_received: int = 0
    expected: int = 0
    jitter_ms: float = 0.0
    jitter_max_ms: float = 0.0
    rtts: list[float] = field(default_factory=list)
    misrouted: int = 0
    srtp_errors: dict[str, int] = field(default_factory=dict)
    end_cause: str = ""


def summarize(
    results: list[CallResult], config: dict[str, Any], extra: dict[str, Any]
) -> dict[str, Any]:
    """The JSON summary of a run."""
    failures: dict[str, int] = {}
    for r in results:
        if r.failure:
            failures[r.failure] = failures.get(r.failure, 0) + 1
    held = [r for r in results if r.phase == "held"]
    sent = sum(r.sent for r in held)
    echoed = sum(r.echoed for r in held)
    received = sum(r.received for r in held)
    expected = sum(r.expected for r in held)
    rtts = [x for r in held for x in r.rtts]
    tagged = config.get("codec", "").upper() == "PCMU"

    def loss(r: CallResult) -> float:
        return 100.0 * max(r.expected - r.received, 0) / r.expected if r.expected else 100.0

    media: dict[str, Any] = {
        "calls_measured": len(held),
        "packets_sent_per_call": round(sent / len(held), 1) if held else 0,
        "packets_received_per_call": round(received / len(held), 1) if held else 0,
        "rtp_bytes_received_per_call": round(sum(r.bytes_received for r in held) / len(held))
        if held
        else 0,
        "rx_loss_pct": round(100.0 * max(expected - received, 0) / expected, 3)
        if expected
        else None,
        "calls_rx_loss_over_1pct": sum(1 for r in held if loss(r) > 1.0),
        "jitter_ms": {
            "mean": round(sum(r.jitter_ms for r in held) / len(held), 2) if held else 0,
            "p99": round(percentile([r.jitter_ms for r in held], 0.99), 2),
            "max_seen": round(max((r.jitter_max_ms for r in held), default=0.0), 2),
        },
        "misrouted_packets": sum(r.misrouted for r in held),
        "srtp_errors": _merge(r.srtp_errors for r in results),
    }
    if tagged:
        media["echo_loss_pct"] = round(100.0 * (sent - echoed) / sent, 3) if sent else None
        media["calls_echo_loss_over_1pct"] = sum(
            1 for r in held if r.sent and (r.sent - r.echoed) > 0.01 * r.sent
        )
        media["rtt_ms"] = spread_ms(rtts)
    worst = sorted(held, key=lambda r: r.sent - r.echoed if tagged else r.expected - r.received)
    media["worst_calls"] = [
        {"call": r.index, "sent": r.sent, "echoed": r.echoed, "received": r.received,
         "expected": r.expected, "jitter_max_ms": round(r.jitter_max_ms, 2)}
        for r in worst[-3:][::-1]
    ]  # fmt: skip
    return {
        "config": config,
        "calls": {
            "attempted": len(results),
            "connected": sum(1 for r in results if r.connected_s is not None),
            "media_up": sum(1 for r in results if r.media_s is not None),
            "held": len(held),
            "failed": sum(1 for r in results if r.failure),
            "failures": failures,
            "end_causes": _count(r.end_cause for r in results if r.end_cause),
        },
        "setup_ms": {
            "offer_to_answer": spread_ms([r.answer_s for r in results if r.answer_s is not None]),
            "offer_to_connected": spread_ms(
                [r.connected_s for r in results if r.connected_s is not None]
            ),
            "offer_to_media": spread_ms([r.media_s for r in results if r.media_s is not None]),
        },
        "media": media,
        **extra,
    }


def _count(items: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out


def _merge(counts: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for one in counts:
        for key, n in one.items():
            out[key] = out.get(key, 0) + n
    return out
