"""``bridge media --workers 2`` against a real nats-server: two fleet members in
one parent, disjoint RTP slices, an ops port each, a killed worker restarted,
SIGTERM and SIGINT passed on, and workers that die with their parent."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import nats
import pytest
from nats.aio.msg import Msg

from proto import fleet as fleet_records
from proto import subjects
from tests.integration.harness import (
    Process,
    free_port_block,
    free_rtp_range,
    service_env,
    start_nats,
)

pytestmark = pytest.mark.timeout(90)

WORKERS = 2
STOP_WITHIN = 20.0
"Seconds SIGTERM or SIGINT may take to stop two idle workers and their parent."

_READY = re.compile(r"media worker (\S+) ready: trunk RTP on \S+ ports (\d+)-(\d+)")
_STARTED = re.compile(r"media worker (\S+) started: pid (\d+)")


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    process, url = start_nats(tmp_path_factory.mktemp("workers-nats"))
    yield url
    process.stop()


@dataclass
class Parent:
    """One ``bridge media --workers`` process and what its log says."""

    process: Process
    instance_id: str
    rtp: range
    ops_port: int

    def ready(self) -> dict[str, list[range]]:
        """The RTP ports of each worker's every start, by instance id, from the log."""
        found: dict[str, list[range]] = {}
        for worker, low, high in _READY.findall(self.process.log()):
            found.setdefault(worker, []).append(range(int(low), int(high) + 1))
        return found

    def pids(self) -> dict[str, list[int]]:
        """The pid of each worker's every start, by instance id."""
        found: dict[str, list[int]] = {}
        for worker, pid in _STARTED.findall(self.process.log()):
            found.setdefault(worker, []).append(int(pid))
        return found


@pytest.fixture
def parent(nats_url: str, tmp_path: Path) -> Iterator[Parent]:
    low, high = free_rtp_range(40)  # 20 pairs: 10 for each worker
    ops_port = free_port_block(WORKERS)
    instance_id = f"dense-{os.getpid()}-{tmp_path.name[-12:]}"
    env = service_env(
        nats_url,
        LOG_LEVEL="INFO",
        INSTANCE_ID=instance_id,
        RTP_PORT_MIN=str(low),
        RTP_PORT_MAX=str(high),
        RTP_BIND_HOST="127.0.0.1",
        PUBLIC_IP="127.0.0.1",
        MAX_CALLS="5",
        OPS_PORT=str(ops_port),
    )
    argv = [sys.executable, "-m", "services.cli", "media", "--workers", str(WORKERS)]
    process = Process("media-workers", argv, env, tmp_path / "media.log", cwd=tmp_path).start()
    try:
        yield Parent(process, instance_id, range(low, high + 1), ops_port)
    finally:
        process.stop(signal.SIGKILL)


async def heartbeats_from(nats_url: str, wanted: set[str], timeout: float = 30.0) -> set[str]:
    """The media instance ids heard until all of ``wanted`` were."""
    nc = await nats.connect(nats_url)
    heard: set[str] = set()

    async def on_beat(msg: Msg) -> None:
        heard.add(fleet_records.decode_heartbeat(msg.data).instance_id)

    try:
        await nc.subscribe(subjects.heartbeat("media"), cb=on_beat)
        async with asyncio.timeout(timeout):
            while not wanted <= heard:
                await asyncio.sleep(0.1)
    finally:
        await nc.close()
    return heard


async def until(check: Callable[[], bool], parent: Parent, timeout: float = 30.0) -> None:
    """Until ``check()`` is true, the parent alive all along."""
    async with asyncio.timeout(timeout):
        while not check():
            assert parent.process.alive(), parent.process.log()
            await asyncio.sleep(0.1)


def gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie counts: it runs no more)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


async def wait_gone(pids: list[int], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not all(gone(pid) for pid in pids):
            await asyncio.sleep(0.1)


async def test_two_workers_share_the_pod_and_stop_on_sigterm(parent: Parent, nats_url: str) -> None:
    ids = {f"{parent.instance_id}-w{i}" for i in range(WORKERS)}
    heard = await heartbeats_from(nats_url, ids)
    assert ids <= heard, heard
    await until(lambda: len(parent.ready()) == WORKERS, parent)

    # Each worker logged its slice: disjoint, inside RTP_PORT_MIN..RTP_PORT_MAX.
    slices = {worker: starts[0] for worker, starts in parent.ready().items()}
    assert set(slices) == ids, parent.process.log()
    first, second = slices.values()
    assert not set(first) & set(second)
    for ports in slices.values():
        assert ports.start % 2 == 0 and len(ports) % 2 == 0
        assert parent.rtp.start <= ports.start and ports.stop <= parent.rtp.stop

    # Worker i answers on OPS_PORT + i.
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        for index in range(WORKERS):
            base = f"http://127.0.0.1:{parent.ops_port + index}"
            async with http.get(f"{base}/readyz") as response:
                assert (response.status, await response.text()) == (200, "ready")
            async with http.get(f"{base}/metrics") as response:
                assert "bridge_active_calls" in await response.text()

    # A worker killed under its parent comes back, same id and ports, new pid.
    victim = f"{parent.instance_id}-w1"
    (old_pid,) = parent.pids()[victim]
    os.kill(old_pid, signal.SIGKILL)
    await until(lambda: len(parent.ready().get(victim, [])) == 2, parent, timeout=20)
    log = parent.process.log()
    assert f"media worker {victim} (pid {old_pid}) exited with code -9" in log
    new_pid = parent.pids()[victim][-1]
    assert new_pid != old_pid
    assert parent.ready()[victim][1] == slices[victim]

    # SIGTERM drains every worker; the parent exits 0 once both have.
    pids = [starts[-1] for starts in parent.pids().values()]
    parent.process.stop(signal.SIGTERM, timeout=STOP_WITHIN)
    assert parent.process.popen is not None
    assert parent.process.popen.returncode == 0, parent.process.log()
    await wait_gone(pids, timeout=2)
    assert parent.process.log().count("drained: no call left") >= WORKERS


async def test_workers_die_with_their_parent(parent: Parent) -> None:
    await until(lambda: len(parent.ready()) == WORKERS, parent)
    pids = [starts[-1] for starts in parent.pids().values()]
    assert len(pids) == WORKERS
    assert parent.process.popen is not None
    parent.process.popen.send_signal(signal.SIGKILL)
    await wait_gone(pids, timeout=STOP_WITHIN)


async def test_sigint_stops_every_worker_now(parent: Parent) -> None:
    await until(lambda: len(parent.ready()) == WORKERS, parent)
    pids = [starts[-1] for starts in parent.pids().values()]
    parent.process.stop(signal.SIGINT, timeout=STOP_WITHIN)
    assert parent.process.popen is not None
    assert parent.process.popen.returncode == 0, parent.process.log()
    await wait_gone(pids, timeout=2)
    log = parent.process.log()
    assert "SIGINT: passed on to 2 media worker(s)" in log
    assert log.count("stopping now: ending 0 call(s)") == WORKERS, log
