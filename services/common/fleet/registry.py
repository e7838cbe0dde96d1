"""The call registry: one ``CallRecord`` per call in a JetStream KV bucket.

Any instance reads what a survivor needs to end a call whose owner died.
Writes that may race use the entry's revision (compare-and-set): ``update``
retries a read-modify-write, ``replace`` and ``delete(revision=...)`` fail
instead of overwriting a change they did not see, which is how survivors
claim a dead instance's call exactly once.

Every operation runs under a timeout and raises ``RegistryError`` on any
failure: callers on a call's path log it and go on, a call never fails
because the registry is unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from proto import fleet
from proto.fleet import CallRecord
from proto.subjects import Source

log = logging.getLogger(__name__)

BUCKET = "bridge_calls"
"Name of the KV bucket."
TTL = 24 * 3600.0
"Seconds an entry lives without being written: longer than any call."
OP_TIMEOUT = 2.0
"Seconds one KV operation may take."
LIST_TIMEOUT = 10.0
"Seconds reading the whole bucket may take."
UPDATE_ATTEMPTS = 5
"Read-modify-write rounds ``update`` tries against concurrent writers."

# JetStream: "wrong last sequence" (10071) and its constant form (10164).
_WRONG_LAST_SEQUENCE = (10071, 10164)


class RegistryError(Exception):
    """The registry could not be read or written (NATS down, timeout, bad entry)."""


@dataclass(frozen=True)
class Entry:
    """A record and the revision it was read at (for compare-and-set)."""

    record: CallRecord
    revision: int


class CallRegistry:
    """Async access to the ``bridge_calls`` bucket."""

    def __init__(
        self, kv: KeyValue, *, op_timeout: float = OP_TIMEOUT, list_timeout: float = LIST_TIMEOUT
    ) -> None:
        self._kv = kv
        self._op_timeout = op_timeout
        self._list_timeout = list_timeout

    @classmethod
    async def open(
        cls,
        nc: Client,
        *,
        bucket: str = BUCKET,
        ttl: float = TTL,
        replicas: int = 1,
        op_timeout: float = OP_TIMEOUT,
        list_timeout: float = LIST_TIMEOUT,
    ) -> CallRegistry:
        """Bind to the bucket, creating it if no instance did yet (idempotent).

        ``replicas`` is 3 on a 3-node JetStream cluster so the records survive a node.
        """
        js = nc.jetstream(timeout=op_timeout)
        try:
            async with asyncio.timeout(op_timeout * 3):
                try:
                    kv = await js.key_value(bucket)
                except nats.js.errors.BucketNotFoundError:
                    config = KeyValueConfig(
                        bucket=bucket,
                        history=1,
                        ttl=ttl,
                        replicas=replicas,
                        storage=StorageType.FILE,
                        description="bridge calls: who holds each call, SIP dialog identifiers",
                    )
                    try:
                        kv = await js.create_key_value(config)
                    except nats.js.errors.APIError:
                        # Another instance created it meanwhile (maybe with other limits).
                        kv = await js.key_value(bucket)
        except (TimeoutError, nats.errors.Error) as exc:
            raise RegistryError(f"cannot open KV bucket {bucket}: {exc!r}") from exc
        return cls(kv, op_timeout=op_timeout, list_timeout=list_timeout)

    # --- single entries ----------------------------------------------------------------

    async def put(self, record: CallRecord) -> int:
        """Write ``record`` whatever is there; its new revision."""
        async with self._guard("put", record.call_id):
            return int(await self._kv.put(record.call_id, fleet.encode(record)))

    async def create(self, record: CallRecord) -> int | None:
        """Write ``record`` unless the call has an entry; its revision, None if it had one."""
        async with self._guard("create", record.call_id):
            try:
                return int(await self._kv.create(record.call_id, fleet.encode(record)))
            except nats.js.errors.KeyWrongLastSequenceError:
                return None

    async def get(self, call_id: str) -> Entry | None:
        """The call's record, or None when it has none."""
        async with self._guard("get", call_id):
            try:
                entry = await self._kv.get(call_id)
            except nats.js.errors.KeyNotFoundError:
                return None
            return _entry(entry.value, entry.revision, call_id)

    async def replace(self, record: CallRecord, revision: int) -> int | None:
        """Write ``record`` only if the entry is still at ``revision``; None if it is not."""
        async with self._guard("replace", record.call_id):
            try:
                return int(
                    await self._kv.update(record.call_id, fleet.encode(record), last=revision)
                )
            except nats.js.errors.KeyWrongLastSequenceError:
                return None

    async def update(
        self,
        call_id: str,
        change: Callable[[CallRecord], CallRecord],
        *,
        attempts: int = UPDATE_ATTEMPTS,
    ) -> Entry | None:
        """Apply ``change`` to the current record with compare-and-set, retrying on races.

        None when the call has no record (it ended, or a survivor reaped it):
        an update never brings a record back.
        """
        for _ in range(attempts):
            current = await self.get(call_id)
            if current is None:
                return None
            record = change(current.record)
            revision = await self.replace(record, current.revision)
            if revision is not None:
                return Entry(record, revision)
        raise RegistryError(f"update of {call_id}: still racing after {attempts} attempts")

    async def delete(self, call_id: str, revision: int | None = None) -> bool:
        """Remove the call's record; with ``revision``, only if still at it (False if not)."""
        async with self._guard("delete", call_id):
            try:
                await self._kv.delete(call_id, last=revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                return False
            except nats.js.errors.APIError as exc:
                if exc.err_code in _WRONG_LAST_SEQUENCE:
                    return False
                raise
            return True

    # --- many entries ---------------------------------------------------------------------

    async def list_all(self) -> list[Entry]:
        """Every record in the bucket (reads the whole bucket: for survivors, not per call)."""
        entries: list[Entry] = []
        try:
            async with asyncio.timeout(self._list_timeout):
                watcher = await self._kv.watchall(ignore_deletes=True)
                try:
                    while (item := await _next(watcher, self._op_timeout)) is not None:
                        if item.value is None or item.revision is None:
                            continue
                        try:
                            entries.append(_entry(item.value, item.revision, item.key))
                        except RegistryError as exc:
                            log.warning("skipped a bad registry entry: %s", exc)
                finally:
                    await watcher.stop()  # type: ignore[no-untyped-call]
        except (TimeoutError, nats.errors.Error) as exc:
            raise RegistryError(f"cannot list the registry: {exc!r}") from exc
        return entries

    async def list_by_owner(self, service: Source, instance_id: str) -> list[Entry]:
        """The records of calls held by ``instance_id`` of ``service``."""
        return [e for e in await self.list_all() if e.record.owner(service) == instance_id]

    # --- internals ----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _guard(self, op: str, call_id: str) -> AsyncIterator[None]:
        """One KV operation: under the timeout, any failure as ``RegistryError``."""
        try:
            async with asyncio.timeout(self._op_timeout):
                yield
        except TimeoutError as exc:
            raise RegistryError(f"{op} {call_id}: timed out") from exc
        except nats.errors.Error as exc:
            raise RegistryError(f"{op} {call_id}: {exc!r}") from exc


def _entry(value: bytes | None, revision: int | None, call_id: str) -> Entry:
    if value is None or revision is None:
        raise RegistryError(f"entry {call_id} without value or revision")
    try:
        return Entry(fleet.decode_record(value), int(revision))
    except fleet.DecodeError as exc:
        raise RegistryError(f"entry {call_id} is not a call record: {exc}") from exc


async def _next(watcher: KeyValue.KeyWatcher, timeout: float) -> KeyValue.Entry | None:
    """The watcher's next entry; None once it delivered what the bucket held."""
    entry: KeyValue.Entry | None = await watcher.updates(timeout=timeout)  # type: ignore[no-untyped-call]
    return entry
