"""Heartbeats on the bus: publish this instance's, feed everyone's into a ``LeaseTable``.

Heartbeats are plain NATS messages (no JetStream): they only matter while
they are fresh. A publisher that lost its connection sends nothing rather
than a burst of stale heartbeats after reconnecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from proto import fleet, subjects
from proto.fleet import Heartbeat
from proto.subjects import Source
from services.common.fleet.leases import HEARTBEAT_INTERVAL, LeaseTable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Load:
    """What an instance reports about itself in each heartbeat."""

    active_calls: int
    max_calls: int
    draining: bool = False


class HeartbeatPublisher:
    """Publishes this instance's heartbeat every ``interval`` seconds."""

    def __init__(
        self,
        nc: Client,
        service: Source,
        instance_id: str,
        load: Callable[[], Load],
        *,
        interval: float = HEARTBEAT_INTERVAL,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._nc = nc
        self._service = service
        self._instance_id = instance_id
        self._load = load
        self._interval = interval
        self._wall = wall
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start beating (the first heartbeat goes out at once)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"heartbeat-{self._service}")

    async def beat(self) -> None:
        """Publish one heartbeat now (e.g. as draining starts); errors are logged."""
        if not self._nc.is_connected:
            return
        load = self._load()
        heartbeat = Heartbeat(
            service=self._service,
            instance_id=self._instance_id,
            active_calls=load.active_calls,
            max_calls=load.max_calls,
            draining=load.draining,
            sent_at=self._wall(),
        )
        try:
            await self._nc.publish(subjects.heartbeat(self._service), fleet.encode(heartbeat))
        except Exception as exc:  # the next beat tries again
            log.debug("heartbeat not sent: %s", exc)

    async def close(self) -> None:
        """Stop beating: the lease runs out ``lease`` seconds after the last heartbeat."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await self.beat()
            await asyncio.sleep(self._interval)


class LeaseListener:
    """Feeds every service's heartbeats into ``leases`` with their arrival time."""

    def __init__(
        self,
        nc: Client,
        leases: LeaseTable,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._nc = nc
        self._leases = leases
        self._clock = clock
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        clock = self._clock or asyncio.get_running_loop().time

        async def on_message(msg: Msg) -> None:
            try:
                heartbeat = fleet.decode_heartbeat(msg.data)
            except fleet.DecodeError as exc:
                log.warning("dropped invalid heartbeat on %s: %s", msg.subject, exc)
                return
            self._leases.observe(heartbeat, clock())

        self._subscription = await self._nc.subscribe(subjects.heartbeats(), cb=on_message)

    async def close(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
