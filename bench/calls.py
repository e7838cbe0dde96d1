"""Call set-up latency and media CPU per call, measured on this machine.

Runs ``bridge up`` (embedded NATS, the three services, the demo echo peer),
places calls with the test client (aiortc over the WebSocket protocol) and
writes docs/benchmarks.md. Numbers are information, never assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from tests.integration.client import BridgeClient
from tests.integration.harness import Process, free_port, free_rtp_range

REPO = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(c) for c in text]
    return found


def find_service(supervisor: int, name: str) -> int:
    for pid in children(supervisor):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        if f"services.{name}".encode() in cmdline:
            return pid
    raise RuntimeError(f"no {name} process under {supervisor}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


async def one_call(base: str, codec: str) -> tuple[float, float, BridgeClient]:
    client = await BridgeClient(base).connect()
    started = time.perf_counter()
    await client.offer(codec=codec, destination=None)
    await client.accept_answer()
    answered = time.perf_counter()
    await client.expect("connected", 20)
    connected = time.perf_counter()
    return (answered - started) * 1000, (connected - started) * 1000, client


async def measure(
    base: str, media_pid: int, sequential: int, concurrent: int, hold: float
) -> dict[str, float]:
    answers: list[float] = []
    connects: list[float] = []
    for _ in range(sequential):
        answer_ms, connect_ms, client = await one_call(base, "opus")
        answers.append(answer_ms)
        connects.append(connect_ms)
        await client.hangup()
        await client.expect("ended")
        await client.close()

    await asyncio.sleep(1.0)
    idle_start = cpu_seconds(media_pid)
    await asyncio.sleep(hold / 2)
    idle = (cpu_seconds(media_pid) - idle_start) / (hold / 2)

    clients = []
    for _ in range(concurrent):
        clients.append((await one_call(base, "opus"))[2])
    await asyncio.sleep(1.0)
    busy_start = cpu_seconds(media_pid)
    await asyncio.sleep(hold)
    busy = (cpu_seconds(media_pid) - busy_start) / hold
    for client in clients:
        await client.hangup()
        await client.close()

    def pct(values: list[float], q: float) -> float:
        return sorted(values)[min(len(values) - 1, int(q * len(values)))]

    return {
        "answer_median_ms": statistics.median(answers),
        "answer_p90_ms": pct(answers, 0.9),
        "connected_median_ms": statistics.median(connects),
        "connected_p90_ms": pct(connects, 0.9),
        "media_idle_core_pct": idle * 100,
        "media_core_pct_per_call": (busy - idle) * 100 / concurrent,
        "media_core_pct_total": busy * 100,
    }


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    system = f"{platform.system()} {platform.release()}"
    return f"{os.cpu_count()} cores ({model}), Python {platform.python_version()}, {system}"


def write_report(results: dict[str, float], args: argparse.Namespace, out: Path) -> None:
    r = {k: f"{v:.0f}" if k.endswith("_ms") else f"{v:.1f}" for k, v in results.items()}
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`bench/calls.py`); measurements, never test assertions.",
        "",
        f"- Date: {date}",
        f"- Machine: {machine()}",
        "- Set-up: `bridge up` with the demo echo peer as the trunk; the client is aiortc",
        "  speaking the WebSocket protocol from the same machine (its CPU competes with",
        "  the bridge's on the same cores). Browser leg Opus, trunk leg PCMU.",
        "",
        f"## Call set-up ({args.sequential} sequential calls)",
        "",
        "| | median | p90 |",
        "|---|---|---|",
        f"| offer → answer (WebRTC answer at the browser) | {r['answer_median_ms']} ms"
        f" | {r['answer_p90_ms']} ms |",
        f"| offer → connected (incl. the demo peer's 0.5 s ring) | {r['connected_median_ms']} ms"
        f" | {r['connected_p90_ms']} ms |",
        "",
        f"## Media CPU ({args.concurrent} concurrent calls held {args.hold:.0f} s)",
        "",
        "| | share of one core |",
        "|---|---|",
        f"| media process idle | {r['media_idle_core_pct']} % |",
        f"| media process with {args.concurrent} calls | {r['media_core_pct_total']} % |",
        f"| per call (Opus ↔ G.711 through aiortc) | {r['media_core_pct_per_call']} % |",
        "",
    ]
    out.write_text("\n".join(lines))


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sequential", type=int, default=10)
    parser.add_argument("--concurrent", type=int, default=4)
    parser.add_argument("--hold", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        rtp_min, rtp_max = free_rtp_range(4 * args.concurrent + 20)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SIP_", "NATS_"))}
        env.update(
            HTTP_PORT=str(port),
            NATS_URL=f"nats://127.0.0.1:{free_port()}",
            RTP_PORT_MIN=str(rtp_min),
            RTP_PORT_MAX=str(rtp_max),
            DATA_DIR=str(tmp / "data"),
            LOG_LEVEL="WARNING",
        )
        bridge = str(Path(sys.executable).with_name("bridge"))
        up = Process("bridge-up", [bridge, "up"], env, tmp / "up.log", cwd=tmp).start()
        try:
            deadline = time.monotonic() + 60
            while f"http://localhost:{port}" not in up.log():
                if not up.alive() or time.monotonic() > deadline:
                    print(up.log(), file=sys.stderr)
                    return 1
                await asyncio.sleep(0.1)
            assert up.popen is not None
            media_pid = find_service(up.popen.pid, "media")
            results = await measure(
                f"http://127.0.0.1:{port}", media_pid, args.sequential, args.concurrent, args.hold
            )
        finally:
            up.stop(signal.SIGINT, timeout=20)
    write_report(results, args, args.out)
    print(args.out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
