"""The NATS adapter: typed events in, typed events out, trace context in headers.

Services never touch raw NATS messages; they publish ``proto`` events and
receive them in handlers that run inside the sender's trace context.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoServersError
from opentelemetry import context as otel_context

from proto import codec, subjects
from proto.events import AnyEvent
from proto.subjects import Source
from services.common.logs import call_context
from services.common.metrics import Metrics
from services.common.nats_auth import ConnectOptions, refused
from services.common.settings import nats_urls
from services.common.telemetry import extract_context, inject_headers

log = logging.getLogger(__name__)

Handler = Callable[[AnyEvent], Awaitable[None]]

DRAIN_TIMEOUT = 2.0
"Seconds close() spends delivering what is pending before it just closes."

FIRST_CONNECT_TIMEOUT = 15.0
"Seconds a process waits for NATS at start-up (it may start before NATS does)."


class CredentialsRefused(Exception):
    """NATS refused this process's credentials (or their absence) at the first connection."""


class _Health:
    """What the NATS callbacks saw: when the connection was lost, how many errors."""

    def __init__(self, metrics: Metrics | None) -> None:
        self.closing = asyncio.Event()
        "Set by close(), so a deliberate disconnect is not reported as a fault."
        self.lost_at: float | None = None
        self.metrics = metrics

    def error(self) -> None:
        if self.metrics is not None:
            self.metrics.nats_errors.inc()


class Bus:
    """One NATS connection of one service instance."""

    def __init__(self, nc: Client, health: _Health | None = None) -> None:
        self._nc = nc
        self._health = health or _Health(None)

    @classmethod
    async def connect(
        cls,
        url: str,
        name: str,
        metrics: Metrics | None = None,
        options: ConnectOptions | None = None,
    ) -> Bus:
        """Connect to ``url`` with the credentials and TLS of ``options``.

        Raises ``NoServersError`` when no server answers in FIRST_CONNECT_TIMEOUT,
        ``CredentialsRefused`` as soon as a server refuses the credentials.
        """
        health = _Health(metrics)
        loop = asyncio.get_running_loop()
        rejected = asyncio.Event()

        async def on_error(exc: Exception) -> None:
            health.error()
            if refused(exc) and not connected.done():
                rejected.set()  # said once, below
                return
            log.warning("nats error: %s", exc)

        async def on_disconnected() -> None:
            if not health.closing.is_set():
                health.error()
                health.lost_at = health.lost_at or loop.time()
                log.warning("nats disconnected, reconnecting")

        async def on_reconnected() -> None:
            health.lost_at = None
            log.info("nats reconnected")

        # Reconnection after a loss is unbounded, but the first connection is
        # not: a process that never reaches NATS says so and exits.
        connected = asyncio.ensure_future(
            nats.connect(
                nats_urls(url),
                name=name,
                connect_timeout=5,
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
                **(options or {}),
            )
        )
        refusal = asyncio.ensure_future(rejected.wait())
        try:
            await asyncio.wait(
                {connected, refusal},
                timeout=FIRST_CONNECT_TIMEOUT,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            refusal.cancel()
            if not connected.done():
                connected.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await connected
        if connected.cancelled():
            # A refusal ends the wait at once: retrying the same credentials is pointless.
            raise CredentialsRefused() if rejected.is_set() else NoServersError()
        return cls(connected.result(), health)

    @property
    def client(self) -> Client:
        """The NATS client itself, for the fleet's JetStream and raw subjects."""
        return self._nc

    @property
    def connected(self) -> bool:
        return bool(self._nc.is_connected)

    def disconnected_for(self, now: float) -> float:
        """Seconds the connection has been lost (0 while connected), on the loop's clock."""
        if self.connected:
            return 0.0
        lost_at = self._health.lost_at
        return 0.0 if lost_at is None else max(0.0, now - lost_at)

    async def publish(self, subject: str, event: AnyEvent) -> None:
        """Publish ``event``, carrying the current trace context in headers."""
        try:
            await self._nc.publish(subject, codec.encode(event), headers=inject_headers())
        except Exception:
            self._health.error()
            raise

    async def subscribe(self, subject: str, handler: Handler, queue: str = "") -> Subscription:
        """Call ``handler`` for each event on ``subject``, in order.

        Handlers of one subscription run one at a time: a handler with long
        work should start its own task. Unsubscribing from inside the same
        subscription's handler cancels that handler: do it from another task.
        A message that is not a valid event is logged and dropped; an
        exception in a handler is logged, never fatal.
        """

        async def on_message(msg: Msg) -> None:
            try:
                event = codec.decode(msg.data)
            except codec.DecodeError as exc:
                log.warning("dropped invalid event on %s: %s", msg.subject, exc)
                return
            token = otel_context.attach(extract_context(msg.headers))
            try:
                with call_context(event.call_id):
                    await handler(event)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("handler for %s failed on %s", type(event).__name__, msg.subject)
            finally:
                otel_context.detach(token)

        return await self._nc.subscribe(subject, queue=queue, cb=on_message)

    async def announce_ready(self, service: Source) -> None:
        """Answer readiness probes once this instance's subscriptions are live."""

        async def on_probe(msg: Msg) -> None:
            await msg.respond(b"")

        await self._nc.subscribe(subjects.ready(service), cb=on_probe)
        await self._nc.flush()

    async def flush(self, timeout: int = 2) -> None:
        await self._nc.flush(timeout=timeout)

    async def close(self) -> None:
        """Deliver what is pending, then close."""
        self._health.closing.set()
        if self._nc.is_closed:
            return
        try:
            # Draining needs the server; when NATS is gone it would wait forever.
            await asyncio.wait_for(self._nc.drain(), DRAIN_TIMEOUT)
        except Exception:
            await self._nc.close()


async def drain_subscription(subscription: Subscription) -> None:
    """Take no more messages on ``subscription``, but handle those it already got."""
    try:
        await subscription.drain()  # type: ignore[no-untyped-call]
    except Exception as exc:  # a closed or lost bus has nothing left to deliver
        log.debug("draining a subscription failed: %s", exc)


async def wait_ready(
    url: str,
    services: tuple[Source, ...],
    timeout: float,
    options: ConnectOptions | None = None,
) -> bool:
    """True once one instance of each of ``services`` answers on the bus.

    ``options``: credentials allowed to ask (``nats_access``: the ``admin`` user).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    nc: Client | None = None

    async def quiet(exc: Exception) -> None:
        pass  # failed attempts are retried until the deadline

    try:
        while nc is None:
            try:
                nc = await nats.connect(
                    nats_urls(url),
                    connect_timeout=1,
                    max_reconnect_attempts=0,
                    error_cb=quiet,
                    **(options or {}),
                )
            except Exception:
                if loop.time() > deadline:
                    return False
                await asyncio.sleep(0.2)
        for service in services:
            while True:
                try:
                    await nc.request(subjects.ready(service), b"", timeout=0.5)
                    break
                except Exception:
                    if loop.time() > deadline:
                        return False
                    await asyncio.sleep(0.1)
        return True
    finally:
        if nc is not None:
            await nc.close()
