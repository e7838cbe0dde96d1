"""Runs a ``Reaper`` against the registry: scans, claims, actions, deletes.

One task per instance. Each round it lets the reaper collect expired leases,
reads the records each scan asks for, and for each ``Plan`` claims the call
with compare-and-set, carries out the actions with ``perform`` (the service
publishes on the bus, or sends the BYE) and deletes the record at the
claimed revision. A claim lost to another survivor is simply skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from services.common.fleet import records
from services.common.fleet.reaper import Action, Plan, Reaper, Scan
from services.common.fleet.registry import CallRegistry, Entry, RegistryError

log = logging.getLogger(__name__)

TICK = 1.0
"Longest sleep between two rounds (the reaper's timers are usually sooner)."

Perform = Callable[[Action], Awaitable[None]]


class ReaperLoop:
    """The asyncio side of one ``Reaper``."""

    def __init__(
        self,
        reaper: Reaper,
        registry: CallRegistry,
        perform: Perform,
        *,
        clock: Callable[[], float] | None = None,
        wall: Callable[[], float] = time.time,
        tick: float = TICK,
    ) -> None:
        self._reaper = reaper
        self._registry = registry
        self._perform = perform
        self._clock = clock
        self._wall = wall
        self._tick = tick
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="reaper")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def step(self) -> list[str]:
        """One round now; the ids of the calls this instance ended."""
        now = self._now()
        self._reaper.handle_timer(now)
        reaped: list[str] = []
        for scan in self._reaper.pop_scans(now):
            try:
                entries = await self._registry.list_all()
            except RegistryError as exc:
                log.warning("reaper: cannot read the registry: %s", exc)
                self._reaper.scan_failed(scan)
                continue
            for entry in entries:
                if scan is not None and not records.involves(entry.record, scan):
                    continue
                plan = self._reaper.plan(entry.record, self._now(), self._wall())
                if plan is not None and await self._carry_out(plan, entry, scan):
                    reaped.append(plan.call_id)
        return reaped

    async def _carry_out(self, plan: Plan, entry: Entry, scan: Scan) -> bool:
        try:
            revision = await self._registry.replace(plan.claim, entry.revision)
        except RegistryError as exc:
            log.warning("call %s: cannot claim it: %s", plan.call_id, exc)
            self._reaper.scan_failed(scan)
            return False
        if revision is None:
            log.debug("call %s: another survivor claimed it", plan.call_id)
            return False
        log.warning("call %s: %s: ending it", plan.call_id, plan.reason)
        for action in plan.actions:
            try:
                await self._perform(action)
            except Exception:  # one failed action must not stop the rest
                log.exception("call %s: %s failed", plan.call_id, type(action).__name__)
        try:
            await self._registry.delete(plan.call_id, revision=revision)
        except RegistryError as exc:
            # Still claimed by us: the next sweep finds it and tries again.
            log.warning("call %s: record not deleted: %s", plan.call_id, exc)
        return True

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    async def _run(self) -> None:
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reaper round failed")
            timer = self._reaper.get_timer()
            delay = self._tick if timer is None else min(max(timer - self._now(), 0.0), self._tick)
            await asyncio.sleep(max(delay, 0.01))
