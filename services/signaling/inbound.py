"""Drives the process's ``Switchboard`` from the bus and one timer.

Only I/O lives here: the users' and the ringing calls' subjects are
subscribed and unsubscribed as the switchboard says, their events go into
it, its messages (and the events it forwards) for a socket go to that
socket's connection, and a single
``loop.call_at`` timer is re-armed from ``get_timer()`` after every step.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from nats.aio.subscription import Subscription

from proto.events import AnyEvent
from services.common.bus import Bus
from services.signaling import messages
from services.signaling.actions import Deliver, Publish, Subscribe, Unsubscribe
from services.signaling.ringing import Forward, RingAction
from services.signaling.switchboard import Switchboard

log = logging.getLogger(__name__)


class Socket(Protocol):
    """What the link needs of a browser connection."""

    def deliver(self, message: messages.Outgoing) -> None: ...

    def forward(self, event: AnyEvent) -> None: ...


class InboundLink:
    def __init__(self, switchboard: Switchboard, bus: Bus) -> None:
        self.switchboard = switchboard
        self._bus = bus
        self._lock = asyncio.Lock()
        self._sockets: dict[str, Socket] = {}
        self._subscriptions: dict[str, Subscription] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def attach(self, socket_id: str, socket: Socket) -> None:
        self._sockets[socket_id] = socket

    def detach(self, socket_id: str) -> None:
        self._sockets.pop(socket_id, None)

    def kick(self) -> None:
        """A session may have changed the switchboard: carry out what it wants."""
        if not self._closed:
            task = self._loop.create_task(self._flush())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def drain(self) -> None:
        """Ring no browser here for calls arriving from now on."""
        self.switchboard.drain()

    async def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        async with self._lock:
            for subscription in self._subscriptions.values():
                try:
                    await subscription.unsubscribe()
                except Exception as exc:  # best effort on the way out
                    log.debug("unsubscribe failed: %s", exc)
            self._subscriptions.clear()

    async def _on_event(self, event: AnyEvent) -> None:
        self.switchboard.receive(event, self._loop.time())
        # Not awaited: an Unsubscribe of this very subscription would cancel this task.
        self.kick()

    def _on_timer(self) -> None:
        self._timer = None
        self.switchboard.handle_timer(self._loop.time())
        self.kick()

    async def _flush(self) -> None:
        async with self._lock:
            while not self._closed and (actions := self.switchboard.pop_actions()):
                for action in actions:
                    await self._perform(action)
            self._arm_timer()

    async def _perform(self, action: RingAction) -> None:
        try:
            if isinstance(action, Deliver):
                socket = self._sockets.get(action.socket)
                if socket is not None:
                    socket.deliver(action.message)
            elif isinstance(action, Forward):
                socket = self._sockets.get(action.socket)
                if socket is not None:
                    socket.forward(action.event)
            elif isinstance(action, Publish):
                await self._bus.publish(action.subject, action.event)
            elif isinstance(action, Subscribe):
                if action.subject not in self._subscriptions:
                    self._subscriptions[action.subject] = await self._bus.subscribe(
                        action.subject, self._on_event
                    )
            elif isinstance(action, Unsubscribe):
                subscription = self._subscriptions.pop(action.subject, None)
                if subscription is not None:
                    await subscription.unsubscribe()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one failed action must not stop the rest
            log.warning("inbound: %s failed: %s", type(action).__name__, exc)

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.switchboard.get_timer()
        if deadline is not None and not self._closed:
            self._timer = self._loop.call_at(deadline, self._on_timer)
