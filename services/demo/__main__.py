"""Run the demo SIP peer: ``DEMO_SIP_PORT=5070 python -m services.demo``."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from services.demo.app import serve


def main() -> int:
    host = os.environ.get("DEMO_SIP_HOST", "").strip() or "127.0.0.1"
    raw_port = os.environ.get("DEMO_SIP_PORT", "").strip()
    try:
        port = int(raw_port)
        if not 0 < port < 65536:
            raise ValueError
    except ValueError:
        print(
            f"bridge demo: DEMO_SIP_PORT must be a port number, got {raw_port!r}", file=sys.stderr
        )
        return 2
    level = os.environ.get("LOG_LEVEL", "INFO").strip().upper()
    if not isinstance(logging.getLevelName(level), int):
        level = "INFO"
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s demo %(name)s: %(message)s",
        stream=sys.stderr,
    )

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(host, port, stop)

    try:
        asyncio.run(run())
    except OSError as exc:
        # A port in use: one line, not a traceback.
        print(f"bridge demo: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
