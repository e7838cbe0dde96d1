"""The abuse limits of one process, in memory, on a fake clock."""

from __future__ import annotations

from dataclasses import replace

import pytest

from proto import errors
from services.common.access import Access
from services.common.rates import Rate
from services.signaling.abuse_limits import (
    CALL_SLOT_GRACE,
    SOCKET_TTL,
    SWEEP_INTERVAL,
    AbuseLimits,
    LocalLimits,
)

pytestmark = pytest.mark.timeout(10)

T0 = 1_700_000_000.0
NO_RATES = Access(call_rate=None, source_call_rate=None)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def make(access: Access) -> tuple[LocalLimits, Clock, list[str]]:
    clock = Clock()
    refused: list[str] = []
    return LocalLimits(access, on_refused=refused.append, clock=clock), clock, refused


async def test_concurrent_calls_per_identity() -> None:
    limits, _, refused = make(replace(NO_RATES, max_calls_per_user=2))
    assert isinstance(limits, AbuseLimits)
    assert await limits.admit_call("alice", "10.0.0.1", "c1") is None
    assert await limits.admit_call("alice", "10.0.0.1", "c2") is None
    assert await limits.admit_call("alice", "10.0.0.1", "c3") == errors.TOO_MANY_CALLS
    assert await limits.admit_call("bob", "10.0.0.1", "c4") is None  # per identity
    await limits.release_call("alice", "c1")
    await limits.release_call("alice", "c1")  # idempotent
    assert await limits.admit_call("alice", "10.0.0.1", "c3") is None
    assert refused == [errors.TOO_MANY_CALLS]


async def test_a_token_s_max_calls_lowers_the_limit_never_raises_it() -> None:
    limits, _, _ = make(replace(NO_RATES, max_calls_per_user=2))
    assert await limits.admit_call("alice", "s", "c1", max_calls=1) is None
    assert await limits.admit_call("alice", "s", "c2", max_calls=1) == errors.TOO_MANY_CALLS
    assert await limits.admit_call("bob", "s", "c3", max_calls=5) is None
    assert await limits.admit_call("bob", "s", "c4", max_calls=5) is None
    assert await limits.admit_call("bob", "s", "c5", max_calls=5) == errors.TOO_MANY_CALLS


async def test_admitting_the_same_call_twice_holds_one_slot() -> None:
    limits, _, _ = make(replace(NO_RATES, max_calls_per_user=1))
    assert await limits.admit_call("alice", "s", "c1") is None
    assert await limits.admit_call("alice", "s", "c1") is None


async def test_a_call_slot_never_released_expires_after_the_longest_call() -> None:
    access = replace(NO_RATES, max_calls_per_user=1, max_call_duration=600.0)
    limits, clock, _ = make(access)
    assert await limits.admit_call("alice", "s", "c1") is None
    clock.now = T0 + 600 + CALL_SLOT_GRACE - 1
    assert await limits.admit_call("alice", "s", "c2") == errors.TOO_MANY_CALLS
    clock.now = T0 + 600 + CALL_SLOT_GRACE
    assert await limits.admit_call("alice", "s", "c2") is None


async def test_identity_call_rate_and_its_refill() -> None:
    limits, clock, refused = make(replace(NO_RATES, call_rate=Rate(3, 60.0)))
    for n in range(3):
        assert await limits.admit_call("alice", "s", f"c{n}") is None
        await limits.release_call("alice", f"c{n}")
    assert await limits.admit_call("alice", "s", "c3") == errors.RATE_LIMITED
    assert await limits.admit_call("bob", "s", "c4") is None  # per identity
    clock.now = T0 + 20
    assert await limits.admit_call("alice", "s", "c5") is None
    assert refused == [errors.RATE_LIMITED]


async def test_source_rate_comes_first_and_applies_without_identity() -> None:
    access = replace(NO_RATES, source_call_rate=Rate(2, 60.0), max_calls_per_user=1)
    limits, _, refused = make(access)
    assert await limits.admit_call(None, "10.0.0.1", "c1") is None
    assert await limits.admit_call(None, "10.0.0.1", "c2") is None  # no identity: no slot
    # The source is spent: refused as rate limited though alice has no call at all.
    assert await limits.admit_call("alice", "10.0.0.1", "c3") == errors.RATE_LIMITED
    assert await limits.admit_call(None, "10.0.0.2", "c4") is None
    assert refused == [errors.RATE_LIMITED]
    await limits.release_call(None, "c1")  # nothing held: a no-op


async def test_identity_rate_comes_before_the_call_count() -> None:
    access = replace(NO_RATES, call_rate=Rate(1, 60.0), max_calls_per_user=1)
    limits, _, _ = make(access)
    assert await limits.admit_call("alice", "s", "c1") is None
    assert await limits.admit_call("alice", "s", "c2") == errors.RATE_LIMITED


async def test_rates_off_mean_no_check() -> None:
    limits, _, _ = make(replace(NO_RATES, max_calls_per_user=1000))
    for n in range(500):
        assert await limits.admit_call("alice", "s", f"c{n}") is None


async def test_sockets_per_source() -> None:
    limits, clock, refused = make(replace(NO_RATES, ws_per_source=2))
    assert await limits.open_socket("10.0.0.1", "w1")
    assert await limits.open_socket("10.0.0.1", "w2")
    assert not await limits.open_socket("10.0.0.1", "w3")
    assert await limits.open_socket("10.0.0.2", "w4")
    await limits.close_socket("10.0.0.1", "w1")
    await limits.close_socket("10.0.0.1", "w1")
    assert await limits.open_socket("10.0.0.1", "w3")
    assert refused == [errors.RATE_LIMITED]
    clock.now = T0 + SOCKET_TTL
    assert await limits.open_socket("10.0.0.1", "w5")  # the others were never closed


async def test_spent_entries_are_swept_out() -> None:
    access = replace(NO_RATES, call_rate=Rate(10, 60.0), source_call_rate=Rate(10, 60.0))
    limits, clock, _ = make(access)
    for n in range(50):
        assert await limits.admit_call(f"user{n}", f"10.0.0.{n}", f"c{n}") is None
        await limits.release_call(f"user{n}", f"c{n}")
    assert await limits.admit_call("held", "10.1.0.1", "kept") is None
    assert await limits.open_socket("10.1.0.1", "w1")
    assert limits.entry_count == 50 * 2 + 4  # two buckets each; held's buckets, call and socket
    clock.now = T0 + SWEEP_INTERVAL
    assert await limits.open_socket("10.1.0.2", "w2")
    assert limits.entry_count == 3  # the call, the two sockets
    assert await limits.admit_call("held", "10.1.0.1", "kept") is None  # still held
    await limits.close()
    assert limits.entry_count == 0
