"""Call set-up latency and media CPU per call, measured on this machine.

Runs ``bridge up`` (embedded NATS, the three services, the demo echo peer),
places calls with the test client (aiortc over the WebSocket protocol) and
writes docs/benchmarks.md. Media CPU is measured for two browser codecs: Opus
(converted to and from G.711) and PCMU (relayed as is). With ``--baseline-rev``
the same run is repeated on another revision, checked out in a git worktree
whose services are imported through PYTHONPATH. Numbers are information, never
assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

from tests.integration.client import BridgeClient
from tests.integration.harness import Process, free_port, free_rtp_range

REPO = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BASELINE_TREE = Path("/tmp/bench-baseline")
THIS_TREE = Path("/tmp/bench-this")
CODECS = ("opus", "PCMU")
PACKETS_PER_CALL = 100  # 50 a second each way at 20 ms
LIBRARIES = ("aiortc", "aioice", "pylibsrtp", "av")
PATHS = {
    "opus": "Opus ↔ PCMU (converted)",
    "PCMU": "PCMU ↔ PCMU (relayed as is)",
}


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


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def proc_environ(pid: int) -> dict[str, str]:
    items = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    pairs = (item.decode(errors="replace").partition("=") for item in items if item)
    return {k: v for k, _, v in pairs}


async def one_call(base: str, codec: str) -> tuple[float, float, BridgeClient]:
    client = await BridgeClient(base).connect()
    started = time.perf_counter()
    await client.offer(codec=codec, destination=None)
    await client.accept_answer()
    answered = time.perf_counter()
    await client.expect("connected", 20)
    connected = time.perf_counter()
    return (answered - started) * 1000, (connected - started) * 1000, client


async def end_calls(clients: list[BridgeClient]) -> None:
    for client in clients:
        await client.hangup()
    for client in clients:
        with contextlib.suppress(AssertionError, TimeoutError):
            await client.expect("ended", 10)
        await client.close()


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


async def measure_setup(base: str, sequential: int) -> dict[str, float]:
    answers: list[float] = []
    connects: list[float] = []
    for _ in range(sequential):
        answer_ms, connect_ms, client = await one_call(base, "opus")
        answers.append(answer_ms)
        connects.append(connect_ms)
        await end_calls([client])
    return {
        "answer_median_ms": statistics.median(answers),
        "answer_p90_ms": pct(answers, 0.9),
        "connected_median_ms": statistics.median(connects),
        "connected_p90_ms": pct(connects, 0.9),
    }


async def measure_media(
    base: str, media_pid: int, codec: str, concurrent: int, hold: float
) -> dict[str, float]:
    await asyncio.sleep(1.0)
    idle_start = cpu_seconds(media_pid)
    await asyncio.sleep(hold / 2)
    idle = (cpu_seconds(media_pid) - idle_start) / (hold / 2)

    clients = [(await one_call(base, codec))[2] for _ in range(concurrent)]
    await asyncio.sleep(1.0)
    for client in clients:
        client.clear_audio()
    busy_start = cpu_seconds(media_pid)
    own_start = own_cpu_seconds()
    machine_start = machine_ticks()
    wall_start = time.monotonic()
    await asyncio.sleep(hold)
    wall = time.monotonic() - wall_start
    busy = (cpu_seconds(media_pid) - busy_start) / wall
    own = (own_cpu_seconds() - own_start) / wall
    machine_end = machine_ticks()
    frames = sum(len(client._audio) for client in clients) / concurrent / wall
    await end_calls(clients)

    per_call = (busy - idle) / concurrent
    return {
        "media_idle_core_pct": idle * 100,
        "media_core_pct_total": busy * 100,
        "media_core_pct_per_call": per_call * 100,
        "media_us_per_packet": per_call * 1e6 / PACKETS_PER_CALL,
        "client_core_pct": own * 100,
        "machine_busy_pct": (machine_end[0] - machine_start[0])
        / max(1, machine_end[1] - machine_start[1])
        * 100,
        "client_frames_per_s": frames,
    }


def imported_from(root: Path, env: dict[str, str], cwd: Path) -> str:
    """Where ``services.media`` resolves with the services' environment."""
    probe = "import services.media.app as m; print(m.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, cwd=cwd, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


