"""What an operator sees: probes, metrics, and SIGTERM drain vs SIGINT stop.

This module runs its own stack (the ``stack`` fixture below overrides the
shared one) because it stops media workers on purpose, and because each
process here listens on a known ops port.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.client import BridgeClient, connected_client
from tests.integration.conftest import SipagentFactory, Stack, TrunkFactory
from tests.integration.harness import (
    Process,
    Sipp,
    free_port,
    free_rtp_range,
    service_env,
    start_nats,
    start_service,
    wait_ready,
)
from tests.integration.test_call import CHALLENGE_401, assert_tone_returns

pytestmark = pytest.mark.timeout(120)


@dataclass
class OpsStack(Stack):
    env: dict[str, str] = field(default_factory=dict)
    ops: dict[str, int] = field(default_factory=dict)
    "Ops port of each process started with a known one, by name."

    def start_media(self, name: str) -> Process:
        """Another media worker with its own RTP range, log and ops port."""
        rtp_min, rtp_max = free_rtp_range()
        self.ops[name] = free_port()
        env = dict(
            self.env,
            RTP_PORT_MIN=str(rtp_min),
            RTP_PORT_MAX=str(rtp_max),
            OPS_PORT=str(self.ops[name]),
            INSTANCE_ID=name,
        )
        process = Process(
            name, [sys.executable, "-m", "services.media"], env, self.tmp / f"{name}.log", self.tmp
        ).start()
        self.processes.append(process)
        return process


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsStack]:
    tmp = tmp_path_factory.mktemp("ops")
    nats, nats_url = start_nats(tmp)
    http_port = free_port()
    env = service_env(
        nats_url,
        HTTP_HOST="127.0.0.1",
        HTTP_PORT=str(http_port),
        RTP_BIND_HOST="127.0.0.1",
        PUBLIC_IP="127.0.0.1",
        INVITE_TIMEOUT="3",
    )
    stack = OpsStack(nats_url, f"http://127.0.0.1:{http_port}", tmp, [nats], env=env)
    stack.ops["signaling"] = free_port()
    stack.processes.append(
        start_service("signaling", dict(env, OPS_PORT=str(stack.ops["signaling"])), tmp)
    )
    stack.start_media("media-a")
    if not wait_ready(nats_url, "media", "signaling"):
        pytest.fail(f"media or signaling did not start:\n{stack.logs()}")
    yield stack
    for process in reversed(stack.processes):
        process.stop(signal.SIGINT)


async def get(port: int, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}{path}", timeout=aiohttp.ClientTimeout(total=5)) as r,
    ):
        return r.status, await r.text()


async def metric(port: int, name: str, **labels: str) -> float:
    """The value of one sample on a process's /metrics (0 when absent)."""
    _, text = await get(port, "/metrics")
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check() if callable(check) else check  # type: ignore[operator]
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout}s")
        await asyncio.sleep(0.1)


async def exit_code(process: Process, timeout: float) -> int:
    popen = process.popen
    assert popen is not None
    await until(lambda: popen.poll() is not None, timeout, f"{process.name} exit")
    return int(popen.returncode)


async def connect_call(stack: Stack) -> BridgeClient:
    return await connected_client(stack.base_url, "PCMU")


async def test_each_service_answers_probes_and_metrics(
    stack: OpsStack, sipagent: SipagentFactory
) -> None:
    stack.ops["sipagent"] = free_port()
    sipagent(free_port(), OPS_PORT=str(stack.ops["sipagent"]))
    for name in ("signaling", "media-a", "sipagent"):
        port = stack.ops[name]
        assert await get(port, "/healthz") == (200, "ok"), name
        assert await get(port, "/readyz") == (200, "ready"), name
        status, text = await get(port, "/metrics")
        assert status == 200 and "bridge_active_calls 0.0" in text, (name, text[:500])
        assert "bridge_nats_errors_total" in text


async def test_call_outcome_is_counted(
    stack: OpsStack, sipagent: SipagentFactory, trunk: TrunkFactory
) -> None:
    sipp = trunk("busy.xml")
    port = free_port()
    sipagent(sipp.port, OPS_PORT=str(port))
    client = await BridgeClient(stack.base_url).connect()
    try:
        await client.offer()
        ended = await client.expect("ended", 15)
        assert ended["status"] == 486
    finally:
        await client.close()
    assert await metric(port, "bridge_call_attempts_total") == 1
    busy = {"cause": "rejected", "status": "486"}
    assert await metric(port, "bridge_call_outcomes_total", **busy) == 1


