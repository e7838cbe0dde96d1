import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from proto import errors, subjects
from proto.events import (
    AnyEvent,
    CallAnswered,
    CallDeclined,
    CallEnded,
    CallRequested,
    HangupRequested,
    IceCandidateReceived,
    MediaFailed,
    MediaPrepared,
    ProgressReceived,
)
from services.common.settings import Settings
from services.media import call as call_module
from services.media.app import MediaWorker, advertised_address
from services.media.ports import PortAllocator
from services.media.sdp import build_offer, parse_answer

from .test_ports import free_range

Handler = Callable[[AnyEvent], Awaitable[None]]


class FakeSubscription:
    def __init__(self, bus: "FakeBus", subject: str, handler: Handler) -> None:
        self._bus, self.subject, self.handler = bus, subject, handler

    async def unsubscribe(self) -> None:
        self._bus.subscriptions.remove(self)


class FakeBus:
    """In-memory stand-in for ``services.common.bus.Bus``."""

    def __init__(self) -> None:
        self.subscriptions: list[FakeSubscription] = []
        self.published: list[tuple[str, AnyEvent]] = []

    async def subscribe(self, subject: str, handler: Handler, queue: str = "") -> FakeSubscription:
        subscription = FakeSubscription(self, subject, handler)
        self.subscriptions.append(subscription)
        return subscription

    async def publish(self, subject: str, event: AnyEvent) -> None:
        self.published.append((subject, event))

    async def deliver(self, subject: str, event: AnyEvent) -> None:
        for subscription in list(self.subscriptions):
            if subscription.subject == subject:
                await subscription.handler(event)

    def subjects(self) -> set[str]:
        return {s.subject for s in self.subscriptions}

    async def next_event(self, kind: type[Any], timeout: float = 10.0) -> Any:
        async with asyncio.timeout(timeout):
            while True:
                for _, event in self.published:
                    if isinstance(event, kind):
                        return event
                await asyncio.sleep(0.01)


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


@pytest.fixture
async def browser_offer() -> Any:
    pcs: list[RTCPeerConnection] = []

    async def make() -> str:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pcs.append(pc)
        pc.addTransceiver("audio")
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)

    yield make
    for pc in pcs:
        await pc.close()


def make_worker(**overrides: Any) -> tuple[MediaWorker, FakeBus, PortAllocator]:
    low, high = free_range(4)
    values: dict[str, Any] = {
        "rtp_bind_host": "127.0.0.1",
        "rtp_port_min": low,
        "rtp_port_max": high,
        "instance_id": "media-test",
    }
    values.update(overrides)
    settings = Settings(**values)
    bus = FakeBus()
    ports = PortAllocator(low, high, host="127.0.0.1")
    return MediaWorker(settings, bus, ports, "127.0.0.1"), bus, ports  # type: ignore[arg-type]


def request(call_id: str, offer: str) -> CallRequested:
    return CallRequested(call_id=call_id, offer_sdp=offer, destination="100", signaling_id="sig")


async def test_prepare_publishes_answer_and_trunk_offer(browser_offer: Any) -> None:
    worker, bus, ports = make_worker()
    await worker.on_work(request("c1", await browser_offer()))
    prepared = await bus.next_event(MediaPrepared)
    subject = next(s for s, e in bus.published if e is prepared)
    assert subject == subjects.call_events("c1", "media")
    assert prepared.media_id == "media-test"
    assert "a=candidate:" in prepared.answer_sdp
    offer = parse_answer(prepared.trunk_offer_sdp)
    assert offer.address == "127.0.0.1" and offer.port % 2 == 0
    assert ports.in_use == 1
    assert bus.subjects() == {
        subjects.call_events("c1", "signaling"),
        subjects.call_events("c1", "sipagent"),
    }
    # A trickled candidate (even garbage) is harmless.
    await bus.deliver(
        subjects.call_events("c1", "signaling"),
        IceCandidateReceived(call_id="c1", candidate="candidate:bad", sdp_mid="0"),
    )

    # Early media, then the answer, then the end.
    trunk = build_offer("127.0.0.1", 4000, 1)
    sipagent = subjects.call_events("c1", "sipagent")
    await bus.deliver(sipagent, ProgressReceived(call_id="c1", status=183, early_sdp=trunk))
    await bus.deliver(sipagent, CallAnswered(call_id="c1", answer_sdp=trunk))
    assert not any(isinstance(e, HangupRequested) for _, e in bus.published)
    await bus.deliver(sipagent, CallEnded(call_id="c1", cause=errors.NORMAL))
    await until(lambda: worker.active_calls == 0)
    assert ports.in_use == 0
    assert bus.subscriptions == []


