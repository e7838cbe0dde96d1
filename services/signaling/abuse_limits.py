"""The abuse limits' rules and their in-memory state: attempt rates and concurrent slots.

``AbuseLimits`` applies the limits over three primitives (take a token, hold a
slot, release it); ``LocalLimits`` keeps their state in process memory (one
replica, unit tests, and the fallback of ``limits.Limits``, which keeps the
same state in a JetStream KV bucket shared by the replicas).

Keys (``<h>``: the first 16 hex digits of the SHA-256 of the identity or
address; identities never appear in key names):

- ``rate.src.<h>``: token bucket of ``SOURCE_CALL_RATE`` for a source address;
- ``rate.id.<h>``: token bucket of ``CALL_RATE`` for an identity;
- ``calls.<h>``: slot table of an identity's calls (slot id: the call id);
- ``sockets.<h>``: slot table of an address's WebSockets (slot id: the socket id).

The state is JSON (``limit_state``), times are wall-clock (replicas on
different hosts compare them).
"""

from __future__ import annotations

import abc
import hashlib
import time
from collections.abc import Callable

from proto import errors
from services.common.access import Access
from services.common.rates import Rate
from services.signaling import limit_state

CALL_SLOT_GRACE = 120.0
"Seconds a call slot outlives ``MAX_CALL_DURATION`` when it is never released."
SOCKET_TTL = 24 * 3600.0
"Seconds a socket slot lives when it is never released (its replica's death drops it sooner)."
SWEEP_INTERVAL = 60.0
"Seconds between two sweeps of spent entries out of ``LocalLimits``."
HASH_DIGITS = 16
"Hex digits of SHA-256 in a key."

OnRefused = Callable[[str], None]
"Told the reason (an ``errors`` code) of every refusal."


