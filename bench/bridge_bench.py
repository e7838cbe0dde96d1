"""Our bridge under LeanPeer load: ``bridge up`` with ``bench.echo_trunk`` as the trunk.

``Bridge`` starts the echo trunk and ``bridge up`` (one media worker, media and
HTTP on 127.0.0.1, a wide RTP range) in a temp dir and stops both.
``load_point`` runs ``python -m bench.loadgen`` as a subprocess watching the
media worker(s), samples their RSS while it runs, and returns the figures the
report needs. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.load_report import descendants
from bench.peers import PACKETS_PER_CALL, idle_share
from bench.ports import free_port, free_port_range
from bench.procstat import cpu_seconds

REPO = Path(__file__).resolve().parents[1]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` in KiB (0 if gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def is_media(command: str) -> bool:
    """A media worker's command line (``services.media`` or ``services.cli media``)."""
    return "services.media" in command or "services.cli media" in command


@dataclass
class Bridge:
    workdir: Path
    max_calls: int = 400
    trunk_port: int = 0
    http_port: int = 0
    trunk: subprocess.Popen[bytes] | None = None
    up: subprocess.Popen[bytes] | None = None
    media_pids: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def log(self) -> str:
        parts = []
        for name in ("trunk.log", "up.log"):
            with contextlib.suppress(OSError):
                parts.append((self.workdir / name).read_text(errors="replace"))
        return "\n".join(parts)

    async def start(self, timeout: float = 60.0) -> Bridge:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.trunk_port = free_port(socket.SOCK_DGRAM)
        self.http_port = free_port()
        rtp_min, rtp_max = free_port_range(4 * self.max_calls + 200)
        py = sys.executable
        with (self.workdir / "trunk.log").open("wb") as log:
            self.trunk = subprocess.Popen(
                [
                    py,
                    "-m",
                    "bench.echo_trunk",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.trunk_port),
                    "--max-calls",
                    str(4 * self.max_calls),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO,
            )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SIP_", "NATS_"))}
        env.update(
            HTTP_HOST="127.0.0.1",
            HTTP_PORT=str(self.http_port),
            NATS_URL=f"nats://127.0.0.1:{free_port()}",
            RTP_BIND_HOST="127.0.0.1",
            PUBLIC_IP="127.0.0.1",
            SIP_BIND_HOST="127.0.0.1",
            OPS_HOST="127.0.0.1",
            MEDIA_WORKERS="1",
            MAX_CALLS=str(self.max_calls),
            RTP_PORT_MIN=str(rtp_min),
            RTP_PORT_MAX=str(rtp_max),
            LOG_LEVEL="WARNING",
            DATA_DIR=str(self.workdir / "data"),
            SIP_TRUNK_HOST="127.0.0.1",
            SIP_TRUNK_PORT=str(self.trunk_port),
            SIP_TRANSPORT="udp",
            SIP_USERNAME="demo",
            SIP_DOMAIN="demo.invalid",
            BRIDGE_DEMO="true",
            # One load generator on one address places every call: the abuse limits
            # (docs/security.md) would refuse it as the flood it looks like.
            CALL_RATE="off",
            SOURCE_CALL_RATE="off",
            WS_CONNECTIONS_PER_SOURCE="100000",
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        )
        bridge = str(Path(sys.executable).with_name("bridge"))
        with (self.workdir / "up.log").open("wb") as log:
            self.up = subprocess.Popen(
                [bridge, "up"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
            )
        deadline = time.monotonic() + timeout
        while f":{self.http_port}" not in self.log():
            if self.up.poll() is not None or self.trunk.poll() is not None:
                raise RuntimeError(f"bridge up or the echo trunk exited:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"bridge up did not start in {timeout:.0f} s")
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)
        self.media_pids = [p for p in descendants(self.up.pid)[1:] if is_media(cmdline(p))]
        if not self.media_pids:
            raise RuntimeError(
                "no media worker under bridge up: "
                + "; ".join(cmdline(p) for p in descendants(self.up.pid))
            )
        return self

    def media_rss_kib(self) -> int:
        return sum(rss_kib(p) for p in self.media_pids)

    def media_cpu_seconds(self) -> float:
        return sum(cpu_seconds(p) for p in self.media_pids)

    async def media_idle_share(self, seconds: float) -> float:
        return sum([await idle_share(p, seconds / len(self.media_pids)) for p in self.media_pids])

    def stop(self) -> None:
        for proc, sig in ((self.up, signal.SIGINT), (self.trunk, signal.SIGTERM)):
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(sig)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


async def run_loadgen(
    bridge: Bridge, calls: int, codec: str, ramp: float, hold: float
) -> tuple[dict[str, Any], int]:
    """The loadgen's JSON summary and the peak media RSS (KiB) seen while it ran."""
    argv = [
        sys.executable,
        "-m",
        "bench.loadgen",
        "--url",
        bridge.url,
        "--calls",
        str(calls),
        "--codec",
        codec,
        "--ramp",
        f"{ramp}/s",
        "--hold",
        str(hold),
        *[a for p in bridge.media_pids for a in ("--watch-pid", str(p))],
    ]
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    peak = 0

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, bridge.media_rss_kib())
            await asyncio.sleep(0.5)

    sampler = asyncio.create_task(sample())
    limit = calls / ramp + hold + 90
    try:
        out, err = await asyncio.wait_for(proc.communicate(), limit)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"loadgen ran over {limit:.0f} s") from None
    finally:
        sampler.cancel()
    try:
        return json.loads(out), peak
    except ValueError:
        raise RuntimeError(f"loadgen exit {proc.returncode}: {err.decode()[-1500:]}") from None


