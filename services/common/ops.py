"""The operations endpoint of every process: ``/healthz``, ``/readyz``, ``/metrics``.

A small aiohttp app on ``OPS_HOST:OPS_PORT``, apart from signaling's public
page so that probes and scrapes never share a port with browsers.

- ``/healthz``: 200 ``ok`` while the event loop answers; 503 once NATS has
  been unreachable for ``NATS_GRACE`` seconds (a restart may help).
- ``/readyz``: 200 ready, 429 at capacity, 503 starting, draining or without NATS.
- ``/metrics``: the process's ``bridge_*`` metrics, Prometheus text format.
- any ``/<name>`` a service added with ``Lifecycle.serve_json`` (the SIP
  agent's ``/registrations``, signaling's ``/calls``): JSON read at each
  request, from a function or a coroutine function.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from services.common.metrics import Metrics

log = logging.getLogger(__name__)

NATS_GRACE = 5.0
"Seconds without NATS after which ``/healthz`` fails (reconnects usually take less)."


class Readiness(enum.Enum):
    """What ``/readyz`` answers, with its HTTP status."""

    STARTING = (503, "starting")
    READY = (200, "ready")
    AT_CAPACITY = (429, "at capacity")
    DRAINING = (503, "draining")
    NO_BUS = (503, "nats disconnected")

    @property
    def status(self) -> int:
        return self.value[0]

    @property
    def text(self) -> str:
        return self.value[1]


def readiness(
    *, started: bool, draining: bool, bus_connected: bool, active: int, capacity: int | None
) -> Readiness:
    """The readiness of a process from what it knows; draining wins over everything."""
    if draining:
        return Readiness.DRAINING
    if not started:
        return Readiness.STARTING
    if not bus_connected:
        return Readiness.NO_BUS
    if capacity is not None and active >= capacity:
        return Readiness.AT_CAPACITY
    return Readiness.READY


@dataclass
class ProcessState:
    """What the ops endpoint reads at each probe; the lifecycle and the service fill it."""

    started: bool = False
    "Set once the service takes work."
    draining: bool = False
    active: Callable[[], int] = lambda: 0
    "How many calls the process holds now."
    capacity: int | None = None
    "Calls it takes at most (None: no limit of its own)."
    bus_connected: Callable[[], bool] = lambda: True
    bus_lost_for: Callable[[float], float] = lambda now: 0.0
    "Seconds NATS has been lost, given the loop's time."
    json_routes: dict[str, Callable[[], object]] = field(default_factory=dict)
    "Extra ``GET /<name>`` pages of the service: what to serve as JSON (or an awaitable of it)."

    def readiness(self) -> Readiness:
        return readiness(
            started=self.started,
            draining=self.draining,
            bus_connected=self.bus_connected(),
            active=self.active(),
            capacity=self.capacity,
        )


class OpsServer:
    """Serves the three endpoints of one process."""

    def __init__(self, state: ProcessState, metrics: Metrics) -> None:
        self._state = state
        self._metrics = metrics
        self._runner: web.AppRunner | None = None
        self.port = 0
        "The port actually listened on (useful when OPS_PORT is 0)."

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics_page)
        app.router.add_get("/{name}", self._json_page)
        return app

    async def start(self, host: str, port: int) -> None:
        self._runner = web.AppRunner(self.make_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            await self.close()
            raise OSError(
                f"OPS_PORT {port} on {host} cannot be used ({exc.strerror or exc}); "
                "set OPS_PORT to a free port (0 picks one)"
            ) from None
        self.port = int(self._runner.addresses[0][1])
        log.info("ops endpoint on http://%s:%d (/healthz /readyz /metrics)", host, self.port)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        lost_for = self._state.bus_lost_for(asyncio.get_running_loop().time())
        if lost_for > NATS_GRACE:
            return web.Response(status=503, text=f"nats disconnected for {lost_for:.0f} s")
        return web.Response(text="ok")

    async def _readyz(self, request: web.Request) -> web.Response:
        ready = self._state.readiness()
        return web.Response(status=ready.status, text=ready.text)

    async def _json_page(self, request: web.Request) -> web.Response:
        provider = self._state.json_routes.get(request.match_info["name"])
        if provider is None:
            raise web.HTTPNotFound()
        value = provider()
        if inspect.isawaitable(value):
            value = await value
        return web.Response(body=msgspec.json.encode(value), content_type="application/json")

    async def _metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self._metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )
