"""The demo echo trunk with a higher call limit, for load runs: ``python -m bench.echo_trunk``.

``bridge up`` without a trunk starts the demo peer (``services.demo``), which
answers at most 200 calls (``services.demo.uas.DEFAULT_MAX_CALLS``) and
refuses the rest with 503. A run of more calls starts this instead and points
the bridge at it as its trunk::

    python -m bench.echo_trunk --port 5070 --max-calls 1000 &
    SIP_TRUNK_HOST=127.0.0.1 SIP_TRUNK_PORT=5070 SIP_TRANSPORT=udp SIP_USERNAME=demo \\
        SIP_DOMAIN=demo.invalid BRIDGE_DEMO=true ... bridge up

It is the same demo peer (ring delay, RTP echo), only its limit differs.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import signal
import sys

from services.demo import app
from services.demo.uas import DemoUas


async def run(host: str, port: int, max_calls: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # ``serve`` builds its DemoUas with the default limit; give it ours.
    app.DemoUas = functools.partial(DemoUas, max_calls=max_calls)  # type: ignore[misc]
    await app.serve(host, port, stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.echo_trunk", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-calls", type=int, default=1000)
    parser.add_argument(
        "--no-uvloop", action="store_true", help="asyncio's own loop, as the built-in demo peer"
    )
    args = parser.parse_args(argv)
    try:
        if args.no_uvloop:
            asyncio.run(run(args.host, args.port, args.max_calls))
        else:
            import uvloop

            uvloop.run(run(args.host, args.port, args.max_calls))
    except OSError as exc:
        print(f"echo trunk: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
