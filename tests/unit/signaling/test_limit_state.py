"""The abuse limits' shared state on a fake clock: token buckets and slot tables as bytes."""

from __future__ import annotations

import json

from services.common.rates import Rate
from services.signaling import limit_state
from services.signaling.limit_state import hold, release, take

T0 = 1_700_000_000.0
THREE_PER_MINUTE = Rate(3, 60.0)


def everyone_live(_instance_id: str) -> bool:
    return True


def slot_ids(raw: bytes | None) -> list[str]:
    return [slot.id for slot in limit_state.decode_table(raw).slots]


# --- token buckets ------------------------------------------------------------------


def test_a_new_bucket_is_full_and_empties_after_its_burst() -> None:
    raw: bytes | None = None
    for _ in range(3):
        raw, ok = take(raw, THREE_PER_MINUTE, T0)
        assert ok
    _, ok = take(raw, THREE_PER_MINUTE, T0 + 1)
    assert not ok
    state = limit_state.decode_bucket(raw)
    assert state is not None and state.tokens == 0 and state.at == T0


def test_a_bucket_refills_at_its_rate() -> None:
    raw: bytes | None = None
    for _ in range(3):
        raw, _ = take(raw, THREE_PER_MINUTE, T0)
    _, ok = take(raw, THREE_PER_MINUTE, T0 + 19.9)
    assert not ok
    raw, ok = take(raw, THREE_PER_MINUTE, T0 + 20)  # one token per 20 s
    assert ok
    _, ok = take(raw, THREE_PER_MINUTE, T0 + 20)
    assert not ok
    # Never more than the burst, however long it waited.
    raw, _ = take(raw, THREE_PER_MINUTE, T0 + 3600)
    state = limit_state.decode_bucket(raw)
    assert state is not None and state.tokens == 2


def test_a_refusal_leaves_bytes_equivalent_to_the_old_ones() -> None:
    raw: bytes | None = None
    for _ in range(3):
        raw, _ = take(raw, THREE_PER_MINUTE, T0)
    refused, ok = take(raw, THREE_PER_MINUTE, T0 + 10)
    assert not ok
    # Not writing ``refused`` back changes nothing: the next take sees the same refill.
    assert take(raw, THREE_PER_MINUTE, T0 + 20)[1] == take(refused, THREE_PER_MINUTE, T0 + 20)[1]


def test_a_clock_behind_the_writer_s_does_not_mint_tokens() -> None:
    raw, _ = take(None, Rate(1, 60.0), T0 + 5)  # written by a host 5 s ahead
    _, ok = take(raw, Rate(1, 60.0), T0)
    assert not ok


def test_a_bad_bucket_entry_counts_as_none() -> None:
    for bad in (b"", b"not json", b'{"tokens": "x"}', b"[]"):
        raw, ok = take(bad, THREE_PER_MINUTE, T0)
        assert ok
        state = limit_state.decode_bucket(raw)
        assert state is not None and state.tokens == 2


def test_bucket_is_full_once_it_refilled() -> None:
    assert limit_state.bucket_is_full(None, THREE_PER_MINUTE, T0)
    raw, _ = take(None, THREE_PER_MINUTE, T0)
    assert not limit_state.bucket_is_full(raw, THREE_PER_MINUTE, T0 + 19)
    assert limit_state.bucket_is_full(raw, THREE_PER_MINUTE, T0 + 20)


def test_the_entries_are_plain_json() -> None:
    raw, _ = take(None, THREE_PER_MINUTE, T0)
    assert json.loads(raw) == {"tokens": 2.0, "at": T0}
    raw, _ = hold(None, "call-1", "sig-a", 2, 60.0, T0, everyone_live)
    assert json.loads(raw) == {
        "slots": [{"id": "call-1", "holder": "sig-a", "expires_at": T0 + 60.0}]
    }


# --- slot tables --------------------------------------------------------------------


def test_hold_refuses_at_the_limit() -> None:
    raw, ok = hold(None, "c1", "a", 2, 60.0, T0, everyone_live)
    assert ok
    raw, ok = hold(raw, "c2", "b", 2, 60.0, T0, everyone_live)
    assert ok
    refused, ok = hold(raw, "c3", "a", 2, 60.0, T0, everyone_live)
    assert not ok
    assert slot_ids(refused) == ["c1", "c2"]
    assert slot_ids(raw) == ["c1", "c2"]


def test_hold_is_idempotent_for_one_slot_id() -> None:
    raw, _ = hold(None, "c1", "a", 1, 60.0, T0, everyone_live)
    again, ok = hold(raw, "c1", "a", 1, 60.0, T0 + 30, everyone_live)
    assert ok  # at the limit, but it is the same slot
    table = limit_state.decode_table(again)
    assert [(s.id, s.expires_at) for s in table.slots] == [("c1", T0 + 90.0)]


def test_expired_slots_are_dropped_before_counting() -> None:
    raw, _ = hold(None, "c1", "a", 1, 60.0, T0, everyone_live)
    _, ok = hold(raw, "c2", "a", 1, 60.0, T0 + 59.9, everyone_live)
    assert not ok
    raw, ok = hold(raw, "c2", "a", 1, 60.0, T0 + 60.0, everyone_live)
    assert ok
    assert slot_ids(raw) == ["c2"]


def test_slots_of_instances_no_longer_live_are_dropped() -> None:
    raw, _ = hold(None, "c1", "dead", 2, 60.0, T0, everyone_live)
    raw, _ = hold(raw, "c2", "alive", 2, 60.0, T0, everyone_live)
    asked: list[str] = []

    def is_live(instance_id: str) -> bool:
        asked.append(instance_id)
        return instance_id != "dead"

    raw, ok = hold(raw, "c3", "alive", 2, 60.0, T0 + 1, is_live)
    assert ok
    assert slot_ids(raw) == ["c2", "c3"]
    assert sorted(asked) == ["alive", "dead"]


def test_a_limit_of_zero_refuses_everything() -> None:
    _, ok = hold(None, "c1", "a", 0, 60.0, T0, everyone_live)
    assert not ok


def test_a_bad_table_entry_counts_as_empty() -> None:
    raw, ok = hold(b"garbage", "c1", "a", 1, 60.0, T0, everyone_live)
    assert ok and slot_ids(raw) == ["c1"]
    assert release(b"garbage", "c1") is None


def test_release_removes_the_slot_and_empties_to_none() -> None:
    raw, _ = hold(None, "c1", "a", 2, 60.0, T0, everyone_live)
    raw, _ = hold(raw, "c2", "a", 2, 60.0, T0, everyone_live)
    after = release(raw, "c1")
    assert after is not None and slot_ids(after) == ["c2"]
    assert release(after, "c2") is None
    assert release(None, "c1") is None


def test_release_of_a_slot_not_held_returns_the_same_bytes() -> None:
    raw, _ = hold(None, "c1", "a", 2, 60.0, T0, everyone_live)
    assert release(raw, "other") is raw


def test_live_slots() -> None:
    raw, _ = hold(None, "c1", "a", 3, 10.0, T0, everyone_live)
    raw, _ = hold(raw, "c2", "b", 3, 60.0, T0, everyone_live)
    assert [s.id for s in limit_state.live_slots(raw, T0 + 20, everyone_live)] == ["c2"]
    assert limit_state.live_slots(raw, T0, lambda i: i == "a")[0].id == "c1"
