"""The fleet's bus parts against a real nats-server with JetStream: the call
registry, heartbeats into leases, and survivors racing to claim dead calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import nats
import pytest
from nats.aio.client import Client

from proto import errors, subjects
from proto.events import AnyEvent, HangupRequested
from proto.fleet import CallRecord, Heartbeat
from services.common.bus import Bus
from services.common.fleet import records
from services.common.fleet.heartbeat import HeartbeatPublisher, LeaseListener, Load
from services.common.fleet.leases import LeaseTable, Owner
from services.common.fleet.reaper import Action, Publish, Reaper
from services.common.fleet.reaping import ReaperLoop
from services.common.fleet.registry import CallRegistry
from tests.integration.harness import Process, start_nats

pytestmark = pytest.mark.timeout(60)

WALL = 1_700_000_000.0


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    process: Process
    process, url = start_nats(tmp_path_factory.mktemp("fleet"))
    yield url
    process.stop()


@pytest.fixture
async def clients(nats_url: str) -> AsyncIterator[list[Client]]:
    opened: list[Client] = []
    for _ in range(3):
        opened.append(await nats.connect(nats_url, connect_timeout=2))
    yield opened
    for nc in opened:
        await nc.close()


_bucket_counter = iter(range(1000))


def bucket() -> str:
    """A fresh bucket per test: tests share one nats-server."""
    return f"bridge_calls_t{next(_bucket_counter)}"


def record(call_id: str, *, signaling_id: str = "", media_id: str = "") -> CallRecord:
    return CallRecord(
        call_id=call_id,
        state="setup",
        updated_at=WALL,
        signaling_id=signaling_id,
        media_id=media_id,
    )


async def test_registry_crud_and_compare_and_set(clients: list[Client]) -> None:
    name = bucket()
    registry = await CallRegistry.open(clients[0], bucket=name, ttl=3600)
    again = await CallRegistry.open(clients[1], bucket=name, ttl=60)  # idempotent
    assert await registry.get("c1") is None
    first = await registry.create(record("c1", signaling_id="g1"))
    assert first is not None
    assert await again.create(record("c1", signaling_id="g2")) is None
    entry = await again.get("c1")
    assert entry is not None and entry.record.signaling_id == "g1" and entry.revision == first

    updated = await registry.update("c1", lambda r: records.media_prepared(r, "m1", WALL + 1))
    assert updated is not None and updated.record.media_id == "m1"
    # A writer that read before that update loses its compare-and-set.
    assert await again.replace(record("c1", signaling_id="x"), first) is None
    assert await again.delete("c1", revision=first) is False
    assert await registry.update("missing", lambda r: r) is None

    await registry.put(record("c2", media_id="m1", signaling_id="g2"))
    await registry.put(record("c3", media_id="m2", signaling_id="g1"))
    by_media = await again.list_by_owner("media", "m1")
    assert sorted(e.record.call_id for e in by_media) == ["c1", "c2"]
    by_signaling = await again.list_by_owner("signaling", "g1")
    assert sorted(e.record.call_id for e in by_signaling) == ["c1", "c3"]

    assert await registry.delete("c1", revision=updated.revision) is True
    assert await registry.get("c1") is None
    assert await registry.delete("c2") is True
    assert sorted(e.record.call_id for e in await registry.list_all()) == ["c3"]


async def test_heartbeats_become_leases_and_lapse(clients: list[Client]) -> None:
    loop = asyncio.get_running_loop()
    leases = LeaseTable(now=loop.time(), lease=0.5)
    listener = LeaseListener(clients[0], leases)
    await listener.start()
    publisher = HeartbeatPublisher(
        clients[1], "media", "m1", lambda: Load(3, 10, draining=False), interval=0.1
    )
    publisher.start()
    try:
        async with asyncio.timeout(5):
            while not leases.is_alive("media", "m1", loop.time()):
                await asyncio.sleep(0.05)
        lease = leases.get("media", "m1", loop.time())
        assert lease is not None and (lease.active_calls, lease.max_calls) == (3, 10)
        await publisher.close()
        stopped = loop.time()
        async with asyncio.timeout(5):
            while not leases.expired(loop.time()):
                await asyncio.sleep(0.05)
        assert loop.time() - stopped < 0.5 + 0.2
    finally:
        await publisher.close()
        await listener.close()


def ready_reaper(me: Owner, now: float, alive: tuple[Owner, ...]) -> Reaper:
    """A reaper that has heard itself and ``alive`` for a while; any other instance is dead."""
    leases = LeaseTable(now=now - 10, lease=3.0)
    for at in (now - 4, now - 2, now):
        for service, instance in (me, *alive):
            beat = Heartbeat(service=service, instance_id=instance, active_calls=0, max_calls=9)
            leases.observe(beat, at)
    return Reaper(me, leases, now=now - 10, started_wall=WALL)


async def test_two_survivors_race_and_each_dead_call_is_ended_once(
    clients: list[Client],
) -> None:
    name = bucket()
    writer = await CallRegistry.open(clients[0], bucket=name)
    calls = [f"c{n}" for n in range(30)]
    for call_id in calls:
        await writer.put(record(call_id, signaling_id="g-alive", media_id="m-dead"))
    await writer.put(record("other", media_id="m-alive-elsewhere"))

    performed: dict[str, list[tuple[Owner, Action]]] = {}
    now = 500.0

    def loop_for(me: Owner) -> ReaperLoop:
        reaper = ready_reaper(me, now, (("signaling", "g-alive"), ("media", "m-alive-elsewhere")))

        async def perform(action: Action) -> None:
            performed.setdefault(action_call(action), []).append((me, action))
            await asyncio.sleep(0)  # let the other survivor interleave

        return ReaperLoop(reaper, registries[me], perform, clock=lambda: now, wall=lambda: WALL)

    registries = {
        ("sipagent", "s2"): await CallRegistry.open(clients[1], bucket=name),
        ("media", "m2"): await CallRegistry.open(clients[2], bucket=name),
    }
    first = loop_for(("sipagent", "s2"))
    second = loop_for(("media", "m2"))
    reaped_first, reaped_second = await asyncio.gather(first.step(), second.step())

    assert sorted(reaped_first + reaped_second) == sorted(calls)
    assert sorted(performed) == sorted(calls)
    for call_id, done in performed.items():
        assert len(done) == 1, (call_id, done)
        ((_, action),) = done
        assert action == Publish(
            subjects.call_events(call_id, "media"),
            HangupRequested(call_id=call_id, cause=errors.MEDIA_FAILED),
        )
    remaining = await writer.list_all()
    assert [e.record.call_id for e in remaining] == ["other"]
    # Nothing is left to do on the next round.
    assert await first.step() == [] and await second.step() == []


def action_call(action: Action) -> str:
    return action.event.call_id if isinstance(action, Publish) else action.call_id


async def test_a_dead_media_workers_call_is_hung_up_on_the_bus(clients: list[Client]) -> None:
    """Real heartbeats, real timers: the worker stops beating, a survivor hangs up its call."""
    loop = asyncio.get_running_loop()
    name = bucket()
    lease, interval = 0.6, 0.15
    survivor_nc, dying_nc, watcher_nc = clients
    registry = await CallRegistry.open(survivor_nc, bucket=name)
    await registry.put(record("c-dead", signaling_id="g1", media_id="m-dying"))

    heard: list[AnyEvent] = []

    async def on_event(event: AnyEvent) -> None:
        heard.append(event)

    watcher = Bus(watcher_nc)
    await watcher.subscribe(subjects.call_events("c-dead", "media"), on_event)
    await watcher.flush()

    leases = LeaseTable(now=loop.time(), lease=lease)
    listener = LeaseListener(survivor_nc, leases)
    await listener.start()
    beats = [
        HeartbeatPublisher(survivor_nc, "sipagent", "s2", lambda: Load(0, 10), interval=interval),
        HeartbeatPublisher(dying_nc, "signaling", "g1", lambda: Load(1, 0), interval=interval),
        HeartbeatPublisher(dying_nc, "media", "m-dying", lambda: Load(1, 10), interval=interval),
    ]
    for beat in beats:
        beat.start()
    reaper = Reaper(("sipagent", "s2"), leases, now=loop.time(), started_wall=WALL)
    bus = Bus(survivor_nc)

    async def perform(action: Action) -> None:
        assert isinstance(action, Publish)
        await bus.publish(action.subject, action.event)

    survivor = ReaperLoop(reaper, registry, perform, tick=0.1)
    survivor.start()
    try:
        await asyncio.sleep(lease + 0.3)  # settled; everyone alive
        assert heard == []
        await beats[2].close()  # the media worker dies
        died = loop.time()
        async with asyncio.timeout(10):
            while not heard:
                await asyncio.sleep(0.02)
        took = loop.time() - died
        assert heard == [HangupRequested(call_id="c-dead", cause=errors.MEDIA_FAILED)]
        assert took < lease + 0.5, took
        async with asyncio.timeout(5):
            while await registry.get("c-dead") is not None:
                await asyncio.sleep(0.05)
    finally:
        await survivor.close()
        for beat in beats:
            await beat.close()
        await listener.close()
