"""The shared state of the abuse limits, sans I/O: token buckets and slot tables as bytes.

Signaling replicas share each limit through one KV entry: a ``BucketState``
for an attempt rate (``CALL_RATE``, ``SOURCE_CALL_RATE``), a ``SlotTable`` for
a count of things held at once (calls of an identity, WebSockets of an
address). The functions here take the entry's bytes as read (None: no entry)
and the current wall-clock time, and return the bytes to write back with
compare-and-set; they never touch the network or a clock.

A slot is held by one instance until it is released, its ``expires_at``
passes, or its instance is no longer live: the slots of a replica that died
without releasing them are dropped by the next ``hold`` of any replica.
Bytes that do not decode (an entry written by something else) count as no
entry: a limit never wedges on a bad entry.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from services.common.rates import Rate, TokenBucket


class BucketState(msgspec.Struct, frozen=True, kw_only=True):
    """One token bucket: ``tokens`` left at wall-clock time ``at``."""

    tokens: float
    at: float


class Slot(msgspec.Struct, frozen=True, kw_only=True):
    """One thing held (a call, a socket)."""

    id: str
    "The call id or socket id."
    holder: str
    "Instance id of the replica holding it."
    expires_at: float
    "Wall-clock time after which it counts as released."


class SlotTable(msgspec.Struct, frozen=True, kw_only=True):
    """The slots held under one key."""

    slots: tuple[Slot, ...] = ()


_encoder = msgspec.json.Encoder()
_bucket_decoder = msgspec.json.Decoder(BucketState)
_table_decoder = msgspec.json.Decoder(SlotTable)


def encode(state: BucketState | SlotTable) -> bytes:
    return _encoder.encode(state)


def decode_bucket(raw: bytes | None) -> BucketState | None:
    """The bucket in ``raw``; None when there is none or it does not decode."""
    if not raw:
        return None
    try:
        return _bucket_decoder.decode(raw)
    except msgspec.DecodeError:
        return None


def decode_table(raw: bytes | None) -> SlotTable:
    """The slot table in ``raw``; an empty one when there is none or it does not decode."""
    if not raw:
        return SlotTable()
    try:
        return _table_decoder.decode(raw)
    except msgspec.DecodeError:
        return SlotTable()


# --- token buckets ------------------------------------------------------------------


def take(raw: bytes | None, rate: Rate, now: float) -> tuple[bytes, bool]:
    """Take one token from the bucket in ``raw`` (full when there is none).

    The new bytes and whether a token was there. When it was not, the bytes
    need not be written: the refill they hold follows from the old ones.
    """
    state = decode_bucket(raw)
    bucket = TokenBucket.full(rate, now) if state is None else TokenBucket(state.tokens, state.at)
    ok = bucket.take(rate, now)
    return encode(BucketState(tokens=bucket.tokens, at=bucket.at)), ok


def bucket_is_full(raw: bytes | None, rate: Rate, now: float) -> bool:
    """Whether the bucket has refilled by ``now``, so dropping it changes nothing."""
    state = decode_bucket(raw)
    if state is None:
        return True
    return state.tokens + max(0.0, now - state.at) * rate.per_second >= rate.count - 1e-9


# --- slot tables --------------------------------------------------------------------


def live_slots(raw: bytes | None, now: float, is_live: Callable[[str], bool]) -> tuple[Slot, ...]:
    """The slots in ``raw`` that have not expired and whose holder is live."""
    return tuple(
        slot for slot in decode_table(raw).slots if slot.expires_at > now and is_live(slot.holder)
    )


def hold(
    raw: bytes | None,
    slot_id: str,
    instance_id: str,
    limit: int,
    ttl: float,
    now: float,
    is_live: Callable[[str], bool],
) -> tuple[bytes, bool]:
    """Hold ``slot_id`` for ``instance_id`` until ``now + ttl`` unless ``limit`` are held.

    Expired slots and slots of instances that are not live are dropped first.
    Holding a slot id already held succeeds (its expiry is renewed) whatever
    the limit. The new bytes and whether the slot is held; when it is not, the
    bytes need not be written.
    """
    slots = live_slots(raw, now, is_live)
    slot = Slot(id=slot_id, holder=instance_id, expires_at=now + ttl)
    if any(s.id == slot_id for s in slots):
        renewed = tuple(slot if s.id == slot_id else s for s in slots)
        return encode(SlotTable(slots=renewed)), True
    if len(slots) >= limit:
        return encode(SlotTable(slots=slots)), False
    return encode(SlotTable(slots=(*slots, slot))), True


def release(raw: bytes | None, slot_id: str) -> bytes | None:
    """The table in ``raw`` without ``slot_id``; None when no slot is left (delete the key).

    ``raw`` itself (the same bytes) when it held no such slot: nothing to write.
    """
    table = decode_table(raw)
    slots = tuple(s for s in table.slots if s.id != slot_id)
    if not slots:
        return None
    if len(slots) == len(table.slots):
        return raw
    return encode(SlotTable(slots=slots))
