"""The signaling service's HTTP side: the page, its config and the WebSocket.

Each WebSocket gets a ``BrowserSession`` (the protocol and call set-up) driven
by a ``BrowserConnection`` (the I/O). On stop, every call is hung up and given
a short while to end before sockets and the bus close.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from services.common.bus import Bus
from services.common.fleet.heartbeat import Load
from services.common.fleet.member import FleetMember
from services.common.fleet.placement import Placement
from services.common.lifecycle import Lifecycle
from services.common.metrics import Metrics
from services.common.settings import Settings
from services.signaling.connection import BrowserConnection
from services.signaling.session import SHUTDOWN_GRACE, BrowserSession

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
WS_MAX_FRAME = 1024 * 1024
"Bigger than the session's 64 KiB limit, so an oversized message gets a ``too_large`` reply."
WS_HEARTBEAT = 20.0
"Seconds between pings; a browser that vanished is noticed and its call hung up."

# The page talks to nothing but this server. Scripts are not restricted by
# CSP because browser tests evaluate code in the page.
_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": (
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
}


class SignalingServer:
    """Routes and the set of live browser connections."""

    def __init__(
        self,
        settings: Settings,
        bus: Bus,
        *,
        draining: asyncio.Event | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._settings = settings
        self._bus = bus
        self._fleet: FleetMember | None = None
        self._placement: Placement | None = None
        self._draining = draining or asyncio.Event()
        self._metrics = metrics
        self._connections: set[BrowserConnection] = set()
        self._stopping = False
        # Only files shipped with the page are served, whatever the URL says.
        self._static = {p.name: p for p in STATIC_DIR.iterdir() if p.is_file()}

    @property
    def active_calls(self) -> int:
        return sum(1 for c in self._connections if c.in_call)

    def holds(self, call_id: str) -> bool:
        """Whether a live browser session of this process holds the call."""
        return any(c.session.call_id == call_id for c in self._connections)

    def attach(self, fleet: FleetMember) -> None:
        """Place calls with ``fleet``'s leases and keep its call records."""
        self._fleet = fleet
        self._placement = Placement(fleet.leases)

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{file}", self._static_file)
        app.router.add_get("/ws", self._websocket)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/config.json", self._config)
        return app

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html", headers=_PAGE_HEADERS)

    async def _static_file(self, request: web.Request) -> web.StreamResponse:
        path = self._static.get(request.match_info["file"])
        if path is None:
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers=_PAGE_HEADERS)

    async def _healthz(self, request: web.Request) -> web.Response:
        if not self._bus.connected:
            return web.Response(status=503, text="nats disconnected")
        return web.Response(text="ok")

    async def _config(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "demo": self._settings.demo,
                "default_destination": self._settings.default_destination,
            },
            headers={"Cache-Control": "no-cache"},
        )

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if self._stopping or self._draining.is_set():
            raise web.HTTPServiceUnavailable(text="shutting down")
        if not _same_origin(request):
            # Another site's page must not place calls through this bridge.
            raise web.HTTPForbidden(text="cross-origin WebSocket refused")
        ws = web.WebSocketResponse(max_msg_size=WS_MAX_FRAME, heartbeat=WS_HEARTBEAT)
        await ws.prepare(request)
        connection = BrowserConnection(
            BrowserSession(self._settings, placement=self._placement),
            self._bus,
            ws,
            self._connections.discard,
            draining=self._draining,
            metrics=self._metrics,
            fleet=self._fleet,
        )
        self._connections.add(connection)
        log.debug("websocket from %s", request.remote)
        await connection.run()
        return ws

    async def shutdown(self) -> None:
        """Hang up every call, wait briefly for them to end, then drop the rest."""
        self._stopping = True
        connections = list(self._connections)
        if not connections:
            return
        log.info("stopping: ending %d browser session(s)", len(connections))
        for connection in connections:
            connection.shutdown()
        waits = [asyncio.ensure_future(c.finished.wait()) for c in connections]
        _done, pending = await asyncio.wait(waits, timeout=SHUTDOWN_GRACE + 1.0)
        for task in pending:
            task.cancel()
        for connection in list(self._connections):
            await connection.abort()


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if not origin:
        return True  # Not a browser page (tests, tools): nothing to protect against.
    return urlsplit(origin).netloc.lower() == request.host.lower()


async def main(lc: Lifecycle) -> None:
    """Serve the page and WebSocket; drain on SIGTERM, end every call on SIGINT."""
    settings = lc.settings
    bus = await lc.connect_bus()
    server = SignalingServer(settings, bus, draining=lc.draining, metrics=lc.metrics)
    lc.serve_load(lambda: server.active_calls)
    fleet = FleetMember(
        bus,
        "signaling",
        settings,
        load=lambda: Load(server.active_calls, 0, lc.draining.is_set()),
        holds=server.holds,
    )
    server.attach(fleet)
    runner = web.AppRunner(server.make_app(), access_log=None)
    await runner.setup()
    try:
        await fleet.start()
        site = web.TCPSite(runner, settings.http_host, settings.http_port)
        await site.start()
        await bus.announce_ready("signaling")
        lc.set_ready()
        for address in runner.addresses:
            log.info("listening on http://%s:%s", *address[:2])
        await lc.draining.wait()
        await fleet.beat()
        if await lc.wait_idle(lambda: server.active_calls):
            log.info("signaling %s drained: no call left", settings.instance_id)
        await server.shutdown()
    finally:
        await runner.cleanup()
        await fleet.close()
        await bus.close()