async def test_sigterm_drains_a_media_worker_while_its_call_goes_on(
    stack: OpsStack, sipagent: SipagentFactory, tmp_path: Path
) -> None:
    sipp = Sipp("challenge_echo_bye.xml", tmp_path, keys=dict(CHALLENGE_401), calls=2).start()
    sipagent_ops = free_port()
    sipagent(sipp.port, OPS_PORT=str(sipagent_ops))
    first = await connect_call(stack)
    second: BridgeClient | None = None
    stack.start_media("media-b")
    try:
        assert wait_ready(stack.nats_url, "media")
        # The only worker that was there when the call came holds it.
        media_a = next(p for p in stack.processes if p.name == "media-a")
        assert await metric(stack.ops["media-a"], "bridge_active_calls") == 1
        assert media_a.popen is not None
        media_a.popen.send_signal(signal.SIGTERM)
        await until(lambda: _status_is(stack.ops["media-a"], 503), 5, "media-a draining")
        assert await get(stack.ops["media-a"], "/readyz") == (503, "draining")
        await until(lambda: _status_is(stack.ops["media-b"], 200), 10, "media-b ready")

        # A new call goes to the other worker; the draining one keeps its call.
        second = await connect_call(stack)
        assert await metric(stack.ops["media-b"], "bridge_active_calls") == 1
        assert await metric(stack.ops["media-a"], "bridge_active_calls") == 1
        await assert_tone_returns(first, stack)
        await assert_tone_returns(second, stack)
        assert media_a.alive(), "the draining worker left before its call ended"

        # Its call ends: the draining worker exits 0 on its own.
        await first.hangup()
        assert (await first.expect("ended"))["cause"] == "normal"
        assert await exit_code(media_a, 10) == 0, media_a.log()[-3000:]
        assert "drained" in media_a.log()

        await second.hangup()
        await second.expect("ended")
        assert await sipp.wait(10) == 0, f"trunk missed a BYE:\n{sipp.messages()}"
        # Operators see both calls in the metrics.
        normal = {"cause": "normal", "status": "none"}
        assert await metric(sipagent_ops, "bridge_call_outcomes_total", **normal) == 2
        assert await metric(stack.ops["signaling"], "bridge_call_setup_seconds_count") == 2
        await until(
            lambda: _positive(stack.ops["media-b"], "bridge_rtp_packets_total", direction="in"),
            5,
            "RTP counted",
        )
        assert await metric(stack.ops["media-b"], "bridge_rtp_bytes_total", direction="out") > 0
        assert await metric(stack.ops["media-b"], "bridge_rtp_jitter_seconds_count") == 1
    finally:
        await first.close()
        if second is not None:
            await second.close()
        sipp.stop()


async def test_no_media_worker_left_gives_a_clear_error(stack: OpsStack) -> None:
    media_b = next(p for p in stack.processes if p.name == "media-b")
    assert media_b.popen is not None
    media_b.popen.send_signal(signal.SIGTERM)
    assert await exit_code(media_b, 10) == 0, media_b.log()[-3000:]
    client = await BridgeClient(stack.base_url).connect()
    try:
        await client.offer()
        error = await client.expect("error", 15)
        assert error["code"] == "no_media_worker", error
    finally:
        await client.close()


async def test_sigint_stops_a_sip_agent_now_with_bye(
    stack: OpsStack, sipagent: SipagentFactory, trunk: TrunkFactory
) -> None:
    stack.start_media("media-c")
    assert wait_ready(stack.nats_url, "media")
    sipp = trunk("challenge_echo_bye.xml", **CHALLENGE_401)
    agent = sipagent(sipp.port)
    client = await connect_call(stack)
    try:
        assert agent.popen is not None
        agent.popen.send_signal(signal.SIGINT)
        # SIGINT stops now: no drain, so the exit comes well within the drain timeout.
        assert await exit_code(agent, 5) == 0, agent.log()[-3000:]
        assert await sipp.wait(5) == 0, f"no BYE on SIGINT:\n{sipp.messages()}"
        ended = await client.expect("ended", 10)
        assert ended["cause"] in ("normal", "internal"), ended
    finally:
        await client.close()


async def _status_is(port: int, status: int) -> bool:
    try:
        return (await get(port, "/readyz"))[0] == status
    except aiohttp.ClientError:
        return False


async def _positive(port: int, name: str, **labels: str) -> bool:
    return await metric(port, name, **labels) > 0


async def test_sigterm_drains_signaling(
    stack: OpsStack, sipagent: SipagentFactory, trunk: TrunkFactory
) -> None:
    sipp = trunk("challenge_echo_bye.xml", **CHALLENGE_401)
    sipagent(sipp.port)
    caller = await connect_call(stack)
    idle = await BridgeClient(stack.base_url).connect()
    signaling = next(p for p in stack.processes if p.name == "signaling")
    try:
        assert signaling.popen is not None
        signaling.popen.send_signal(signal.SIGTERM)
        await until(lambda: _status_is(stack.ops["signaling"], 503), 5, "signaling draining")
        # A browser already connected is told why its new call is refused.
        await idle.offer()
        refused = await idle.expect("error")
        assert refused["code"] == "draining", refused
        # A new browser is turned away; the call in progress goes on.
        with pytest.raises(aiohttp.WSServerHandshakeError) as handshake:
            await BridgeClient(stack.base_url).connect()
        assert handshake.value.status == 503
        await assert_tone_returns(caller, stack)
        await caller.hangup()
        await caller.expect("ended")
        assert await sipp.wait(10) == 0, sipp.messages()
        assert await exit_code(signaling, 10) == 0, signaling.log()[-3000:]
    finally:
        await caller.close()
        await idle.close()
