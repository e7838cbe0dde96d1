"""The ``bridge`` command: ``up`` runs everything; each service can run alone."""

from __future__ import annotations

import argparse
import importlib
import sys

from services.common.settings import MAX_MEDIA_WORKERS

_SERVICES = {
    "signaling": "serve the page and the browser WebSocket",
    "sipagent": "the SIP user agent toward the trunk",
}


def _workers(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= count <= MAX_MEDIA_WORKERS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_MEDIA_WORKERS}")
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bridge",
        description="WebRTC-to-SIP bridge. Settings come from the environment, then .env.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("up", help="run NATS and every service on this machine")
    for name, text in _SERVICES.items():
        commands.add_parser(name, help=f"run one {name} instance ({text}); needs NATS_URL")
    media_parser = commands.add_parser(
        "media", help="run media workers (WebRTC and RTP), one process each; needs NATS_URL"
    )
    media_parser.add_argument(
        "--workers",
        type=_workers,
        metavar="N",
        help="worker processes, each its own fleet member with a slice of the RTP ports and "
        "ops port OPS_PORT+i (default: MEDIA_WORKERS, else one per core; 1: this process)",
    )
    probe_parser = commands.add_parser(
        "probe", help="check the SIP trunk: DNS, connect, OPTIONS, credentials (no call placed)"
    )
    probe_parser.add_argument(
        "--trunk", metavar="NAME", help="a trunk of PROVIDERS_FILE (default: .env)"
    )
    probe_parser.add_argument("--json", action="store_true", help="print one JSON object")
    probe_parser.add_argument(
        "--timeout", type=float, default=5.0, metavar="S", help="seconds per step (default 5)"
    )
    registrations_parser = commands.add_parser(
        "registrations", help="REGISTER state of every trunk at every SIP agent (asked over NATS)"
    )
    registrations_parser.add_argument("--json", action="store_true", help="print one JSON array")
    registrations_parser.add_argument(
        "--timeout",
        type=float,
        default=1.0,
        metavar="S",
        help="seconds to gather answers from SIP agents (default 1)",
    )
    args = parser.parse_args(argv)

    if args.command == "up":
        from services.supervisor import up

        return up()
    if args.command == "media":
        from services.media.workers import main as run_media

        return run_media(args.workers)
    if args.command == "probe":
        from services.sipagent.probe import main as run_probe

        return run_probe(args.trunk, args.json, args.timeout)
    if args.command == "registrations":
        from services.sipagent.registrations_cli import main as show_registrations

        return show_registrations(args.json, args.timeout)
    # Imported here: the parent of media workers needs neither NATS nor aiohttp.
    from services.common.lifecycle import run_service

    module = importlib.import_module(f"services.{args.command}.app")
    return run_service(args.command, module.main)


if __name__ == "__main__":
    sys.exit(main())
