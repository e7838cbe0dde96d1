"""The signaling service's HTTP side: the page, its config and the WebSocket.

Each WebSocket gets a ``BrowserSession`` (the protocol and call set-up) driven
by a ``BrowserConnection`` (the I/O). On stop, every call is hung up and given
a short while to end before sockets and the bus close.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from proto import errors
from services.common.access import is_loopback, serving_problem
from services.common.bus import Bus
from services.common.fleet.heartbeat import Load
from services.common.fleet.member import FleetMember
from services.common.fleet.placement import Placement
from services.common.lifecycle import Lifecycle
from services.common.logs import LogBudget
from services.common.metrics import Metrics
from services.common.settings import Settings, SettingsError
from services.signaling import ice_config, messages
from services.signaling.abuse_limits import AbuseLimits, LocalLimits
from services.signaling.audit import AuditLog
from services.signaling.caller import Caller, source_address, token_deadline
from services.signaling.connection import BrowserConnection
from services.signaling.inbound import InboundLink
from services.signaling.limits import Limits
from services.signaling.operator import answer_hangups, calls_page
from services.signaling.session import SHUTDOWN_GRACE, BrowserSession
from services.signaling.switchboard import Switchboard
from services.signaling.tokens import Claims, TokenError, TokenVerifier, load_problem

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
WS_MAX_FRAME = 1024 * 1024
"Bigger than the session's 64 KiB limit, so an oversized message gets a ``too_large`` reply."
WS_HEARTBEAT = 20.0
"Seconds between pings; a browser that vanished is noticed and its call hung up."
CLOSE_UNAUTHORIZED = 4401
"WebSocket close code after ``error`` ``unauthorized`` (HTTP's 401, in the private range)."
REFUSALS_LOGGED_PER_MINUTE = 20
"Refused sockets logged a minute; a flood of them shows in ``bridge_refused_total``."
CLOSE_RATE_LIMITED = 4429
"WebSocket close code after ``error`` ``rate_limited``: too many sockets from one address."

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
        limits: AbuseLimits | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self._settings = settings
        self._access = settings.access
        self._verifier = TokenVerifier(settings.access)
        self._limits = limits or LocalLimits(settings.access, settings.instance_id)
        self._audit = audit or AuditLog()
        self._refusal_log = LogBudget(REFUSALS_LOGGED_PER_MINUTE, 60.0)
        self._bus = bus
        self._fleet: FleetMember | None = None
        self._placement: Placement | None = None
        self._draining = draining or asyncio.Event()
        self._metrics = metrics
        self._connections: set[BrowserConnection] = set()
        self._inbound = InboundLink(Switchboard(settings.instance_id), bus)
        "Calls from the trunk: who listens here, what rings (``switchboard.py``)."
        self._stopping = False
        # Only files shipped with the page are served, whatever the URL says.
        self._static = {p.name: p for p in STATIC_DIR.iterdir() if p.is_file()}

    @property
    def active_calls(self) -> int:
        return sum(1 for c in self._connections if c.in_call)

    def holds(self, call_id: str) -> bool:
        """Whether a live browser session of this process holds the call."""
        return any(c.session.call_id == call_id for c in self._connections)

    def end_by_operator(self, call_id: str) -> bool:
        """``bridge calls hangup``: end the call if a session here holds it."""
        for connection in list(self._connections):
            if connection.session.call_id == call_id:
                return connection.end_by_operator()
        return False

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
        """The page's settings and ICE servers. Where tokens are required, servers
        with a credential go only to a request with a valid token (``ice_config``)."""
        now = time.time()
        identity: str | None = None
        entitled = not self._access.required
        if self._access.required and (token := _token_of(request)):
            try:
                identity = self._verifier.verify(token, now).sub
                entitled = True
            except TokenError:
                pass  # The page still gets its settings and STUN; /ws says why.
        ice = ice_config.ice_servers(self._settings, identity, now, with_credentials=entitled)
        return web.json_response(
            {
                "demo": self._settings.demo,
                "auth": self._access.required,
                "default_destination": self._settings.default_destination,
                **ice,
            },
            headers={"Cache-Control": "no-store"},
        )

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if self._stopping or self._draining.is_set():
            raise web.HTTPServiceUnavailable(text="shutting down")
        if not _origin_allowed(request, self._access.allowed_origins, self._settings.http_host):
            # Another site's page must not place calls through this bridge.
            self._count(errors.UNAUTHORIZED)
            raise web.HTTPForbidden(text="cross-origin WebSocket refused")
        # Every X-Forwarded-For line, in order: a proxy may add its own line
        # after the one the client sent.
        forwarded = ", ".join(request.headers.getall("X-Forwarded-For", [])) or None
        source = source_address(request.remote, forwarded, self._access.trusted_proxies)
        claims: Claims | None = None
        refusal: tuple[str, str, int] | None = None
        if self._access.required:
            try:
                claims = self._verifier.verify(_token_of(request), time.time())
            except TokenError as exc:
                refusal = (errors.UNAUTHORIZED, str(exc), CLOSE_UNAUTHORIZED)
        socket_id = uuid.uuid4().hex
        counted = False
        if refusal is None:
            counted = await self._limits.open_socket(source, socket_id)
            if not counted:
                text = "too many connections from your address"
                refusal = (errors.RATE_LIMITED, text, CLOSE_RATE_LIMITED)
        try:
            return await self._serve(request, source, claims, refusal, socket_id)
        finally:
            if counted:
                await self._limits.close_socket(source, socket_id)

    async def _serve(
        self,
        request: web.Request,
        source: str,
        claims: Claims | None,
        refusal: tuple[str, str, int] | None,
        socket_id: str,
    ) -> web.WebSocketResponse:
        """The socket's life after the checks: refused with a reason, or a session."""
        ws = web.WebSocketResponse(max_msg_size=WS_MAX_FRAME, heartbeat=WS_HEARTBEAT)
        await ws.prepare(request)
        if refusal is not None:
            await self._refuse(ws, source, *refusal)
            return ws
        loop = asyncio.get_running_loop()
        caller = Caller(
            source=source,
            claims=claims,
            token_deadline=None
            if claims is None
            else token_deadline(claims, time.time(), loop.time()),
        )
        connection = BrowserConnection(
            BrowserSession(
                self._settings,
                placement=self._placement,
                caller=caller,
                desk=self._inbound.switchboard,
                socket_id=socket_id,
            ),
            self._bus,
            ws,
            self._connections.discard,
            draining=self._draining,
            metrics=self._metrics,
            fleet=self._fleet,
            limits=self._limits,
            audit=self._audit,
            inbound=self._inbound,
        )
        self._connections.add(connection)
        log.debug("websocket from %s (%s)", source, caller.identity or "no token")
        await connection.run()
        return ws

    async def _refuse(
        self, ws: web.WebSocketResponse, source: str, code: str, text: str, close: int
    ) -> None:
        """Say why in an ``error``, then close: the page can show it (a browser sees no
        HTTP status of a refused upgrade). Nothing reaches NATS."""
        self._count(code)
        if self._refusal_log.allow(time.monotonic()):
            log.info("websocket from %s refused: %s (%s)", source, code, text)
        try:
            await ws.send_str(json.dumps(messages.error(code, text)))
            await ws.close(code=close, message=code.encode())
        except (ConnectionError, RuntimeError) as exc:
            log.debug("refused websocket already gone: %s", exc)

    def _count(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.refused.labels(reason=reason).inc()

    async def shutdown(self) -> None:
        """Hang up every call, wait briefly for them to end, then drop the rest."""
        self._stopping = True
        self._inbound.drain()
        connections = list(self._connections)
        if not connections:
            await self._inbound.close()
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
        await self._inbound.close()

    def drain_inbound(self) -> None:
        """Draining: calls from the trunk arriving from now on ring nobody here."""
        self._inbound.drain()


def _origin_allowed(request: web.Request, allowed: tuple[str, ...], http_host: str) -> bool:
    """A page's Origin: one of ``ALLOWED_ORIGINS`` when set (behind a proxy that
    rewrites Host), else the same host the page was served from.

    A bridge on loopback also wants a loopback ``Host``: a page whose name was
    rebound to 127.0.0.1 (DNS rebinding) sends its own name in both headers.
    """
    origin = request.headers.get("Origin")
    if not origin:
        return True  # Not a browser page (tests, tools): nothing to protect against.
    if allowed:
        return origin.strip().lower().rstrip("/") in allowed
    if is_loopback(http_host) and not is_loopback(_hostname(request.host)):
        return False
    return urlsplit(origin).netloc.lower() == request.host.lower()


def _hostname(host: str) -> str:
    """``host`` of a Host header (``name:port``, ``[::1]:port``) without the port."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _token_of(request: web.Request) -> str:
    """The client token: ``Authorization: Bearer …``, else ``?token=``."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.query.get("token", "").strip()


async def main(lc: Lifecycle) -> None:
    """Serve the page and WebSocket; drain on SIGTERM, end every call on SIGINT."""
    settings = lc.settings
    problem = serving_problem(settings.access, settings.http_host) or load_problem(settings.access)
    if problem:
        raise SettingsError(problem)
    bus = await lc.connect_bus()
    audit = AuditLog(settings.access.audit_log)
    loop = asyncio.get_running_loop()
    fleet_ref: list[FleetMember] = []

    def is_live(instance_id: str) -> bool:
        if not fleet_ref:
            return True
        return fleet_ref[0].leases.dead_since("signaling", instance_id, loop.time()) is None

    limits = await Limits.open(
        bus.client,
        settings.access,
        settings.instance_id,
        is_live,
        replicas=settings.kv_replicas,
    )
    server = SignalingServer(
        settings, bus, draining=lc.draining, metrics=lc.metrics, limits=limits, audit=audit
    )
    lc.serve_load(lambda: server.active_calls)
    fleet = FleetMember(
        bus,
        "signaling",
        settings,
        load=lambda: Load(server.active_calls, 0, lc.draining.is_set()),
        holds=server.holds,
    )
    fleet_ref.append(fleet)
    server.attach(fleet)
    runner = web.AppRunner(server.make_app(), access_log=None)
    await runner.setup()
    try:
        await fleet.start()
        lc.serve_json("calls", calls_page(bus, fleet))
        await answer_hangups(bus, settings.instance_id, server.end_by_operator)
        site = web.TCPSite(runner, settings.http_host, settings.http_port)
        await site.start()
        await bus.announce_ready("signaling")
        lc.set_ready()
        for address in runner.addresses:
            log.info("listening on http://%s:%s", *address[:2])
        await lc.draining.wait()
        server.drain_inbound()
        await fleet.beat()
        if await lc.wait_idle(lambda: server.active_calls):
            log.info("signaling %s drained: no call left", settings.instance_id)
        await server.shutdown()
    finally:
        await runner.cleanup()
        await limits.close()
        audit.close()
        await fleet.close()
        await bus.close()
