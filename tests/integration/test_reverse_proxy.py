"""Page origins, a real reverse proxy in front of signaling, and the demo on loopback.

A small aiohttp reverse proxy runs in a thread of the test process, as an
operator's nginx would: it serves the page and the ``/ws`` WebSocket of one
signaling process, rewrites Host to the upstream's, passes Origin,
Authorization and the query on, and says who the client is in
``X-Forwarded-For`` (198.51.100.7, as if the browser came from there). The
browser stand-in opens the page through the proxy and sends the
``Origin`` a browser would.

Three signaling processes share one stack whose trunk is the built-in demo
echo peer: ``plain`` has no setting at all (the loopback demo), ``proxied``
allows the proxy's origin, trusts it (``TRUSTED_PROXIES=127.0.0.1``) and wants
a token, ``untrusted`` allows the proxy's origin but trusts no proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from tests.integration.client import BridgeClient
from tests.integration.test_access_support import (
    TOKEN_SECRETS,
    AccessStack,
    BusWatch,
    accepted,
    assert_nothing_left,
    fresh,
    hang_up,
    hs256,
    open_socket,
    place_call,
    refusal,
    refused_total,
    start_access_stack,
    until,
)

pytestmark = pytest.mark.timeout(60)

CLIENT_IP = "198.51.100.7"
"The address the proxy says its client has."
EVIL = "http://evil.example"


class ReverseProxy:
    """A reverse proxy on 127.0.0.1 for the signaling on ``upstream_port``.

    ``separate_header``: the client's own ``X-Forwarded-For`` is passed on and the
    proxy adds its line as another header (HAProxy's ``option forwardfor``); else
    the proxy appends the address to the client's list in one header (nginx's
    ``$proxy_add_x_forwarded_for``)."""

    def __init__(self, upstream_port: int = 0, *, separate_header: bool = False) -> None:
        self.upstream_port = upstream_port
        self.separate_header = separate_header
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None

    @property
    def origin(self) -> str:
        """What a page served by this proxy sends as its Origin."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.origin

    def start(self) -> ReverseProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _serve(self) -> None:
        self._http = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_get("/ws", self._websocket)
        app.router.add_get("/{path:.*}", self._page)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()

    def _headers(self, request: web.Request) -> CIMultiDict[str]:
        """What goes upstream: no Host (the upstream's is set), the client said who it is."""
        headers: CIMultiDict[str] = CIMultiDict()
        for name in ("Origin", "Authorization", "User-Agent"):
            if name in request.headers:
                headers[name] = request.headers[name]
        given = request.headers.getall("X-Forwarded-For", [])
        if self.separate_header:
            for value in given:
                headers.add("X-Forwarded-For", value)
            headers.add("X-Forwarded-For", CLIENT_IP)
        else:
            headers["X-Forwarded-For"] = ", ".join([*given, CLIENT_IP])
        return headers

    async def _page(self, request: web.Request) -> web.StreamResponse:
        assert self._http is not None
        url = f"http://127.0.0.1:{self.upstream_port}{request.path_qs}"
        async with self._http.get(url, headers=self._headers(request)) as upstream:
            body = await upstream.read()
            kind = upstream.headers.get("Content-Type", "application/octet-stream")
            return web.Response(body=body, status=upstream.status, headers={"Content-Type": kind})

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        assert self._http is not None
        url = f"ws://127.0.0.1:{self.upstream_port}/ws"
        if request.query_string:
            url += f"?{request.query_string}"
        try:
            upstream = await self._http.ws_connect(url, headers=self._headers(request))
        except aiohttp.WSServerHandshakeError as exc:
            # The upstream refused the upgrade (403, 503): the browser gets the same.
            return web.Response(status=exc.status, text=exc.message)
        client = web.WebSocketResponse()
        await client.prepare(request)

        async def to_upstream() -> None:
            async for msg in client:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    await upstream.send_str(msg.data)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    await upstream.send_bytes(msg.data)
            await upstream.close()

        pump = asyncio.ensure_future(to_upstream())
        with contextlib.suppress(ConnectionError, RuntimeError):
            try:
                async for msg in upstream:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        await client.send_str(msg.data)
                    elif msg.type == aiohttp.WSMsgType.BINARY:
                        await client.send_bytes(msg.data)
            finally:
                # No read of the browser's socket may be pending while it is closed,
                # or aiohttp drops the connection before the browser's close reply.
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump
            # The upstream's close code (4401, 4429) reaches the browser.
            await client.close(code=upstream.close_code or 1000)
        return client


