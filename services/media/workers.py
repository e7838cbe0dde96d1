"""``bridge media --workers N``: N single-event-loop media workers under one parent.

The parent takes no call. It starts each worker as ``python -m services.media``
with the settings of its ``WorkerSpec`` (``worker_plan.py``), each a fleet
member of its own, and:

- passes SIGTERM (drain) and SIGINT (stop now) on to every worker, and exits
  once all have exited: 0 when each stopped cleanly, 1 when one had to be
  killed (still running ``DRAIN_TIMEOUT`` + ``DRAIN_MARGIN`` s after SIGTERM,
  ``STOP_TIMEOUT`` s after SIGINT);
- restarts a worker that exits on its own, under the same instance id and
  ports, after ``restart_delay`` (1 s, doubling while it keeps dying young, at
  most 30 s), with one log line. A worker exiting with code 2 (a bad setting)
  is not restarted: every worker is stopped and the parent exits 2. Why
  restart in place rather than exit: ``docs/decisions.md``.

Workers die with the parent (``children.die_with_parent``). With one worker
there is no parent: ``main`` runs the worker in this process, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence

from services.common import children
from services.common.children import Child
from services.common.logs import setup_logging
from services.common.settings import SettingsError, load_settings
from services.media.worker_plan import WorkerSpec, plan_workers

log = logging.getLogger(__name__)

WORKER_ARGV = (sys.executable, "-m", "services.media")
"How a worker is started: this interpreter, one media process."

STOP_TIMEOUT = 6.0
"Seconds workers get after SIGINT before they are killed (``bridge up`` waits 8 for us)."
DRAIN_MARGIN = 15.0
"Seconds beyond DRAIN_TIMEOUT workers get after SIGTERM to hang up and close."
FIRST_RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 30.0
STABLE_AFTER = 60.0
"A worker that ran this long before it died is restarted after the first delay again."

_CLEAN_EXITS = (0, -signal.SIGTERM, -signal.SIGINT)
"Exit codes after a stop we passed on (killed by it before its handlers were set up)."


def restart_delay(failures: int) -> float:
    """Seconds before a restart, after ``failures`` deaths in a row (1 for the first)."""
    return min(FIRST_RESTART_DELAY * 2.0 ** max(failures - 1, 0), MAX_RESTART_DELAY)


def failures_after(failures: int, uptime: float) -> int:
    """Deaths in a row once a worker died after ``uptime`` seconds."""
    return 1 if uptime >= STABLE_AFTER else failures + 1


class WorkerPool:
    """Runs and restarts the workers of ``specs``; stops them on a signal."""

    def __init__(
        self,
        specs: Sequence[WorkerSpec],
        environ: Mapping[str, str],
        *,
        drain_timeout: float,
        argv: Sequence[str] = WORKER_ARGV,
    ) -> None:
        self._specs = list(specs)
        self._environ = dict(environ)
        self._drain_timeout = drain_timeout
        self._argv = list(argv)
        self._children: dict[int, Child] = {}
        self._last_codes: dict[int, int] = {}
        self._stop_signal: int | None = None
        self._stopping = asyncio.Event()
        self._kill_timer: asyncio.TimerHandle | None = None
        self._killed = False
        self._fatal: int | None = None

    async def run(self) -> int:
        """Until every worker has exited after a stop; the exit code of the parent."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop, sig)
        try:
            await asyncio.gather(*(self._keep(spec) for spec in self._specs))
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            if self._kill_timer is not None:
                self._kill_timer.cancel()
        if self._fatal is not None:
            return self._fatal
        unclean = {i: c for i, c in self._last_codes.items() if c not in _CLEAN_EXITS}
        if self._killed or unclean:
            log.warning("media workers stopped; exit codes %s", self._last_codes)
            return 1
        log.info("media workers stopped")
        return 0

    def stop(self, sig: int) -> None:
        """Pass ``sig`` (SIGTERM drains, SIGINT stops now) to every worker; restart none."""
        if sig == signal.SIGINT or self._stop_signal is None:
            self._stop_signal = sig
        self._stopping.set()
        alive = [child for child in self._children.values() if child.alive]
        log.info("%s: passed on to %d media worker(s)", signal.Signals(sig).name, len(alive))
        for child in alive:
            child.send(sig)
        grace = self._drain_timeout + DRAIN_MARGIN if sig == signal.SIGTERM else STOP_TIMEOUT
        loop = asyncio.get_running_loop()
        kill_at = loop.time() + grace
        if self._kill_timer is None or kill_at < self._kill_timer.when():
            if self._kill_timer is not None:
                self._kill_timer.cancel()
            self._kill_timer = loop.call_at(kill_at, self._kill_all, grace)

    def _kill_all(self, grace: float) -> None:
        alive = [child for child in self._children.values() if child.alive]
        if alive:
            log.warning("%d media worker(s) still running after %g s: killed", len(alive), grace)
            self._killed = True
        for child in alive:
            child.send(signal.SIGKILL)

    async def _keep(self, spec: WorkerSpec) -> None:
        """Run one worker until a stop, restarting it whenever it exits on its own."""
        loop = asyncio.get_running_loop()
        env = dict(self._environ, **spec.environ())
        failures = 0
        while self._stop_signal is None:
            try:
                child = await children.spawn(spec.instance_id, self._argv, env)
            except OSError as exc:
                log.error("media worker %s cannot start: %s", spec.instance_id, exc)
                self._fail(1)
                return
            self._children[spec.index] = child
            log.info(
                "media worker %s started: pid %d, RTP ports %d-%d, ops port %s",
                spec.instance_id,
                child.process.pid,
                spec.rtp_port_min,
                spec.rtp_port_max,
                spec.ops_port or "free",
            )
            if self._stop_signal is not None:  # came while it was being started
                child.send(self._stop_signal)
            code = await child.process.wait()
            self._last_codes[spec.index] = code
            if self._stop_signal is not None:
                return
            if code == 2:
                log.error("media worker %s: a bad setting (exit code 2)", spec.instance_id)
                self._fail(2)
                return
            uptime = loop.time() - child.started_at
            failures = failures_after(failures, uptime)
            delay = restart_delay(failures)
            log.warning(
                "media worker %s (pid %d) exited with code %d after %.1f s; restarting it in %g s",
                spec.instance_id,
                child.process.pid,
                code,
                uptime,
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    def _fail(self, code: int) -> None:
        if self._fatal is None:
            self._fatal = code
        self.stop(signal.SIGINT)


def main(workers: int | None = None) -> int:
    """``bridge media [--workers N]``: the exit code (2 for a bad setting)."""
    try:
        settings = load_settings()
        count = workers or settings.media_workers
        specs = plan_workers(settings, count)
    except SettingsError as exc:
        print(f"bridge media: {exc}", file=sys.stderr)
        return 2
    if count == 1:
        # Imported here: a parent of many workers needs neither aiortc nor NATS.
        from services.common.lifecycle import run_service
        from services.media.app import main as serve

        return run_service("media", serve)
    setup_logging("media", settings.log_level, settings.log_format)
    log.info(
        "media: %d workers %s-w0 to -w%d, RTP ports %d-%d shared out, ops ports from %s",
        count,
        settings.instance_id,
        count - 1,
        settings.rtp_port_min,
        settings.rtp_port_max,
        settings.ops_port or "free",
    )
    pool = WorkerPool(specs, os.environ, drain_timeout=settings.drain_timeout)
    return asyncio.run(pool.run())
