"""Process lifecycle shared by the services: logging set-up and signal handling."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable

from nats.errors import NoServersError

from services.common.settings import Settings, SettingsError, load_settings, redact_url
from services.common.telemetry import setup_tracing

Main = Callable[[Settings, asyncio.Event], Awaitable[None]]


def setup_logging(service: str, level: str) -> None:
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # aiortc and aioice log every packet-level detail at INFO/DEBUG.
    for noisy in ("aioice", "aiortc", "nats"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def run_service(service: str, main: Main) -> int:
    """Load settings, then run ``main(settings, stop)`` until SIGTERM or SIGINT.

    Returns the process exit code: 2 for a bad setting, 0 after a clean stop.
    """
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"bridge {service}: {exc}", file=sys.stderr)
        return 2
    setup_logging(service, settings.log_level)
    setup_tracing(service)

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(settings, stop)

    try:
        asyncio.run(runner())
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