async def run_revision(root: Path, args: argparse.Namespace) -> dict[str, Any]:
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
            # Services run from a tmp dir: import ``root``'s code, not the venv's checkout.
            PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
        )
        module = imported_from(root, env, tmp)
        if not Path(module).is_relative_to(root):
            raise RuntimeError(f"services.media imports from {module}, not {root}")
        bridge = str(Path(sys.executable).with_name("bridge"))
        up = Process("bridge-up", [bridge, "up"], env, tmp / "up.log", cwd=tmp).start()
        try:
            deadline = time.monotonic() + 60
            while f"http://localhost:{port}" not in up.log():
                if not up.alive() or time.monotonic() > deadline:
                    print(up.log(), file=sys.stderr)
                    raise RuntimeError(f"bridge up did not start for {root}")
                await asyncio.sleep(0.1)
            assert up.popen is not None
            media_pid = find_service(up.popen.pid, "media")
            media_path = proc_environ(media_pid).get("PYTHONPATH", "")
            if str(root) not in media_path.split(os.pathsep):
                raise RuntimeError(f"media process PYTHONPATH {media_path!r} lacks {root}")
            base = f"http://127.0.0.1:{port}"
            result: dict[str, Any] = {
                "module": module,
                "setup": await measure_setup(base, args.sequential),
            }
            for codec in CODECS:
                result[codec] = await measure_media(
                    base, media_pid, codec, args.concurrent, args.hold
                )
        except Exception:
            print(f"logs in {tmp}:\n{up.log()}", file=sys.stderr)
            raise
        finally:
            up.stop(signal.SIGINT, timeout=20)
    return result


def git(*argv: str, cwd: Path = REPO) -> str:
    return subprocess.run(
        ["git", *argv], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout.strip()


@contextlib.contextmanager
def worktree(path: Path, rev: str) -> Iterator[Path]:
    if path.exists():
        raise RuntimeError(f"{path} exists; remove it first")
    git("worktree", "add", "--detach", str(path), rev)
    try:
        yield path
    finally:
        git("worktree", "remove", "--force", str(path))


def describe(root: Path) -> str:
    rev = git("log", "-1", "--format=%h", cwd=root)
    dirty = git(
        "status", "--porcelain", "--untracked-files=no", "--", "services", "proto", cwd=root
    )
    return f"{rev} (services with uncommitted changes)" if dirty else rev


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} cores ({model}), {platform.system()} {platform.release()}"


def libraries() -> str:
    return ", ".join(f"{name} {importlib.metadata.version(name)}" for name in LIBRARIES)


