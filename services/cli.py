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
    calls_parser = commands.add_parser(
        "calls", help="live calls with their media quality (asked over NATS); 'hangup ID' ends one"
    )
    calls_parser.add_argument("--json", action="store_true", help="print one JSON array")
    calls_parser.add_argument(
        "--timeout",
        type=float,
        metavar="S",
        help="seconds to gather answers from media workers (default 1), "
        "or to wait for the call's signaling to answer a hangup (default 2)",
    )
    calls_actions = calls_parser.add_subparsers(dest="calls_action", metavar="ACTION")
    hangup_parser = calls_actions.add_parser(
        "hangup", help="end one call: BYE to the trunk, the browser told (cause operator)"
    )
    hangup_parser.add_argument("call_id", metavar="ID", help="the call id `bridge calls` shows")
    token_parser = commands.add_parser(
        "token", help="mint a client token from CLIENT_TOKEN_SECRET (tests, small set-ups)"
    )
    token_parser.add_argument("--sub", required=True, help="the identity (the token's sub)")
    token_parser.add_argument("--ttl", default="1h", help="lifetime: 90s, 15m, 1h, 7d (default 1h)")
    token_parser.add_argument(
        "--dst",
        action="append",
        metavar="PATTERN",
        help="an allowed destination: exact, a prefix such as '+1*', or a route name "
        "(repeat for more; default: any)",
    )
    token_parser.add_argument("--max-calls", type=int, metavar="N", help="concurrent calls")
    token_parser.add_argument(
        "--max-duration", type=float, metavar="S", help="seconds a call may last"
    )
    nats_parser = commands.add_parser(
        "nats-config",
        help="new NATS passwords, one NATS_<USER>_PASSWORD=... line per user (the locked bus)",
    )
    nats_parser.add_argument(
        "--server",
        action="store_true",
        help="print instead the authorization block of nats-server's config (no secrets)",
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
    if args.command == "token":
        from services.signaling.token_cli import main as mint_token

        return mint_token(args.sub, args.ttl, args.dst, args.max_calls, args.max_duration)
    if args.command == "registrations":
        from services.sipagent.registrations_cli import main as show_registrations

        return show_registrations(args.json, args.timeout)
    if args.command == "calls":
        from services.common.calls_cli import main as calls

        hangup = args.call_id if args.calls_action == "hangup" else None
        return calls(args.json, args.timeout, hangup)
    if args.command == "nats-config":
        from services.common import nats_access

        if args.server:
            print(nats_access.render_authorization(), end="")
        else:
            print(nats_access.render_env(nats_access.new_passwords()), end="")
        return 0
    # Imported here: the parent of media workers needs neither NATS nor aiohttp.
    from services.common.lifecycle import run_service

    module = importlib.import_module(f"services.{args.command}.app")
    return run_service(args.command, module.main)


if __name__ == "__main__":
    sys.exit(main())
