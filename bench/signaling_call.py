"""One call's browser WebSocket to the bridge (docs/protocol.md), timed.

``SignalingCall`` opens ``/ws``, sends the offer, and records when each kind
of message first arrived (``times``, ``time.monotonic``). The answer, the
``connected`` and the end of the call (``ended``, an ``error`` before the
answer, or the socket closing) are futures the caller awaits. Messages it has
no use for (``ringing``, ``stats``, ``hold_changed``…) are only counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import aiohttp

HANGUP_WAIT = 10.0
"How long ``hangup`` waits for ``ended`` (the bridge answers within HANGUP_GRACE, 5 s)."


def ws_url(base: str) -> str:
    """``ws://host:port/ws`` from the bridge's ``http://host:port`` (``https`` → ``wss``)."""
    base = base.rstrip("/")
    if base.startswith("http"):
        base = "ws" + base[4:]
    return base if base.endswith("/ws") else base + "/ws"


class SignalingCall:
    """One call's WebSocket: ``open``, ``offer``, await ``answer`` and ``connected``, ``hangup``."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self._http = http
        self._url = ws_url(url)
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        loop = asyncio.get_running_loop()
        self.answer: asyncio.Future[str] = loop.create_future()
        self.connected: asyncio.Future[None] = loop.create_future()
        self.ended: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.times: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.errors: list[dict[str, Any]] = []

    async def open(self, timeout: float = 10.0) -> None:
        self._ws = await self._http.ws_connect(
            self._url, timeout=aiohttp.ClientWSTimeout(ws_close=timeout), heartbeat=None
        )
        self._reader = asyncio.create_task(self._read())

    async def offer(self, sdp: str, destination: str | None = None) -> None:
        message: dict[str, Any] = {"type": "offer", "sdp": sdp}
        if destination:
            message["destination"] = destination
        self.times["offer"] = time.monotonic()
        await self._send(message)

    async def _send(self, message: dict[str, Any]) -> None:
        assert self._ws is not None
        await self._ws.send_str(json.dumps(message))

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for msg in self._ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self._handle(json.loads(msg.data))
        except (aiohttp.ClientError, ValueError, ConnectionError):
            pass
        finally:
            self._settle(self.ended, {"type": "closed", "cause": "socket_closed"})
            for future in (self.answer, self.connected):
                if not future.done():
                    future.set_exception(ConnectionError("the WebSocket closed"))

    def _handle(self, message: dict[str, Any]) -> None:
        kind = str(message.get("type"))
        self.times.setdefault(kind, time.monotonic())
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if kind == "answer":
            self._settle(self.answer, str(message.get("sdp", "")))
        elif kind == "connected":
            self._settle(self.connected, None)
        elif kind == "ended":
            self._settle(self.ended, message)
            reason = RuntimeError(f"ended: {message.get('cause')}")
            for future in (self.answer, self.connected):
                if not future.done():
                    future.set_exception(reason)
        elif kind == "error":
            self.errors.append(message)
            if not self.answer.done():
                # the call never started: nothing else will come for it
                code = message.get("code")
                self.answer.set_exception(RuntimeError(f"error: {code}"))
                self._settle(self.ended, message)

    @staticmethod
    def _settle(future: asyncio.Future[Any], value: Any) -> None:
        if not future.done():
            future.set_result(value)

    async def hangup(self, wait: float = HANGUP_WAIT) -> dict[str, Any] | None:
        """Send ``hangup`` and wait for ``ended``; None when it did not come in time."""
        if not self.ended.done() and self._ws is not None and not self._ws.closed:
            with contextlib.suppress(ConnectionError, aiohttp.ClientError, RuntimeError):
                await self._send({"type": "hangup"})
        try:
            return await asyncio.wait_for(asyncio.shield(self.ended), wait)
        except TimeoutError:
            return None

    async def close(self) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        for future in (self.answer, self.connected):
            if future.done() and not future.cancelled():
                future.exception()  # retrieved: no "never retrieved" warning
            else:
                future.cancel()
