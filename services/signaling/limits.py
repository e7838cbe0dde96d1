"""Abuse limits that hold across signaling replicas, over the JetStream KV bucket ``BUCKET``.

``Limits`` keeps the state of the abuse limits (``abuse_limits``: the rules,
the keys, the state's form) in the bucket, so replicas behind one load
balancer share it: a client spreading its attempts over replicas gets no more
than from one.

Every change is a read then a compare-and-set write (``kv.create`` for a new
key, ``kv.update``/``kv.delete`` at the revision read), retried when another
replica wrote in between; every KV operation runs under ``OP_TIMEOUT``. The
state is JSON (``limit_state``), times are wall-clock (replicas on different
hosts compare them).

When the bucket cannot be opened, or an operation on it fails or times out,
the operation is done on the in-memory state (``abuse_limits.LocalLimits``)
instead (that limit then holds per replica until the bucket is back), at most
one warning a minute is logged and the bucket is left alone for ``BACKOFF``
seconds so calls do not each wait for a timeout; a key still contended after
``UPDATE_ATTEMPTS`` rounds sends that one operation to memory. A slot held in
memory is released in memory; a release the bucket missed is done before its
next operation.

Slots of a replica that is no longer live (``is_live``) are dropped by the
next ``hold`` on their key, so a replica that died does not keep its calls and
sockets counted; entries nobody writes vanish after the bucket's ``TTL``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from services.common.access import Access
from services.common.rates import Rate
from services.signaling import limit_state
from services.signaling.abuse_limits import AbuseLimits, LocalLimits, OnRefused

log = logging.getLogger(__name__)

BUCKET: Final = "bridge-limits"
"Name of the KV bucket."
TTL = 24 * 3600.0
"Seconds an entry lives without being written (a backstop: slots expire on their own)."
OP_TIMEOUT = 2.0
"Seconds one KV operation may take."
UPDATE_ATTEMPTS = 10
"Compare-and-set rounds against concurrent writers before the operation counts as failed."
BACKOFF = 5.0
"Seconds the bucket is left alone after an operation failed."
REOPEN_INTERVAL = 5.0
"Seconds between attempts to open the bucket after it could not be opened."
WARN_INTERVAL = 60.0
"Seconds between two warnings about the bucket."

_T = TypeVar("_T")

# JetStream: "wrong last sequence" (10071) and its constant form (10164).
_WRONG_LAST_SEQUENCE = (10071, 10164)


class _Keep:
    """The entry stays as it is: nothing to write."""


KEEP: Final = _Keep()

NewValue = bytes | _Keep | None
"What a change makes of an entry: its new value, ``KEEP``, or None (delete it)."


class LimitsError(Exception):
    """The bucket could not be opened, read or written."""


class Contended(LimitsError):
    """Other replicas wrote the entry first in every compare-and-set round."""


class Limits(AbuseLimits):
    """The limits shared by every replica through the ``BUCKET`` KV bucket."""

    def __init__(
        self,
        kv: KeyValue | None,
        access: Access,
        instance_id: str,
        is_live: Callable[[str], bool],
        *,
        on_refused: OnRefused | None = None,
        clock: Callable[[], float] = time.time,
        op_timeout: float = OP_TIMEOUT,
    ) -> None:
        """Made by ``open``; ``kv`` None: in memory (``open`` keeps trying the bucket)."""
        super().__init__(access, instance_id, on_refused=on_refused, clock=clock)
        self._kv = kv
        self._is_live = is_live
        self._op_timeout = op_timeout
        self.local = LocalLimits(access, instance_id, clock=clock)
        "The fallback state: what was held while the bucket could not be used."
        self._shared: set[tuple[str, str]] = set()
        "Slots this instance holds in the bucket."
        self._owed: set[tuple[str, str]] = set()
        "Slots to release in the bucket once it can be written again."
        self._failed_at: float | None = None
        "When a KV operation last failed (monotonic), None when the last one worked."
        self._warned_at: float | None = None
        self._unwarned = 0
        "Failures since the last warning."
        self._opener: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        nc: Client,
        access: Access,
        instance_id: str,
        is_live: Callable[[str], bool],
        replicas: int = 1,
        *,
        on_refused: OnRefused | None = None,
        clock: Callable[[], float] = time.time,
        op_timeout: float = OP_TIMEOUT,
    ) -> Limits:
        """Bind to the bucket, creating it if no replica did yet.

        ``is_live(instance_id)``: whether a signaling instance is alive; its
        slots are dropped once it is not. It must say True for an instance not
        known dead yet (a replica that just started has not heard the others'
        heartbeats): ``dead_since(...) is None`` of the fleet's lease table.
        The own instance always counts as live. ``replicas``: the bucket's
        (``KV_REPLICAS``). Never fails: when the bucket cannot be opened the
        limits hold in memory and opening is retried in the background.
        """
        limits = cls(
            None,
            access,
            instance_id,
            is_live,
            on_refused=on_refused,
            clock=clock,
            op_timeout=op_timeout,
        )
        try:
            limits._kv = await open_bucket(nc, replicas=replicas, op_timeout=op_timeout)
        except LimitsError as exc:
            limits._warn(f"limits hold per replica until the bucket opens: {exc}")
            limits._opener = asyncio.create_task(
                limits._keep_opening(nc, replicas), name="limits-open"
            )
        return limits

    @property
    def shared(self) -> bool:
        """Whether the bucket is open and not backed off after a failure."""
        return self._usable() is not None

    async def close(self) -> None:
        """Stop reopening; release in the bucket the slots still held (best effort)."""
        opener, self._opener = self._opener, None
        if opener is not None:
            opener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await opener
        kv = self._usable()
        owed = self._owed | self._shared
        self._owed.clear()
        self._shared.clear()
        if kv is not None and owed:
            try:
                async with asyncio.timeout(self._op_timeout * 2):
                    for key, slot_id in sorted(owed):
                        await self._modify(kv, key, _releasing(slot_id))
            except (TimeoutError, LimitsError, nats.errors.Error) as exc:
                log.warning("limits: %d slot(s) left to expire in the bucket: %r", len(owed), exc)
        await self.local.close()

    # --- primitives -------------------------------------------------------------------

    async def _take(self, key: str, rate: Rate) -> bool:
        def change(raw: bytes | None) -> tuple[NewValue, bool]:
            new, ok = limit_state.take(raw, rate, self._clock())
            return (new if ok else KEEP), ok

        ok = await self._shared_op(key, change)
        return self.local.take_now(key, rate) if ok is None else ok

    async def _hold(self, key: str, slot_id: str, limit: int, ttl: float) -> bool:
        def change(raw: bytes | None) -> tuple[NewValue, bool]:
            new, ok = limit_state.hold(
                raw, slot_id, self.instance_id, limit, ttl, self._clock(), self._live
            )
            return (new if ok else KEEP), ok

        if self._usable() is None:
            return self.local.hold_now(key, slot_id, limit, ttl)
        slot = (key, slot_id)
        self._owed.discard(slot)
        ok = await self._shared_op(key, change)
        if ok is None:
            # It may have been written before the failure: released there when possible.
            self._owed.add(slot)
            return self.local.hold_now(key, slot_id, limit, ttl)
        if ok:
            self._shared.add(slot)
        return ok

    async def _release(self, key: str, slot_id: str) -> None:
        slot = (key, slot_id)
        if self.local.holds(key, slot_id):
            self.local.release_now(key, slot_id)
        if slot not in self._shared:
            return
        self._shared.discard(slot)
        if await self._shared_op(key, _releasing(slot_id)) is None:
            self._owed.add(slot)

    # --- the bucket -------------------------------------------------------------------

    def _live(self, instance_id: str) -> bool:
        return instance_id == self.instance_id or self._is_live(instance_id)

    def _usable(self) -> KeyValue | None:
        """The bucket unless it is not open or failed less than ``BACKOFF`` ago."""
        if self._failed_at is not None and time.monotonic() < self._failed_at + BACKOFF:
            return None
        return self._kv

    async def _shared_op(
        self, key: str, change: Callable[[bytes | None], tuple[NewValue, _T]]
    ) -> _T | None:
        """``change`` applied to the entry at ``key`` in the bucket; None when the
        bucket cannot be used (the caller falls back to memory)."""
        kv = self._usable()
        if kv is None:
            return None
        try:
            while self._owed:
                owed_key, owed_slot = min(self._owed)
                await self._modify(kv, owed_key, _releasing(owed_slot))
                self._owed.discard((owed_key, owed_slot))
            result = await self._modify(kv, key, change)
        except Contended as exc:
            # A burst on one key, not a broken bucket: only this operation is local.
            self._warn(f"limits held per replica for one operation: {exc}")
            return None
        except LimitsError as exc:
            self._failed_at = time.monotonic()
            self._warn(f"limits hold per replica for {BACKOFF:g} s: {exc}")
            return None
        if self._failed_at is not None:
            self._failed_at = None
            log.info("limits: the bucket %s works again, limits are shared", BUCKET)
        return result

    async def _modify(
        self,
        kv: KeyValue,
        key: str,
        change: Callable[[bytes | None], tuple[NewValue, _T]],
    ) -> _T:
        """Read the entry, apply ``change``, write the result back with compare-and-set;
        ``LimitsError`` on a failure, a timeout or a conflict every round."""
        for attempt in range(UPDATE_ATTEMPTS):
            raw, revision = await self._get(kv, key)
            new, result = change(raw)
            if isinstance(new, _Keep) or (new is None and raw is None):
                return result
            if await self._write(kv, key, new, revision):
                return result
            await asyncio.sleep(random.uniform(0.0, 0.002 * (attempt + 1)))
        raise Contended(f"{key}: still conflicting after {UPDATE_ATTEMPTS} attempts")

    async def _get(self, kv: KeyValue, key: str) -> tuple[bytes | None, int]:
        """The entry's value and revision; (None, 0) without one, or (None, revision)
        when its last revision is a delete marker."""
        try:
            entry = await self._op(key, "get", kv.get(key))
        except nats.js.errors.KeyNotFoundError as exc:
            marker = getattr(exc, "entry", None)
            revision = getattr(marker, "revision", None)
            return None, int(revision) if isinstance(revision, int) else 0
        return entry.value, int(entry.revision or 0)

    async def _write(self, kv: KeyValue, key: str, new: bytes | None, revision: int) -> bool:
        """Write ``new`` (None: delete) if the entry is still at ``revision``; False if not."""
        try:
            if new is None:
                await self._op(key, "delete", kv.delete(key, last=revision))
            elif revision:
                await self._op(key, "update", kv.update(key, new, last=revision))
            else:
                await self._op(key, "create", kv.create(key, new))
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        except nats.js.errors.APIError as exc:
            if exc.err_code in _WRONG_LAST_SEQUENCE:
                return False
            raise LimitsError(f"{key}: {exc!r}") from exc
        return True

    async def _op(self, key: str, what: str, op: Awaitable[_T]) -> _T:
        """One KV operation under the timeout; JetStream's answers about the key
        (not found, wrong last sequence) pass, any other failure is ``LimitsError``."""
        try:
            async with asyncio.timeout(self._op_timeout):
                return await op
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyWrongLastSequenceError):
            raise
        except nats.js.errors.APIError as exc:
            if exc.err_code in _WRONG_LAST_SEQUENCE:
                raise
            raise LimitsError(f"{what} {key}: {exc!r}") from exc
        except TimeoutError as exc:
            raise LimitsError(f"{what} {key}: timed out") from exc
        except nats.errors.Error as exc:
            raise LimitsError(f"{what} {key}: {exc!r}") from exc

    def _warn(self, message: str) -> None:
        """Log ``message`` unless a warning was logged less than ``WARN_INTERVAL`` ago."""
        now = time.monotonic()
        if self._warned_at is not None and now < self._warned_at + WARN_INTERVAL:
            self._unwarned += 1
            log.debug("limits: %s", message)
            return
        more = (
            f" ({self._unwarned} more failure(s) since the last warning)" if self._unwarned else ""
        )
        log.warning("limits: %s%s", message, more)
        self._warned_at = now
        self._unwarned = 0

    async def _keep_opening(self, nc: Client, replicas: int) -> None:
        while True:
            await asyncio.sleep(REOPEN_INTERVAL)
            try:
                self._kv = await open_bucket(nc, replicas=replicas, op_timeout=self._op_timeout)
            except LimitsError as exc:
                self._warn(f"limits hold per replica until the bucket opens: {exc}")
                continue
            log.info("limits: the bucket %s is open, limits are shared", BUCKET)
            return


async def open_bucket(
    nc: Client, *, bucket: str = BUCKET, replicas: int = 1, op_timeout: float = OP_TIMEOUT
) -> KeyValue:
    """Bind to ``bucket``, creating it if it does not exist (idempotent); ``LimitsError``
    when JetStream cannot be reached in time."""
    js = nc.jetstream(timeout=op_timeout)
    try:
        async with asyncio.timeout(op_timeout * 3):
            try:
                return await js.key_value(bucket)
            except nats.js.errors.BucketNotFoundError:
                config = KeyValueConfig(
                    bucket=bucket,
                    history=1,
                    ttl=TTL,
                    replicas=replicas,
                    storage=StorageType.FILE,
                    description="bridge abuse limits: attempt rates, calls and sockets held",
                )
                try:
                    return await js.create_key_value(config)
                except nats.js.errors.APIError:
                    # Another replica created it meanwhile.
                    return await js.key_value(bucket)
    except (TimeoutError, nats.errors.Error) as exc:
        raise LimitsError(f"cannot open KV bucket {bucket}: {exc!r}") from exc


def _releasing(slot_id: str) -> Callable[[bytes | None], tuple[NewValue, bool]]:
    """The change releasing ``slot_id``; its result is True (None is for a failure)."""

    def change(raw: bytes | None) -> tuple[NewValue, bool]:
        if raw is None:
            return KEEP, True
        new = limit_state.release(raw, slot_id)
        return (KEEP if new is raw else new), True

    return change