async def test_bad_browser_offer_gives_bad_sdp() -> None:
    worker, bus, ports = make_worker()
    await worker.on_work(request("c2", "v=0\r\nthis is not an offer"))
    failed = await bus.next_event(MediaFailed)
    assert failed.code == errors.BAD_SDP
    await until(lambda: worker.active_calls == 0)
    assert ports.in_use == 0
    assert bus.subscriptions == []


async def test_capacity(browser_offer: Any) -> None:
    worker, bus, _ = make_worker(max_calls=1)
    await worker.on_work(request("c3", await browser_offer()))
    await worker.on_work(request("c4", await browser_offer()))
    declined = await bus.next_event(CallDeclined)
    assert declined.call_id == "c4" and declined.code == errors.AT_CAPACITY
    assert declined.media_id == "media-test"
    await worker.close()


async def test_draining_worker_declines(browser_offer: Any) -> None:
    worker, bus, _ = make_worker()
    worker.draining = True
    await worker.on_work(request("c5", await browser_offer()))
    declined = await bus.next_event(CallDeclined)
    assert declined.call_id == "c5" and declined.code == errors.DRAINING
    assert worker.active_calls == 0 and worker.load().draining
    await worker.close()


async def test_bad_trunk_answer_requests_hangup(browser_offer: Any) -> None:
    worker, bus, _ = make_worker()
    await worker.on_work(request("c5", await browser_offer()))
    await bus.next_event(MediaPrepared)
    sipagent = subjects.call_events("c5", "sipagent")
    await bus.deliver(sipagent, CallAnswered(call_id="c5", answer_sdp="v=0\r\nm=audio 0 RTP/AVP 0"))
    hangup = await bus.next_event(HangupRequested)
    assert hangup.cause == errors.MEDIA_FAILED
    await worker.close()


async def test_release_happens_once(browser_offer: Any) -> None:
    worker, bus, ports = make_worker()
    await worker.on_work(request("c6", await browser_offer()))
    await bus.next_event(MediaPrepared)
    signaling = subjects.call_events("c6", "signaling")
    handlers = [s.handler for s in bus.subscriptions]
    await bus.deliver(signaling, HangupRequested(call_id="c6", cause=errors.CANCELLED))
    await bus.deliver(signaling, CallEnded(call_id="c6", cause=errors.CANCELLED))
    for handler in handlers:  # late events on handlers already unsubscribed
        await handler(CallEnded(call_id="c6", cause=errors.CANCELLED))
    await until(lambda: worker.active_calls == 0)
    assert ports.in_use == 0


async def test_call_ended_during_setup(browser_offer: Any) -> None:
    worker, bus, ports = make_worker()
    offer = await browser_offer()
    await worker.on_work(request("c7", offer))
    await until(lambda: bool(bus.subscriptions))
    await bus.deliver(
        subjects.call_events("c7", "signaling"), CallEnded(call_id="c7", cause=errors.SETUP_FAILED)
    )
    await until(lambda: worker.active_calls == 0)
    assert ports.in_use == 0


async def test_watchdog_releases_a_call_never_answered(
    browser_offer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(call_module, "WATCHDOG_MARGIN", 0.0)
    worker, bus, ports = make_worker(invite_timeout=0.1, setup_timeout=0.1)
    await worker.on_work(request("c8", await browser_offer()))
    await bus.next_event(MediaPrepared)
    await until(lambda: worker.active_calls == 0, timeout=3)
    assert ports.in_use == 0


async def test_close_ends_every_call(browser_offer: Any) -> None:
    worker, bus, ports = make_worker()
    await worker.on_work(request("c9", await browser_offer()))
    await bus.next_event(MediaPrepared)
    await worker.close()
    assert worker.active_calls == 0 and ports.in_use == 0
    hangup = await bus.next_event(HangupRequested)
    assert hangup.call_id == "c9"


async def test_advertised_address() -> None:
    assert await advertised_address(Settings(public_ip="203.0.113.1")) == "203.0.113.1"
    assert await advertised_address(Settings(rtp_bind_host="10.1.2.3")) == "10.1.2.3"
    loopback = Settings(rtp_bind_host="0.0.0.0", sip_trunk_host="127.0.0.1")
    assert await advertised_address(loopback) == "127.0.0.1"
