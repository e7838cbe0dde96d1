"""The media worker process: takes calls from the work queue and runs their media.

Each ``CallRequested`` becomes a ``MediaCall`` set up in a task of its own, so
the work handler returns at once. Work arrives on the media queue group and on
this worker's own subject (signaling's placement chose it). A worker at
``MAX_CALLS`` or draining declines with ``CallDeclined`` and signaling offers
the call to another one.

The trunk SDP advertises, in order: PUBLIC_IP; RTP_BIND_HOST when it is a
specific address; else the local address the kernel would use toward the
SIP trunk (127.0.0.1 for a trunk on loopback, the LAN address for a LAN
trunk, the default-route address otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Coroutine
from typing import Any

from proto import errors, subjects
from proto.events import AnyEvent, CallDeclined, CallRequested, HangupRequested
from services.common.bus import Bus, drain_subscription
from services.common.fleet import placement
from services.common.fleet.heartbeat import Load
from services.common.fleet.member import FleetMember
from services.common.lifecycle import Lifecycle
from services.common.metrics import Metrics
from services.common.settings import Settings, local_address_toward
from services.media.browser_transport import gather_on
from services.media.call import MediaCall
from services.media.call_listing import LatestStats, answer_call_stats
from services.media.ports import PortAllocator

log = logging.getLogger(__name__)

_NO_ROUTE_PROBE = "192.0.2.1"  # TEST-NET-1: only asks the kernel for its default route

RTP_REPORT_INTERVAL = 5.0
"Seconds between additions of the calls' RTP counters to the metrics."


async def advertised_address(settings: Settings) -> str:
    """The address the trunk should send RTP to (see module doc)."""
    if settings.public_ip:
        return settings.public_ip
    try:
        bind = ipaddress.ip_address(settings.rtp_bind_host)
    except ValueError:
        bind = None
    if bind is not None and not bind.is_unspecified:
        return str(bind)
    target = settings.sip_trunk_host or _NO_ROUTE_PROBE
    # A trunk host name is resolved here: keep it off the event loop.
    return await asyncio.to_thread(local_address_toward, target, settings.sip_trunk_port or 5060)


class MediaWorker:
    """The calls of this process."""

    def __init__(
        self,
        settings: Settings,
        bus: Bus,
        ports: PortAllocator,
        address: str,
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self._settings = settings
        self._bus = bus
        self._ports = ports
        self._address = address
        self._metrics = metrics
        self._calls: dict[str, MediaCall] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._reporter: asyncio.Task[None] | None = None
        self.stats = LatestStats()
        "Each call's latest figures, for ``bridge calls``."
        self.draining = False
        "Set once the worker takes no new call (it declines them)."

    def start_reporting(self, interval: float = RTP_REPORT_INTERVAL) -> None:
        """Add every call's RTP counters to the metrics each ``interval`` seconds."""
        if self._reporter is None:
            self._reporter = asyncio.create_task(self._report_every(interval))

    async def _report_every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            for call in list(self._calls.values()):
                event = call.report()
                if event is not None:
                    self.stats.keep(event, time.time())

    @property
    def active_calls(self) -> int:
        return len(self._calls)

    def load(self) -> Load:
        """What this worker's heartbeats say."""
        return Load(len(self._calls), self._settings.max_calls, self.draining)

    def holds(self, call_id: str) -> bool:
        return call_id in self._calls

    def call_ids(self) -> list[str]:
        """The calls this worker carries now."""
        return list(self._calls)

    async def on_work(self, event: AnyEvent) -> None:
        if not isinstance(event, CallRequested):
            return
        if event.call_id in self._calls:
            log.warning("call %s: duplicate CallRequested ignored", event.call_id)
            return
        code = placement.decline_code(len(self._calls), self._settings.max_calls, self.draining)
        if code is not None:
            log.warning("call %s declined: %s, %d call(s)", event.call_id, code, len(self._calls))
            declined = CallDeclined(
                call_id=event.call_id, media_id=self._settings.instance_id, code=code
            )
            self._spawn(self._bus.publish(subjects.call_events(event.call_id, "media"), declined))
            return
        call = MediaCall(
            event.call_id,
            self._settings,
            self._bus,
            self._ports,
            self._address,
            self._forget,
            metrics=self._metrics,
        )
        self._calls[event.call_id] = call
        self._spawn(call.setup(event))

    def _forget(self, call: MediaCall) -> None:
        if self._calls.get(call.call_id) is call:
            del self._calls[call.call_id]
            self.stats.forget(call.call_id)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("media task failed", exc_info=task.exception())

    async def close(self) -> None:
        """Ask for every call to end, then release them all."""
        if self._reporter is not None:
            self._reporter.cancel()
            await asyncio.gather(self._reporter, return_exceptions=True)
            self._reporter = None
        calls = list(self._calls.values())
        for call in calls:
            with contextlib.suppress(Exception):
                await self._bus.publish(
                    subjects.call_events(call.call_id, "media"),
                    HangupRequested(call_id=call.call_id, cause=errors.MEDIA_SHUTDOWN),
                )
        await asyncio.gather(*(call.release("shutdown") for call in calls))
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def main(lc: Lifecycle) -> None:
    """Serve calls from the media work queue; drain on SIGTERM, stop on SIGINT."""
    settings = lc.settings
    address = await advertised_address(settings)
    ports = PortAllocator(settings.rtp_port_min, settings.rtp_port_max, host=settings.rtp_bind_host)
    gather_on(settings.rtp_bind_host)
    bus = await lc.connect_bus()
    worker = MediaWorker(settings, bus, ports, address, metrics=lc.metrics)
    lc.serve_load(lambda: worker.active_calls, settings.max_calls)
    fleet = FleetMember(bus, "media", settings, load=worker.load, holds=worker.holds)
    try:
        await fleet.start()
        work = await bus.subscribe(
            subjects.media_work(), worker.on_work, queue=subjects.MEDIA_QUEUE
        )
        # Calls placed on this very worker; kept while draining, to decline them.
        await bus.subscribe(subjects.media_work_for(settings.instance_id), worker.on_work)
        await answer_call_stats(bus, settings.instance_id, worker.stats, worker.call_ids)
        await bus.announce_ready("media")
        worker.start_reporting()
        lc.set_ready()
        log.info(
            "media worker %s ready: trunk RTP on %s ports %d-%d advertised as %s, max %d calls",
            settings.instance_id,
            settings.rtp_bind_host,
            settings.rtp_port_min,
            settings.rtp_port_max,
            address,
            settings.max_calls,
        )
        await lc.draining.wait()
        worker.draining = True
        await fleet.beat()
        # A call still routed here is declined, and signaling offers it elsewhere.
        await drain_subscription(work)
        if await lc.wait_idle(lambda: worker.active_calls):
            log.info("media worker %s drained: no call left", settings.instance_id)
        await worker.close()
    finally:
        await fleet.close()
        await bus.close()
    log.info("media worker %s stopped", settings.instance_id)
