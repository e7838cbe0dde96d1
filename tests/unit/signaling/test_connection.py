"""BrowserConnection with an in-memory bus and WebSocket: actions reach the right place."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from aiohttp import WSMessage, WSMsgType, web

from proto import subjects
from proto.events import AnyEvent, CallEnded, CallRequested, MediaPrepared
from services.common.bus import Bus, Handler
from services.common.settings import Settings
from services.signaling.connection import BrowserConnection
from services.signaling.session import BrowserSession
from services.signaling.states import State

pytestmark = pytest.mark.timeout(5)

OFFER = json.dumps({"type": "offer", "sdp": "v=0\r\n", "destination": "support"})


class FakeSubscription:
    def __init__(self, bus: FakeBus, subject: str) -> None:
        self._bus = bus
        self._subject = subject

    async def unsubscribe(self) -> None:
        self._bus.handlers.pop(self._subject, None)


class FakeBus:
    def __init__(self) -> None:
        self.published: list[tuple[str, AnyEvent]] = []
        self.handlers: dict[str, Handler] = {}

    async def publish(self, subject: str, event: AnyEvent) -> None:
        self.published.append((subject, event))

    async def subscribe(self, subject: str, handler: Handler, queue: str = "") -> FakeSubscription:
        self.handlers[subject] = handler
        return FakeSubscription(self, subject)

    async def deliver(self, subject: str, event: AnyEvent) -> None:
        await self.handlers[subject](event)


class FakeSocket:
    def __init__(self) -> None:
        self.incoming: asyncio.Queue[WSMessage | None] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.closed = False

    def feed(self, text: str) -> None:
        self.incoming.put_nowait(WSMessage(WSMsgType.TEXT, text, None))

    def __aiter__(self) -> AsyncIterator[WSMessage]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[WSMessage]:
        while (message := await self.incoming.get()) is not None:
            yield message

    async def send_str(self, data: str) -> None:
        self.sent.append(json.loads(data))

    async def close(self, code: int = 1000, message: bytes = b"") -> None:
        self.closed = True
        self.incoming.put_nowait(None)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def start(
    settings: Settings,
) -> tuple[BrowserConnection, FakeBus, FakeSocket, asyncio.Task[None]]:
    bus, ws = FakeBus(), FakeSocket()
    finished: list[BrowserConnection] = []
    connection = BrowserConnection(
        BrowserSession(settings), cast(Bus, bus), cast(web.WebSocketResponse, ws), finished.append
    )
    task = asyncio.create_task(connection.run())
    return connection, bus, ws, task


async def test_call_flow_through_the_adapter() -> None:
    connection, bus, ws, task = await start(Settings(instance_id="sig"))
    ws.feed(OFFER)
    await settle()
    ((subject, requested),) = bus.published
    assert subject == subjects.media_work()
    assert isinstance(requested, CallRequested)
    call_id = requested.call_id
    media = subjects.call_events(call_id, "media")
    sipagent = subjects.call_events(call_id, "sipagent")
    assert set(bus.handlers) == {media, sipagent}

    await bus.deliver(
        media,
        MediaPrepared(call_id=call_id, media_id="m", answer_sdp="v=0 a", trunk_offer_sdp="v=0 t"),
    )
    await settle()
    assert ws.sent == [{"type": "answer", "sdp": "v=0 a"}]
    assert bus.published[-1][0] == subjects.sipagent_work()

    # The handler of the subject being unsubscribed must not cut the actions short.
    await bus.deliver(sipagent, CallEnded(call_id=call_id, cause="rejected", status=404))
    await settle()
    assert ws.sent[-1] == {"type": "ended", "status": 404, "reason": "", "cause": "rejected"}
    assert bus.handlers == {}
    assert connection.session.state == State.IDLE

    await ws.close()
    await task
    await settle()
    assert connection.finished.is_set()


async def test_setup_timer_fires_on_the_loop() -> None:
    _connection, bus, ws, task = await start(Settings(instance_id="sig", setup_timeout=0.05))
    ws.feed(OFFER)
    await asyncio.sleep(0.2)
    assert [m["type"] for m in ws.sent] == ["error", "ended"]
    assert ws.sent[0]["code"] == "no_media_worker"
    assert isinstance(bus.published[-1][1], CallEnded)
    await ws.close()
    await task


async def test_shutdown_hangs_up_and_closes() -> None:
    connection, bus, ws, task = await start(Settings(instance_id="sig"))
    ws.feed(OFFER)
    await settle()
    connection.shutdown()
    await settle()
    call_id = bus.published[0][1].call_id
    await bus.deliver(
        subjects.call_events(call_id, "sipagent"), CallEnded(call_id=call_id, cause="cancelled")
    )
    await task
    await settle()
    assert ws.closed
    assert ws.sent[-1]["type"] == "ended"
    assert connection.finished.is_set()