def write_report(
    runs: dict[str, dict[str, Any]], revs: dict[str, str], args: argparse.Namespace, out: Path
) -> None:
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    names = list(runs)
    baseline = "baseline" in runs
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`bench/calls.py`); measurements, never test assertions.",
        "",
        f"- Date: {date}",
        f"- Machine: {machine()}",
        f"- Python {platform.python_version()}; {libraries()}",
        f"- This revision: {revs['this']}"
        + (", checked out with `git worktree add`" if args.rev else ""),
    ]
    if baseline:
        lines += [
            f"- Baseline: {revs['baseline']}, checked out with `git worktree add` and run from",
            "  the same venv; its services import the worktree's code through PYTHONPATH",
            f"  (`services.media` from `{runs['baseline']['module']}`).",
        ]
    lines += [
        "- Set-up: `bridge up` with the demo echo peer as the trunk; the client is aiortc",
        "  speaking the WebSocket protocol from the same machine (its CPU competes with",
        "  the bridge's on the same cores). Trunk leg PCMU (the demo peer takes the first",
        "  of the offer's PCMU/PCMA).",
        "- Not in this run: rtpengine and Janus comparisons.",
        "",
        f"## Call set-up ({args.sequential} sequential calls, browser Opus)",
        "",
        "| | " + " | ".join(f"{n} median | {n} p90" for n in names) + " |",
        "|---" * (1 + 2 * len(names)) + "|",
    ]
    for label, key in (
        ("offer → answer (WebRTC answer at the browser)", "answer"),
        ("offer → connected (incl. the demo peer's 0.5 s ring)", "connected"),
    ):
        cells = []
        for n in names:
            s = runs[n]["setup"]
            cells += [f"{s[key + '_median_ms']:.0f} ms", f"{s[key + '_p90_ms']:.0f} ms"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    lines += [
        "",
        f"## Media CPU ({args.concurrent} concurrent calls held {args.hold:.0f} s,"
        " idle subtracted)",
        "",
        "Share of one core per call, and CPU µs per relayed packet (100 packets a",
        "second per call: 50 each way at 20 ms). Converted/relayed describes this",
        "revision; the baseline runs whatever path its own code has for that codec.",
        "",
    ]
    if baseline:
        lines += [
            "| browser codec | this %/call | baseline %/call | ratio (baseline/this)"
            " | this µs/packet | baseline µs/packet |",
            "|---|---|---|---|---|---|",
        ]
        for codec in CODECS:
            t, b = runs["this"][codec], runs["baseline"][codec]
            ratio = b["media_core_pct_per_call"] / max(t["media_core_pct_per_call"], 1e-9)
            lines.append(
                f"| {PATHS[codec]} | {t['media_core_pct_per_call']:.2f} %"
                f" | {b['media_core_pct_per_call']:.2f} % | {ratio:.1f}"
                f" | {t['media_us_per_packet']:.0f} | {b['media_us_per_packet']:.0f} |"
            )
    else:
        lines += ["| browser codec | %/call | µs/packet |", "|---|---|---|"]
        for codec in CODECS:
            t = runs["this"][codec]
            lines.append(
                f"| {PATHS[codec]} | {t['media_core_pct_per_call']:.2f} %"
                f" | {t['media_us_per_packet']:.0f} |"
            )
    lines += [
        "",
        "## Detail",
        "",
        "Media process share of one core idle and with the calls; the client's (this",
        "process's) share of one core; all cores busy; audio frames a second each",
        "client received per call (50 expected).",
        "",
        "| revision | browser codec | media idle | media with calls | client"
        " | machine busy | frames/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in names:
        for codec in CODECS:
            m = runs[n][codec]
            lines.append(
                f"| {n} | {codec} | {m['media_idle_core_pct']:.1f} %"
                f" | {m['media_core_pct_total']:.1f} % | {m['client_core_pct']:.1f} %"
                f" | {m['machine_busy_pct']:.0f} % | {m['client_frames_per_s']:.1f} |"
            )
    lines.append("")
    out.write_text("\n".join(lines))


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sequential", type=int, default=10)
    parser.add_argument("--concurrent", type=int, default=4)
    parser.add_argument("--hold", type=float, default=10.0)
    parser.add_argument(
        "--rev", help="measure this git revision (a worktree) instead of the working tree"
    )
    parser.add_argument("--baseline-rev", help="also measure this git revision (a worktree)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args()

    runs: dict[str, dict[str, Any]] = {}
    revs: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        this = REPO
        if args.rev:
            this = stack.enter_context(worktree(THIS_TREE, git("rev-parse", args.rev)))
        revs["this"] = describe(this)
        runs["this"] = await run_revision(this, args)
    if args.baseline_rev:
        with worktree(BASELINE_TREE, git("rev-parse", args.baseline_rev)) as tree:
            revs["baseline"] = describe(tree)
            runs["baseline"] = await run_revision(tree, args)
    write_report(runs, revs, args, args.out)
    print(args.out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