@dataclass
class Proxies:
    plain: ReverseProxy
    proxied: ReverseProxy
    proxied_haproxy: ReverseProxy
    untrusted: ReverseProxy


@pytest.fixture(scope="module")
def proxies() -> Iterator[Proxies]:
    # The proxies first: signaling's settings name their origins. Each is pointed at
    # its signaling once that has a port.
    started = Proxies(
        ReverseProxy().start(),
        ReverseProxy().start(),
        ReverseProxy(separate_header=True).start(),
        ReverseProxy().start(),
    )
    try:
        yield started
    finally:
        for proxy in (started.plain, started.proxied, started.proxied_haproxy, started.untrusted):
            proxy.stop()


NO_SETTINGS: dict[str, str | None] = {
    # Not even what the harness gives every test: the loopback demo as shipped.
    "CALL_RATE": None,
    "SOURCE_CALL_RATE": None,
    "WS_CONNECTIONS_PER_SOURCE": None,
    "AUDIT_LOG": None,
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, proxies: Proxies) -> Iterator[AccessStack]:
    signalings: dict[str, dict[str, str | None]] = {
        "plain": NO_SETTINGS,
        "proxied": {
            "AUTH": "required",
            "CLIENT_TOKEN_SECRET": TOKEN_SECRETS,
            "ALLOWED_ORIGINS": f"{proxies.proxied.origin},{proxies.proxied_haproxy.origin}",
            "TRUSTED_PROXIES": "127.0.0.1",
        },
        "untrusted": {"ALLOWED_ORIGINS": proxies.untrusted.origin},
    }
    for stack in start_access_stack(tmp_path_factory.mktemp("proxy"), signalings, trunk="demo"):
        proxies.plain.upstream_port = stack.signalings["plain"].port
        proxies.proxied.upstream_port = stack.signalings["proxied"].port
        proxies.proxied_haproxy.upstream_port = stack.signalings["proxied"].port
        proxies.untrusted.upstream_port = stack.signalings["untrusted"].port
        yield stack


@pytest.fixture
async def bus(stack: AccessStack) -> AsyncIterator[BusWatch]:
    async with BusWatch(stack.nats_url) as watch:
        yield watch


async def upgrade_status(base_url: str, **headers: str) -> int:
    """The HTTP status of a refused WebSocket upgrade (101 when it was accepted)."""
    client = BridgeClient(base_url)
    try:
        await client.connect(headers={k.replace("_", "-"): v for k, v in headers.items()})
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status
    await client.close()
    return 101


