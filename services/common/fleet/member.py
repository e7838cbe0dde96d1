"""One process's part in the fleet: heartbeats, leases, the registry and a reaper.

Every service's ``main`` makes one ``FleetMember`` after ``Bus.connect`` and
starts it before subscribing to work, so no record names an instance not
heard of yet; it closes it after its calls ended, so the lease is held while
draining. Order of ``start`` (and, reversed, of ``close``): lease listener,
heartbeat publisher, registry, reaper loop.

The registry is best effort: when JetStream cannot be reached at start the
process runs without it and keeps trying to open it in the background; every
write logs a failure and returns, and after a failure the writes of the next
``BACKOFF`` seconds are skipped rather than each waiting for its timeout (a
JetStream cluster that lost a stream's leader takes 4-9 s to elect another;
calls set up meanwhile must not wait on it). A call never fails because of the
registry (its record is then missing, and its owner's death is not covered).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable

from proto.fleet import CallRecord
from proto.subjects import Source
from services.common.bus import Bus
from services.common.fleet.heartbeat import HeartbeatPublisher, LeaseListener, Load
from services.common.fleet.leases import LeaseTable
from services.common.fleet.reaper import Action, Publish, Reaper, SendBye
from services.common.fleet.reaping import ReaperLoop
from services.common.fleet.registry import CallRegistry, RegistryError
from services.common.nats_access import may_publish
from services.common.settings import Settings

log = logging.getLogger(__name__)

REOPEN_INTERVAL = 5.0
"Seconds between attempts to open the registry after it could not be opened."
BACKOFF = 5.0
"Seconds registry writes are skipped after one failed."

ByeSender = Callable[[SendBye], Awaitable[None]]


class FleetMember:
    """The fleet adapters of one service instance, started and closed together."""

    def __init__(
        self,
        bus: Bus,
        service: Source,
        settings: Settings,
        *,
        load: Callable[[], Load],
        holds: Callable[[str], bool],
        send_bye: ByeSender | None = None,
    ) -> None:
        """``load()``: what the heartbeats say; ``holds(call_id)``: whether this
        process holds the call; ``send_bye``: a SIP agent's way to end a dead
        peer's dialog (other services cannot)."""
        self.service = service
        self.instance_id = settings.instance_id
        self._bus = bus
        self._settings = settings
        self._holds = holds
        self._send_bye = send_bye
        loop = asyncio.get_running_loop()
        self.leases = LeaseTable(now=loop.time(), lease=settings.lease_timeout)
        "Who is alive, from every service's heartbeats (signaling places calls with it)."
        self._listener = LeaseListener(bus.client, self.leases)
        self._beat = HeartbeatPublisher(
            bus.client, service, self.instance_id, load, interval=settings.heartbeat_interval
        )
        self._started_wall = time.time()
        self._registry: CallRegistry | None = None
        self._failed_at: float | None = None
        "When a registry write last failed (loop time)."
        self._reaper_loop: ReaperLoop | None = None
        self._opener: asyncio.Task[None] | None = None

    # --- start and stop -------------------------------------------------------------

    async def start(self) -> None:
        """Listen to heartbeats, beat, open the registry and start reaping."""
        await self._listener.start()
        self._beat.start()
        if not await self._open_registry():
            self._opener = asyncio.create_task(self._keep_opening(), name="registry-open")

    async def beat(self) -> None:
        """Send a heartbeat now (as draining starts, so placement stops at once)."""
        await self._beat.beat()

    async def close(self) -> None:
        """Stop in the reverse order: reaper, heartbeats (the lease runs out), listener."""
        opener, self._opener = self._opener, None
        if opener is not None:
            opener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await opener
        if self._reaper_loop is not None:
            await self._reaper_loop.close()
        await self._beat.close()
        await self._listener.close()

    @property
    def registry(self) -> CallRegistry | None:
        """The call registry, once open (``bridge calls`` reads it through signaling)."""
        return self._registry

    # --- records: best effort ------------------------------------------------------

    async def create(self, record: CallRecord) -> None:
        registry = self._writable(record.call_id)
        if registry is None:
            return
        try:
            await registry.create(record)
        except RegistryError as exc:
            self._failed(record.call_id, "created", exc)

    async def update(self, call_id: str, change: Callable[[CallRecord], CallRecord]) -> None:
        registry = self._writable(call_id)
        if registry is None:
            return
        try:
            await registry.update(call_id, change)
        except RegistryError as exc:
            self._failed(call_id, "updated", exc)

    async def delete(self, call_id: str) -> None:
        registry = self._writable(call_id)
        if registry is None:
            return
        try:
            await registry.delete(call_id)
        except RegistryError as exc:
            self._failed(call_id, "deleted", exc)

    # --- internals ----------------------------------------------------------------------

    def _writable(self, call_id: str) -> CallRegistry | None:
        """The registry, unless it is not open or failed less than ``BACKOFF`` ago."""
        if self._registry is None:
            return None
        now = asyncio.get_running_loop().time()
        if self._failed_at is not None and now < self._failed_at + BACKOFF:
            log.info("call %s: registry write skipped (it failed recently)", call_id)
            return None
        return self._registry

    def _failed(self, call_id: str, what: str, exc: RegistryError) -> None:
        self._failed_at = asyncio.get_running_loop().time()
        log.warning(
            "call %s: record not %s (writes skipped for %g s): %s", call_id, what, BACKOFF, exc
        )

    async def _open_registry(self) -> bool:
        try:
            registry = await CallRegistry.open(
                self._bus.client, replicas=self._settings.kv_replicas
            )
        except RegistryError as exc:
            log.warning("call registry unavailable, calls are not covered if we die: %s", exc)
            return False
        self._registry = registry
        loop = asyncio.get_running_loop()
        reaper = Reaper(
            (self.service, self.instance_id),
            self.leases,
            now=loop.time(),
            started_wall=self._started_wall,
            holds=self._holds,
            may_publish=functools.partial(may_publish, self.service),
        )
        self._reaper_loop = ReaperLoop(reaper, registry, self._perform)
        self._reaper_loop.start()
        return True

    async def _keep_opening(self) -> None:
        while True:
            await asyncio.sleep(REOPEN_INTERVAL)
            if await self._open_registry():
                log.info("call registry open")
                return

    async def _perform(self, action: Action) -> None:
        if isinstance(action, Publish):
            await self._bus.publish(action.subject, action.event)
        elif self._send_bye is not None:
            await self._send_bye(action)
        else:
            log.warning("call %s: a BYE is owed but only a SIP agent sends it", action.call_id)