def digest(text: str) -> str:
    """The short SHA-256 hex of an identity or address, as it appears in keys."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:HASH_DIGITS]


def source_rate_key(source: str) -> str:
    return f"rate.src.{digest(source)}"


def identity_rate_key(identity: str) -> str:
    return f"rate.id.{digest(identity)}"


def calls_key(identity: str) -> str:
    return f"calls.{digest(identity)}"


def sockets_key(source: str) -> str:
    return f"sockets.{digest(source)}"


class AbuseLimits(abc.ABC):
    """The limits' rules over three primitives (take a token, hold a slot, release it)."""

    def __init__(
        self,
        access: Access,
        instance_id: str,
        *,
        on_refused: OnRefused | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.access = access
        self.instance_id = instance_id
        self._on_refused = on_refused
        self._clock = clock

    async def admit_call(
        self, identity: str | None, source: str, call_id: str, max_calls: int | None = None
    ) -> str | None:
        """None: admitted (the identity's slot for ``call_id`` is held until
        ``release_call``); else ``errors.RATE_LIMITED`` or ``errors.TOO_MANY_CALLS``.

        Order: per-source attempt rate (``source_call_rate``), then per-identity
        attempt rate (``call_rate``), then concurrent calls per identity (the
        lower of ``max_calls_per_user`` and ``max_calls``). ``identity`` None
        (tokens off): only the per-source rate applies. A refused attempt still
        spends the tokens it got so far.
        """
        rate = self.access.source_call_rate
        if rate is not None and not await self._take(source_rate_key(source), rate):
            return self._refused(errors.RATE_LIMITED)
        if identity is None:
            return None
        rate = self.access.call_rate
        if rate is not None and not await self._take(identity_rate_key(identity), rate):
            return self._refused(errors.RATE_LIMITED)
        limit = self.access.max_calls_per_user
        if max_calls is not None:
            limit = min(limit, max_calls)
        ttl = self.access.max_call_duration + CALL_SLOT_GRACE
        if not await self._hold(calls_key(identity), call_id, limit, ttl):
            return self._refused(errors.TOO_MANY_CALLS)
        return None

    async def release_call(self, identity: str | None, call_id: str) -> None:
        """The call ended (or was refused later on): its slot is free. Idempotent."""
        if identity is not None:
            await self._release(calls_key(identity), call_id)

    async def open_socket(self, source: str, socket_id: str) -> bool:
        """False when ``source`` already has ``ws_per_source`` sockets open
        (counted as a ``RATE_LIMITED`` refusal); else the socket's slot is held
        until ``close_socket``."""
        if await self._hold(sockets_key(source), socket_id, self.access.ws_per_source, SOCKET_TTL):
            return True
        self._refused(errors.RATE_LIMITED)
        return False

    async def close_socket(self, source: str, socket_id: str) -> None:
        """The socket closed: its slot is free. Idempotent."""
        await self._release(sockets_key(source), socket_id)

    @abc.abstractmethod
    async def close(self) -> None: ...

    # --- primitives -------------------------------------------------------------------

    @abc.abstractmethod
    async def _take(self, key: str, rate: Rate) -> bool:
        """Take a token from the bucket at ``key``."""

    @abc.abstractmethod
    async def _hold(self, key: str, slot_id: str, limit: int, ttl: float) -> bool:
        """Hold ``slot_id`` in the table at ``key`` unless ``limit`` slots are held."""

    @abc.abstractmethod
    async def _release(self, key: str, slot_id: str) -> None:
        """Release ``slot_id`` from the table at ``key``."""

    def _refused(self, reason: str) -> str:
        if self._on_refused is not None:
            self._on_refused(reason)
        return reason


class LocalLimits(AbuseLimits):
    """The limits of this process alone, in memory: one replica without NATS KV, unit
    tests, and the state ``limits.Limits`` falls back to. Spent entries are swept out every
    ``SWEEP_INTERVAL`` so memory follows what is held, not every address ever seen."""

    def __init__(
        self,
        access: Access,
        instance_id: str = "local",
        *,
        on_refused: OnRefused | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(access, instance_id, on_refused=on_refused, clock=clock)
        self._entries: dict[str, bytes] = {}
        self._sweep_at = clock() + SWEEP_INTERVAL

    async def close(self) -> None:
        self._entries.clear()

    def holds(self, key: str, slot_id: str) -> bool:
        """Whether ``slot_id`` is held in the table at ``key`` (expired or not)."""
        return any(s.id == slot_id for s in limit_state.decode_table(self._entries.get(key)).slots)

    @property
    def entry_count(self) -> int:
        """Entries kept (spent ones are swept out every ``SWEEP_INTERVAL``)."""
        return len(self._entries)

    # Synchronous forms, for ``limits.Limits`` falling back without yielding.

    def take_now(self, key: str, rate: Rate) -> bool:
        now = self._now()
        new, ok = limit_state.take(self._entries.get(key), rate, now)
        if ok:
            self._entries[key] = new
        return ok

    def hold_now(self, key: str, slot_id: str, limit: int, ttl: float) -> bool:
        now = self._now()
        new, ok = limit_state.hold(
            self._entries.get(key), slot_id, self.instance_id, limit, ttl, now, _always_live
        )
        if ok:
            self._entries[key] = new
        return ok

    def release_now(self, key: str, slot_id: str) -> None:
        raw = self._entries.get(key)
        if raw is None:
            return
        new = limit_state.release(raw, slot_id)
        if new is None:
            del self._entries[key]
        else:
            self._entries[key] = new

    async def _take(self, key: str, rate: Rate) -> bool:
        return self.take_now(key, rate)

    async def _hold(self, key: str, slot_id: str, limit: int, ttl: float) -> bool:
        return self.hold_now(key, slot_id, limit, ttl)

    async def _release(self, key: str, slot_id: str) -> None:
        self.release_now(key, slot_id)

    def _now(self) -> float:
        now = self._clock()
        if now >= self._sweep_at:
            self._sweep(now)
        return now

    def _sweep(self, now: float) -> None:
        """Drop full buckets and empty slot tables: they are the same as no entry."""
        self._sweep_at = now + SWEEP_INTERVAL
        for key, raw in list(self._entries.items()):
            if key.startswith("rate."):
                rate = (
                    self.access.source_call_rate
                    if key.startswith("rate.src.")
                    else self.access.call_rate
                )
                if rate is None or limit_state.bucket_is_full(raw, rate, now):
                    del self._entries[key]
            else:
                slots = limit_state.live_slots(raw, now, _always_live)
                if slots:
                    self._entries[key] = limit_state.encode(limit_state.SlotTable(slots=slots))
                else:
                    del self._entries[key]


def _always_live(_instance_id: str) -> bool:
    return True