async def get_page(base_url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(base_url + "/") as response:
        return response.status, await response.text()


async def test_the_loopback_demo_with_no_settings_needs_no_token(stack: AccessStack) -> None:
    plain = stack.signalings["plain"]
    async with aiohttp.ClientSession() as http, http.get(plain.base_url + "/config.json") as r:
        config = await r.json()
    assert config["auth"] is False and config["demo"] is True, config
    # A browser on the page it was served: Origin is the page's own host.
    client = await open_socket(plain.base_url, headers={"Origin": plain.base_url})
    try:
        await place_call(client)
        await hang_up(client)
    finally:
        await client.close()


async def test_without_allowed_origins_a_proxied_page_is_refused_403(
    stack: AccessStack, proxies: Proxies, bus: BusWatch
) -> None:
    plain = stack.signalings["plain"]
    status, page = await get_page(proxies.plain.base_url)
    assert status == 200 and "<html" in page.lower()
    before = await refused_total(plain, "unauthorized")
    invites = stack.invites()
    # The proxy rewrote Host to signaling's: the page's Origin no longer matches it.
    assert await upgrade_status(proxies.plain.base_url, Origin=proxies.plain.origin) == 403
    # Another site's page, straight at signaling, or through the proxy.
    assert await upgrade_status(plain.base_url, Origin=EVIL) == 403
    assert await upgrade_status(plain.base_url, Origin="null") == 403
    assert await upgrade_status(proxies.plain.base_url, Origin=EVIL) == 403
    assert await refused_total(plain, "unauthorized") - before == 4
    await assert_nothing_left(stack, bus, plain, invites)


async def test_a_rebound_page_cannot_use_the_loopback_bridge(stack: AccessStack) -> None:
    # evil.example's page, its name rebound to 127.0.0.1: the browser sends Host and
    # Origin of evil.example, and reaches the bridge on the loopback address.
    plain = stack.signalings["plain"]
    host = f"evil.example:{plain.port}"
    status = await upgrade_status(plain.base_url, Host=host, Origin=f"http://{host}")
    assert status == 403


async def test_an_allowed_origin_through_a_trusted_proxy_places_a_call(
    stack: AccessStack, proxies: Proxies, bus: BusWatch
) -> None:
    proxied = stack.signalings["proxied"]
    proxy = proxies.proxied
    status, page = await get_page(proxy.base_url)
    assert status == 200 and "<html" in page.lower()
    sub = fresh("behind-proxy")
    origin = {"Origin": proxy.origin}
    # A client that says it is somewhere else: the proxy's word wins.
    spoofing = dict(origin, **{"X-Forwarded-For": "203.0.113.66"})
    client = await open_socket(proxy.base_url, hs256(sub), bearer=True, headers=spoofing)
    try:
        await place_call(client)
        await hang_up(client)
    finally:
        await client.close()
    await until(lambda: proxied.audit_of(sub), 5, "the audit line")
    (line,) = proxied.audit_of(sub)
    assert line["source"] == CLIENT_IP, line
    assert (line["outcome"], line["cause"]) == ("answered", "normal"), line
    # Refusals pass through the proxy as they are: 403 and close codes.
    invites, work = stack.invites(), len(bus.work(proxied))
    assert await upgrade_status(proxy.base_url, Origin=EVIL) == 403
    no_token = await open_socket(proxy.base_url, headers=origin)
    try:
        assert await refusal(no_token) == ("unauthorized", 4401)
    finally:
        await no_token.close()
    await assert_nothing_left(stack, bus, proxied, invites, work)


async def test_a_forwarded_for_header_line_of_the_client_is_not_believed(
    stack: AccessStack, proxies: Proxies
) -> None:
    proxied = stack.signalings["proxied"]
    proxy = proxies.proxied_haproxy
    sub = fresh("haproxy")
    headers = {"Origin": proxy.origin, "X-Forwarded-For": "203.0.113.66"}
    client = await open_socket(proxy.base_url, hs256(sub), bearer=True, headers=headers)
    try:
        await place_call(client)
        await hang_up(client)
    finally:
        await client.close()
    await until(lambda: proxied.audit_of(sub), 5, "the audit line")
    (line,) = proxied.audit_of(sub)
    assert line["source"] == CLIENT_IP, line


async def test_without_trusted_proxies_forwarded_for_is_ignored(
    stack: AccessStack, proxies: Proxies
) -> None:
    untrusted = stack.signalings["untrusted"]
    proxy = proxies.untrusted
    assert await upgrade_status(proxy.base_url, Origin=EVIL) == 403
    client = await open_socket(proxy.base_url, headers={"Origin": proxy.origin})
    try:
        await accepted(client)
        await place_call(client)
        await hang_up(client)
    finally:
        await client.close()
    await until(lambda: untrusted.audit(), 5, "the audit line")
    lines: list[dict[str, Any]] = untrusted.audit()
    assert [line["source"] for line in lines] == ["127.0.0.1"], lines