async def load_point(
    bridge: Bridge,
    calls: int,
    codec: str,
    hold: float,
    idle: float,
    idle_rss: int,
    ramp: float = 25.0,
) -> dict[str, Any]:
    """One concurrency point: media CPU, µs/packet, loss, RTT, RSS per call, loadgen CPU."""
    before = bridge.media_rss_kib()
    summary, peak = await run_loadgen(bridge, calls, codec, ramp, hold)
    held = summary["calls"]["held"]
    watched = summary.get("cpu", {}).get("watched_pct", {})
    share = sum(watched.values()) / 100.0
    per_call = (share - idle) / held if held else float("nan")
    media = summary["media"]
    return {
        "calls": calls,
        "held": held,
        "failures": summary["calls"]["failures"],
        "idle_core_pct": idle * 100,
        "core_pct": share * 100,
        "core_pct_per_call": per_call * 100,
        "us_per_packet": per_call * 1e6 / PACKETS_PER_CALL,
        "rx_loss_pct": media["rx_loss_pct"],
        "echo_loss_pct": media.get("echo_loss_pct"),
        "rtt_ms": media.get("rtt_ms"),
        "rss_kib_per_call": (peak - before) / held if held else float("nan"),
        "rss_kib_per_call_vs_idle": (peak - idle_rss) / held if held else float("nan"),
        "rss_before_kib": before,
        "rss_peak_kib": peak,
        "loadgen_core_pct": summary["cpu"]["loadgen_pct"],
        "loadgen_core_pct_per_call": summary.get("loadgen_cpu_pct_per_call"),
        "machine_busy_pct": summary["cpu"]["machine_busy_pct"],
        "sent_vs_schedule_pct": summary.get("sent_vs_schedule_pct"),
        "setup_ms": summary["setup_ms"]["offer_to_answer"],
    }


async def setup_point(bridge: Bridge, calls: int, ramp: float) -> dict[str, Any]:
    """Offer → answer at ``ramp`` call attempts a second (PCMU, short hold)."""
    summary, _ = await run_loadgen(bridge, calls, "PCMU", ramp, 2.0)
    return {
        "rate": ramp,
        "calls": calls,
        "answered": summary["setup_ms"]["offer_to_answer"]["n"],
        "failed": summary["calls"]["failed"],
        "offer_to_answer": summary["setup_ms"]["offer_to_answer"],
        "offer_to_media": summary["setup_ms"]["offer_to_media"],
    }
