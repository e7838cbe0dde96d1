"""Readiness, the drain/stop lifecycle and the ops endpoint, without sockets."""

import asyncio

import pytest
from aiohttp.test_utils import make_mocked_request

from services.common.lifecycle import Lifecycle
from services.common.metrics import Metrics
from services.common.ops import OpsServer, ProcessState, Readiness, readiness
from services.common.settings import Settings

pytestmark = pytest.mark.timeout(10)


def ready_state(**overrides: object) -> Readiness:
    values: dict[str, object] = {
        "started": True,
        "draining": False,
        "bus_connected": True,
        "active": 0,
        "capacity": 2,
    }
    values.update(overrides)
    return readiness(**values)  # type: ignore[arg-type]


def test_readiness_states_and_their_http_status() -> None:
    assert ready_state() is Readiness.READY and Readiness.READY.status == 200
    assert ready_state(active=2) is Readiness.AT_CAPACITY and Readiness.AT_CAPACITY.status == 429
    assert ready_state(capacity=None, active=10**6) is Readiness.READY
    assert ready_state(started=False) is Readiness.STARTING and Readiness.STARTING.status == 503
    assert ready_state(bus_connected=False) is Readiness.NO_BUS and Readiness.NO_BUS.status == 503
    # Draining wins over everything, capacity included.
    assert ready_state(draining=True, active=2) is Readiness.DRAINING
    assert Readiness.DRAINING.status == 503


async def probe(server: OpsServer, path: str) -> tuple[int, str]:
    app = server.make_app()
    request = make_mocked_request("GET", path, app=app)
    match = await app.router.resolve(request)
    response = await match.handler(request)
    return response.status, response.text or response.body.decode()  # type: ignore[union-attr]


async def test_endpoints_follow_the_process_state() -> None:
    calls = 0
    metrics = Metrics()
    metrics.track_active_calls(lambda: calls)
    state = ProcessState(active=lambda: calls, capacity=1)
    server = OpsServer(state, metrics)
    assert await probe(server, "/readyz") == (503, "starting")
    state.started = True
    assert await probe(server, "/readyz") == (200, "ready")
    calls = 1
    assert await probe(server, "/readyz") == (429, "at capacity")
    status, text = await probe(server, "/metrics")
    assert status == 200 and "bridge_active_calls 1.0" in text
    assert await probe(server, "/healthz") == (200, "ok")
    state.bus_lost_for = lambda now: 30.0
    status, text = await probe(server, "/healthz")
    assert status == 503 and "nats" in text


async def test_sigterm_drains_then_stops_after_drain_timeout() -> None:
    lifecycle = Lifecycle("media", Settings(drain_timeout=0.2))
    lifecycle.state.started = True
    lifecycle.begin_drain()
    assert lifecycle.draining.is_set() and not lifecycle.stop.is_set()
    assert lifecycle.state.readiness() is Readiness.DRAINING
    # A call that never ends: waiting for idle gives up when DRAIN_TIMEOUT passes.
    assert not await lifecycle.wait_idle(lambda: 1)
    assert lifecycle.stop.is_set()
    lifecycle.close()


async def test_drain_ends_when_the_last_call_ends() -> None:
    lifecycle = Lifecycle("media", Settings(drain_timeout=60))
    calls = [1]
    lifecycle.begin_drain()
    asyncio.get_running_loop().call_later(0.1, calls.clear)
    assert await lifecycle.wait_idle(lambda: len(calls))
    assert not lifecycle.stop.is_set()
    lifecycle.close()


async def test_sigint_stops_now() -> None:
    lifecycle = Lifecycle("sipagent", Settings())
    lifecycle.stop_now()
    assert lifecycle.draining.is_set() and lifecycle.stop.is_set()
    assert not await lifecycle.wait_idle(lambda: 3)
    lifecycle.close()


def test_metrics_are_named_bridge_and_kept_off_the_default_registry() -> None:
    first, second = Metrics(), Metrics()  # two processes' worth: no duplicate error
    first.record_outcome("rejected", 486)
    first.record_outcome("normal", None)
    text = first.exposition().decode()
    assert 'bridge_call_outcomes_total{cause="rejected",status="486"} 1.0' in text
    assert 'bridge_call_outcomes_total{cause="normal",status="none"} 1.0' in text
    assert 'bridge_rtp_packets_total{direction="in"} 0.0' in text
    assert "bridge_call_outcomes_total{" not in second.exposition().decode()
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    assert names and all(name.startswith("bridge_") for name in names)
