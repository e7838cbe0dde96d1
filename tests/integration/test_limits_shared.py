"""Abuse limits shared by signaling replicas through JetStream KV, on a real nats-server.

Each test plays two replicas (two ``Limits``, two NATS connections) against
one bucket; identities and addresses are fresh per test so tests sharing the
server do not see each other's entries.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace

import nats
import pytest
from nats.aio.client import Client

from proto import errors
from services.common.access import Access
from services.common.rates import Rate
from services.signaling import limit_state
from services.signaling import limits as limits_module
from services.signaling.abuse_limits import calls_key, sockets_key
from services.signaling.limits import BUCKET, Limits, open_bucket
from tests.integration.harness import Process, start_nats

pytestmark = pytest.mark.timeout(30)

NO_RATES = Access(call_rate=None, source_call_rate=None)


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    process: Process
    process, url = start_nats(tmp_path_factory.mktemp("limits"))
    yield url
    process.stop()


@pytest.fixture
async def clients(nats_url: str) -> AsyncIterator[list[Client]]:
    opened = [await nats.connect(nats_url, connect_timeout=2) for _ in range(2)]
    yield opened
    for nc in opened:
        if not nc.is_closed:
            await nc.close()


def fresh(what: str) -> str:
    return f"{what}-{uuid.uuid4().hex[:8]}"


def everyone_live(_instance_id: str) -> bool:
    return True


class Replicas:
    """Two replicas ``a`` and ``b`` with the same settings, and what they refused."""

    def __init__(self, a: Limits, b: Limits, refused: list[str]) -> None:
        self.a = a
        self.b = b
        self.refused = refused


@pytest.fixture
async def replicas(
    clients: list[Client],
) -> AsyncIterator[Callable[..., Awaitable[Replicas]]]:
    opened: list[Limits] = []

    async def make(access: Access, is_live_b: Callable[[str], bool] = everyone_live) -> Replicas:
        refused: list[str] = []
        a = await Limits.open(clients[0], access, "sig-a", everyone_live, on_refused=refused.append)
        b = await Limits.open(clients[1], access, "sig-b", is_live_b, on_refused=refused.append)
        opened.extend((a, b))
        assert a.shared and b.shared
        return Replicas(a, b, refused)

    yield make
    for limits in opened:
        await limits.close()


async def test_calls_per_identity_hold_across_replicas(
    replicas: Callable[..., Awaitable[Replicas]], clients: list[Client]
) -> None:
    r: Replicas = await replicas(replace(NO_RATES, max_calls_per_user=2))
    alice = fresh("alice")
    assert await r.a.admit_call(alice, "10.0.0.1", "c1") is None
    assert await r.a.admit_call(alice, "10.0.0.1", "c2") is None
    assert await r.b.admit_call(alice, "10.0.0.2", "c3") == errors.TOO_MANY_CALLS
    assert r.refused == [errors.TOO_MANY_CALLS]
    await r.a.release_call(alice, "c1")
    assert await r.b.admit_call(alice, "10.0.0.2", "c3") is None
    # A token's max_calls lowers the limit for that admission.
    bob = fresh("bob")
    assert await r.b.admit_call(bob, "10.0.0.2", "c4", max_calls=1) is None
    assert await r.a.admit_call(bob, "10.0.0.2", "c5", max_calls=1) == errors.TOO_MANY_CALLS

    # The identity is not in the key, only its digest; releasing the last slot deletes it.
    kv = await open_bucket(clients[0])
    keys = await kv.keys()
    assert calls_key(alice) in keys and not any(alice in key for key in keys)
    await r.a.release_call(alice, "c2")
    await r.b.release_call(alice, "c3")
    assert calls_key(alice) not in await kv.keys()
    # A key that was deleted is created again.
    assert await r.a.admit_call(alice, "10.0.0.1", "c6") is None


async def test_call_rate_holds_across_replicas(
    replicas: Callable[..., Awaitable[Replicas]],
) -> None:
    r: Replicas = await replicas(replace(NO_RATES, call_rate=Rate(3, 60.0)))
    alice = fresh("alice")
    for n, limits in enumerate((r.a, r.b, r.a)):
        assert await limits.admit_call(alice, fresh("src"), f"c{n}") is None
        await limits.release_call(alice, f"c{n}")
    assert await r.b.admit_call(alice, fresh("src"), "c3") == errors.RATE_LIMITED
    assert await r.b.admit_call(fresh("bob"), fresh("src"), "c4") is None
    assert r.refused == [errors.RATE_LIMITED]


async def test_source_rate_holds_across_replicas_without_identity(
    replicas: Callable[..., Awaitable[Replicas]],
) -> None:
    r: Replicas = await replicas(replace(NO_RATES, source_call_rate=Rate(2, 60.0)))
    source = fresh("10.0.0")
    assert await r.a.admit_call(None, source, "c1") is None
    assert await r.b.admit_call(None, source, "c2") is None
    assert await r.a.admit_call(fresh("alice"), source, "c3") == errors.RATE_LIMITED
    assert await r.b.admit_call(None, fresh("10.0.1"), "c4") is None


async def test_sockets_per_source_hold_across_replicas(
    replicas: Callable[..., Awaitable[Replicas]], clients: list[Client]
) -> None:
    r: Replicas = await replicas(replace(NO_RATES, ws_per_source=2))
    source = fresh("10.0.0")
    assert await r.a.open_socket(source, "w1")
    assert await r.b.open_socket(source, "w2")
    assert not await r.a.open_socket(source, "w3")
    assert r.refused == [errors.RATE_LIMITED]
    await r.b.close_socket(source, "w2")
    assert await r.a.open_socket(source, "w3")
    kv = await open_bucket(clients[0])
    entry = await kv.get(sockets_key(source))
    table = limit_state.decode_table(entry.value)
    assert sorted((s.id, s.holder) for s in table.slots) == [("w1", "sig-a"), ("w3", "sig-a")]


async def test_slots_of_a_replica_no_longer_live_are_pruned(
    replicas: Callable[..., Awaitable[Replicas]],
) -> None:
    live = {"sig-a"}
    r: Replicas = await replicas(
        replace(NO_RATES, max_calls_per_user=2, ws_per_source=1), live.__contains__
    )
    alice, source = fresh("alice"), fresh("10.0.0")
    assert await r.a.admit_call(alice, source, "c1") is None
    assert await r.a.admit_call(alice, source, "c2") is None
    assert await r.a.open_socket(source, "w1")
    assert await r.b.admit_call(alice, source, "c3") == errors.TOO_MANY_CALLS
    assert not await r.b.open_socket(source, "w2")
    live.clear()  # sig-a died without releasing anything; sig-b is live to itself
    assert await r.b.admit_call(alice, source, "c3") is None
    assert await r.b.admit_call(alice, source, "c4") is None
    assert await r.b.admit_call(alice, source, "c5") == errors.TOO_MANY_CALLS
    assert await r.b.open_socket(source, "w2")


async def test_concurrent_admits_from_both_replicas_never_exceed_the_limits(
    replicas: Callable[..., Awaitable[Replicas]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="services.signaling.limits")
    access = replace(NO_RATES, max_calls_per_user=3, source_call_rate=Rate(100, 3600.0))
    r: Replicas = await replicas(access)
    alice, source = fresh("alice"), fresh("10.0.0")
    results = await asyncio.gather(
        *((r.a if n % 2 else r.b).admit_call(alice, source, f"c{n}") for n in range(10))
    )
    assert results.count(None) == 3
    assert results.count(errors.TOO_MANY_CALLS) == 7
    # A rate shared the same way: exactly its burst passes.
    r = await replicas(replace(NO_RATES, call_rate=Rate(4, 3600.0), max_calls_per_user=100))
    bob = fresh("bob")
    results = await asyncio.gather(
        *((r.a if n % 2 else r.b).admit_call(bob, source, f"d{n}") for n in range(10))
    )
    assert results.count(None) == 4
    assert results.count(errors.RATE_LIMITED) == 6
    assert r.a.shared and r.b.shared
    assert not caplog.records  # every operation went through the bucket


async def test_close_releases_the_slots_still_held(
    replicas: Callable[..., Awaitable[Replicas]],
) -> None:
    r: Replicas = await replicas(replace(NO_RATES, max_calls_per_user=1))
    alice = fresh("alice")
    assert await r.a.admit_call(alice, "s", "c1") is None
    assert await r.b.admit_call(alice, "s", "c2") == errors.TOO_MANY_CALLS
    await r.a.close()
    assert await r.b.admit_call(alice, "s", "c2") is None


async def test_without_the_bucket_limits_hold_in_memory_and_warn_once(
    clients: list[Client], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="services.signaling.limits")
    access = replace(NO_RATES, max_calls_per_user=1, call_rate=Rate(3, 60.0))
    limits = await Limits.open(clients[0], access, "sig-a", everyone_live)
    other = await Limits.open(clients[1], access, "sig-b", everyone_live)
    alice = fresh("alice")
    assert await other.admit_call(alice, "s", "c0") is None  # held in the bucket
    await clients[0].close()  # this replica loses NATS
    assert await limits.admit_call(alice, "s", "c1") is None  # in memory: c0 is not seen
    assert not limits.shared
    assert await limits.admit_call(alice, "s", "c2") == errors.TOO_MANY_CALLS
    await limits.release_call(alice, "c1")
    assert await limits.admit_call(alice, "s", "c2") is None
    assert await limits.admit_call(alice, "s", "c3") == errors.RATE_LIMITED  # 3/min locally
    assert await limits.open_socket("s", "w1")
    warnings = [rec for rec in caplog.records if rec.levelno == logging.WARNING]
    assert len(warnings) == 1, [rec.getMessage() for rec in warnings]
    assert alice not in warnings[0].getMessage()
    await limits.close()
    await other.close()


async def test_open_without_nats_works_in_memory(nats_url: str) -> None:
    nc = await nats.connect(nats_url, connect_timeout=2)
    await nc.close()
    limits = await Limits.open(nc, replace(NO_RATES, max_calls_per_user=1), "sig-a", everyone_live)
    assert not limits.shared
    assert await limits.admit_call("alice", "s", "c1") is None
    assert await limits.admit_call("alice", "s", "c2") == errors.TOO_MANY_CALLS
    await limits.close()  # stops the background reopening


async def test_the_bucket(clients: list[Client]) -> None:
    kv = await open_bucket(clients[0])
    status = await kv.status()
    assert status.bucket == BUCKET == "bridge-limits"
    assert status.history == 1
    assert status.ttl is not None and status.ttl >= 12 * 3600


async def test_a_release_the_bucket_missed_is_done_once_it_works_again(
    replicas: Callable[..., Awaitable[Replicas]],
    nats_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="services.signaling.limits")
    monkeypatch.setattr(limits_module, "BACKOFF", 0.0)
    r: Replicas = await replicas(replace(NO_RATES, max_calls_per_user=1))
    alice = fresh("alice")
    assert await r.a.admit_call(alice, "s", "c1") is None
    # Replica a's bucket breaks (its connection to it is gone) while the call ends.
    lost = await nats.connect(nats_url, connect_timeout=2)
    working, r.a._kv = r.a._kv, await open_bucket(lost)
    await lost.close()
    await r.a.release_call(alice, "c1")
    assert await r.b.admit_call(alice, "s", "c2") == errors.TOO_MANY_CALLS  # still held there
    # A call admitted meanwhile is held in memory and released there.
    assert await r.a.admit_call(alice, "s", "c3") is None
    await r.a.release_call(alice, "c3")
    assert r.a.local.entry_count == 0
    # Back: the next operation settles what was owed first.
    r.a._kv = working
    assert await r.a.open_socket("s", "w1")
    assert await r.b.admit_call(alice, "s", "c2") is None
    assert any("works again" in rec.getMessage() for rec in caplog.records)
