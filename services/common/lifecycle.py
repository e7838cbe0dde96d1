"""Process lifecycle shared by the services: start-up, drain and stop.

``run_service(name, main)`` loads settings, sets up logs, tracing, metrics and
the ops endpoint, then runs ``main(lifecycle)``. Two ways out:

- SIGTERM **drains**: ``/readyz`` says 503, ``lifecycle.draining`` is set, the
  service stops taking new work, and its calls go on until they end; after
  ``DRAIN_TIMEOUT`` seconds ``lifecycle.stop`` is set and the rest are hung up.
- SIGINT **stops now**: both events are set at once; calls are hung up.

Every ``main`` has the same shape::

    bus = await lc.connect_bus()
    ...take work...
    lc.serve_load(lambda: active_calls, capacity)
    lc.set_ready()
    await lc.draining.wait()          # SIGTERM or SIGINT
    ...stop taking work...
    await lc.wait_idle(lambda: active_calls)   # until idle, or stop
    ...hang up what is left, close...

The process exits 0 after either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable

from nats.errors import NoServersError

from services.common import nats_auth
from services.common.bus import Bus, CredentialsRefused
from services.common.logs import setup_logging
from services.common.metrics import Metrics
from services.common.ops import OpsServer, ProcessState
from services.common.settings import Settings, SettingsError, load_settings, redact_url
from services.common.telemetry import setup_tracing, shutdown_tracing

log = logging.getLogger(__name__)

IDLE_POLL = 0.2
"Seconds between looks at the active call count while draining."


class Lifecycle:
    """What a service's ``main`` gets: settings, metrics, and the drain/stop events."""

    def __init__(self, service: str, settings: Settings, metrics: Metrics | None = None) -> None:
        self.service = service
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.state = ProcessState()
        "What the ops endpoint reports."
        self.draining = asyncio.Event()
        "Set on SIGTERM (and SIGINT): take no new work."
        self.stop = asyncio.Event()
        "Set on SIGINT or when DRAIN_TIMEOUT expires: end every call now."
        self._deadline: asyncio.TimerHandle | None = None

    # --- what main calls --------------------------------------------------------

    async def connect_bus(self) -> Bus:
        """Connect to NATS as this service's user, counting its errors and reporting its health."""
        settings = self.settings
        try:
            bus = await Bus.connect(
                settings.nats_url,
                name=f"{self.service}-{settings.instance_id}",
                metrics=self.metrics,
                options=nats_auth.connect_options(settings),
            )
        except CredentialsRefused:
            raise SettingsError(
                f"NATS at NATS_URL={redact_url(settings.nats_url)} refused "
                f"{nats_auth.describe(settings)}"
            ) from None
        self.state.bus_connected = lambda: bus.connected
        self.state.bus_lost_for = bus.disconnected_for
        return bus

    def serve_load(self, active: Callable[[], int], capacity: int | None = None) -> None:
        """Report ``active()`` calls (gauge and readiness) out of ``capacity`` at most."""
        self.state.active = active
        self.state.capacity = capacity
        self.metrics.track_active_calls(active)

    def serve_json(self, name: str, provider: Callable[[], object]) -> None:
        """Serve ``provider()`` as JSON at ``GET /<name>`` of the ops endpoint."""
        self.state.json_routes[name] = provider

    def set_ready(self) -> None:
        """The service takes work: ``/readyz`` may say 200."""
        self.state.started = True

    async def wait_idle(self, active: Callable[[], int]) -> bool:
        """Wait until ``active()`` is 0 (True) or ``stop`` is set (False)."""
        while active() > 0:
            if self.stop.is_set():
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), IDLE_POLL)
        return True

    # --- what the signals do ----------------------------------------------------

    def begin_drain(self) -> None:
        """SIGTERM: take no new work; stop after DRAIN_TIMEOUT."""
        if self.draining.is_set():
            return
        timeout = self.settings.drain_timeout
        log.info(
            "draining: no new calls; %d call(s) continue for up to %g s",
            self.state.active(),
            timeout,
        )
        self.state.draining = True
        self.draining.set()
        self._deadline = asyncio.get_running_loop().call_later(timeout, self._drain_expired)

    def stop_now(self) -> None:
        """SIGINT: end every call now."""
        if not self.stop.is_set():
            log.info("stopping now: ending %d call(s)", self.state.active())
        self.state.draining = True
        self.draining.set()
        self.stop.set()

    def _drain_expired(self) -> None:
        log.info("DRAIN_TIMEOUT passed: ending %d call(s)", self.state.active())
        self.stop.set()

    def close(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None


Main = Callable[[Lifecycle], Awaitable[None]]


FAST_LOOP_SERVICES = frozenset({"media"})
"Services whose every RTP packet is an event-loop wake-up: they run on uvloop when installed."


def event_loop_factory(service: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop for the media tier (a C event loop: a fraction of asyncio's cost per
    datagram); None, asyncio's own, for the others or without uvloop."""
    if service not in FAST_LOOP_SERVICES:
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_service(service: str, main: Main) -> int:
    """Load settings, then run ``main(lifecycle)`` until it returns after a signal.

    Returns the process exit code: 2 for a bad setting, 1 when NATS or a port
    cannot be had, 0 after a drain or a stop.
    """
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"bridge {service}: {exc}", file=sys.stderr)
        return 2
    setup_logging(service, settings.log_level, settings.log_format)
    setup_tracing(service, settings.otlp_endpoint)

    async def runner() -> None:
        lifecycle = Lifecycle(service, settings, Metrics(process_metrics=True))
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, lifecycle.begin_drain)
        loop.add_signal_handler(signal.SIGINT, lifecycle.stop_now)
        ops = OpsServer(lifecycle.state, lifecycle.metrics)
        await ops.start(settings.ops_host, settings.ops_port)
        try:
            await main(lifecycle)
        finally:
            lifecycle.close()
            await ops.close()
            # Queued spans leave now; the exporter blocks, so not on the loop.
            await asyncio.to_thread(shutdown_tracing)

    try:
        with asyncio.Runner(loop_factory=event_loop_factory(service)) as loop_runner:
            loop_runner.run(runner())
    except SettingsError as exc:
        print(f"bridge {service}: {exc}", file=sys.stderr)
        return 2
    except NoServersError:
        print(
            f"bridge {service}: cannot reach NATS at NATS_URL={redact_url(settings.nats_url)}",
            file=sys.stderr,
        )
        return 1
    except OSError as exc:
        # A port in use or an unreachable NATS: one line, not a traceback.
        print(f"bridge {service}: {exc}", file=sys.stderr)
        return 1
    return 0
