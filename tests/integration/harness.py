"""Real processes for integration tests: nats-server, the services, sipp.

Every port is a free one found at run time; every wait has a deadline; a
missing tool fails the test loudly instead of skipping it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import nats
import nats.errors
import pytest

from proto.subjects import Source
from services.common import bus
from services.common.fleet.registry import CallRegistry, RegistryError

SCENARIOS = Path(__file__).with_name("scenarios")
REPO = Path(__file__).resolve().parents[2]

# The trunk credentials the sipp scenarios check (the password holds ':', '#', '@').
TRUNK_USER = "bridge"
TRUNK_PASSWORD = "s3cr:t#p@ss"


SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def require_tool(name: str) -> str:
    # kamailio and dnsmasq live in /usr/sbin, which a non-login PATH may leave out.
    path = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), *SBIN]))
    if path is None:
        pytest.fail(f"{name} is not installed: run `make test`, which installs it", pytrace=False)
    return path


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_udp_port() -> int:
    """A port free for both UDP and TCP (sipp and SIP over either)."""
    for _ in range(50):
        port = free_port(socket.SOCK_DGRAM)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port")


def free_rtp_range(size: int = 40) -> tuple[int, int]:
    """A block of free UDP ports, even-aligned, for one media worker."""
    for _ in range(200):
        start = (free_port(socket.SOCK_DGRAM) // 2) * 2
        if start + size > 65535:
            continue
        socks = []
        try:
            for port in range(start, start + size):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
        return start, start + size - 1
    raise RuntimeError("no free RTP port range")


def free_port_block(count: int) -> int:
    """The first of ``count`` consecutive free TCP ports (ops ports of media workers)."""
    for _ in range(200):
        first = free_port()
        if first + count <= 65536 and not any(
            port_taken(port, socket.SOCK_STREAM) for port in range(first + 1, first + count)
        ):
            return first
    raise RuntimeError(f"no {count} consecutive free ports")


def port_taken(port: int, kind: int = socket.SOCK_DGRAM) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def wait_tcp(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on tcp port {port} after {timeout}s")


@dataclass
class Process:
    """A child process whose output goes to a log file shown on failure."""

    name: str
    argv: list[str]
    env: Mapping[str, str]
    log_path: Path
    cwd: Path = REPO
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            self.argv, env=dict(self.env), stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd
        )
        log.close()
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode


def start_nats(tmp: Path) -> tuple[Process, str]:
    binary = _nats_binary()
    port = free_port()
    store = tmp / "nats-store"
    store.mkdir(parents=True, exist_ok=True)
    proc = Process(
        "nats",
        [str(binary), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)],
        os.environ,
        tmp / "nats.log",
    ).start()
    wait_tcp(port)
    return proc, f"nats://127.0.0.1:{port}"


def _nats_binary() -> Path:
    binary = Path(sys.executable).with_name("nats-server")
    if not binary.is_file():
        pytest.fail("nats-server missing: install the package (make test does)", pytrace=False)
    return binary


@dataclass
class NatsCluster:
    """nats-server nodes routed to each other on loopback, JetStream on each."""

    nodes: list[Process]
    urls: list[str]
    "Client URL of each node, in the order of ``nodes``."
    monitors: list[str]
    "Monitoring URL of each node (``/connz``, ``/jsz``)."

    @property
    def url(self) -> str:
        """Every node, comma-separated (``NATS_URL`` of a service)."""
        return ",".join(self.urls)

    def url_from(self, first: int) -> str:
        """Every node, starting with node ``first`` (spreads the clients over the nodes)."""
        return ",".join(self.urls[first:] + self.urls[:first])

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()


def start_nats_cluster(tmp: Path, size: int = 3) -> NatsCluster:
    """``size`` routed nodes with JetStream (cluster ``bridge``), each on free ports."""
    binary = _nats_binary()
    ports = [free_port() for _ in range(size)]
    monitor_ports = [free_port() for _ in range(size)]
    cluster_ports = [free_port() for _ in range(size)]
    routes = ",".join(f"nats://127.0.0.1:{port}" for port in cluster_ports)
    nodes = []
    for index, (port, monitor, cluster_port) in enumerate(
        zip(ports, monitor_ports, cluster_ports, strict=True)
    ):
        store = tmp / f"nats-{index}-store"
        store.mkdir(parents=True, exist_ok=True)
        argv = [
            str(binary),
            *("-a", "127.0.0.1", "-p", str(port), "-m", str(monitor), "-n", f"n{index}"),
            *("-js", "-sd", str(store)),
            *("--cluster_name", "bridge", "--cluster", f"nats://127.0.0.1:{cluster_port}"),
            *("--routes", routes),
        ]
        nodes.append(Process(f"nats-{index}", argv, os.environ, tmp / f"nats-{index}.log").start())
    for port in ports:
        wait_tcp(port)
    return NatsCluster(
        nodes,
        [f"nats://127.0.0.1:{port}" for port in ports],
        [f"http://127.0.0.1:{port}" for port in monitor_ports],
    )


def open_registry(nats_url: str, replicas: int, timeout: float = 30.0) -> float:
    """Create the call registry's bucket with ``replicas``, retrying until JetStream
    has formed (a cluster needs a meta leader first); the seconds it took."""

    async def attempt() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            nc = None
            try:
                nc = await nats.connect(nats_url.split(","), connect_timeout=2)
                await CallRegistry.open(nc, replicas=replicas)
                return loop.time() - started
            except (RegistryError, nats.errors.Error, OSError) as exc:
                if loop.time() - started > timeout:
                    raise TimeoutError(f"no JetStream KV after {timeout}s: {exc!r}") from exc
                await asyncio.sleep(0.5)
            finally:
                if nc is not None:
                    await nc.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, attempt()).result()


ACCESS_SETTINGS = (
    "AUTH",
    "ALLOW_UNAUTH",
    "CLIENT_TOKEN_",
    "DIAL_DENY",
    "CALL_RATE",
    "SOURCE_CALL_RATE",
    "MAX_CALL",
    "WS_",
    "TRUSTED_PROXIES",
    "ALLOWED_ORIGINS",
    "AUDIT_LOG",
)
"Settings of the operator's environment a test must not inherit."
INHERITED_NOT = (
    "SIP_",
    "RTP_",
    "HTTP_",
    "NATS_",
    "PUBLIC_IP",
    "DEFAULT_DEST",
    "OPS_",
    "OTEL_",
    *ACCESS_SETTINGS,
)


def service_env(nats_url: str, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(INHERITED_NOT)}
    env.update(
        NATS_URL=nats_url,
        LOG_LEVEL="DEBUG",
        SETUP_TIMEOUT="5",
        PYTHONUNBUFFERED="1",
        # Tests place many calls from 127.0.0.1 in a minute; the tests of the
        # limits set their own.
        CALL_RATE="off",
        SOURCE_CALL_RATE="off",
        WS_CONNECTIONS_PER_SOURCE="100000",
        # Every process its own free ops port; a test that probes one passes a port.
        OPS_PORT="0",
        # Services run from a tmp dir: import this checkout's code, not whichever the
        # venv was installed from.
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")])),
    )
    env.update(overrides)
    return env


def wait_ready(nats_url: str, *services: Source, timeout: float = 30.0) -> bool:
    """Block until one instance of each service takes work on the bus."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, bus.wait_ready(nats_url, services, timeout)).result()


def start_service(name: str, env: Mapping[str, str], tmp: Path) -> Process:
    return Process(
        name, [sys.executable, "-m", f"services.{name}"], env, tmp / f"{name}.log", cwd=tmp
    ).start()


BIND_ATTEMPTS = 4
"Starts of a sipp whose ports another process took first."


class _PortRace(RuntimeError):
    """sipp found one of its ports taken: start it again on others."""


@dataclass
class Sipp:
    """sipp as the SIP trunk (UAS), one scenario, ``calls`` calls (one by default)."""

    scenario: str
    tmp: Path
    keys: dict[str, str] = field(default_factory=dict)
    transport: str = "u1"
    calls: int = 1
    "Calls after which sipp exits (``-m``); also its limit of simultaneous calls (``-l``)."
    port: int = 0
    "Where sipp listens; 0: a free port chosen at start."
    media_port: int = 0
    remote: str = ""
    "``host:port`` to call: sipp is then the trunk calling in (UAC) rather than the one called."
    process: Process | None = None

    def _render(self) -> Path:
        """The scenario with its ``@name@`` placeholders filled from ``keys``.

        sipp checks status lines when it loads a scenario, before its own
        ``-key`` substitution, so a parameterised status code is filled here.
        """
        text = (SCENARIOS / self.scenario).read_text()
        for key, value in self.keys.items():
            text = text.replace(f"@{key}@", value)
        rendered = self.tmp / f"{self.port}-{self.scenario}"
        rendered.write_text(text)
        return rendered

    def start(self) -> Sipp:
        # sipp binds four media ports next to the one it is given: another process may
        # take one of them between our probe and its bind. Try again on fresh ports then.
        given = self.port
        for _ in range(BIND_ATTEMPTS - 1):
            try:
                return self._start()
            except _PortRace:
                self.port = given
        return self._start()

    def _start(self) -> Sipp:
        sipp = require_tool("sipp")
        self.port = self.port or free_udp_port()
        self.media_port = (free_port(socket.SOCK_DGRAM) // 2) * 2
        argv = [
            sipp,
            "-sf",
            str(self._render()),
            "-i",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-mi",
            "127.0.0.1",
            "-mp",
            str(self.media_port),
            "-rtp_echo",
            "-t",
            self.transport,
            "-m",
            str(self.calls),
            "-l",
            str(self.calls),
            "-timeout",
            "90s",
            "-nostdin",
            "-trace_msg",
            "-message_file",
            str(self.tmp / f"sipp-{self.port}-messages.log"),
            "-trace_err",
            "-error_file",
            str(self.tmp / f"sipp-{self.port}-errors.log"),
        ]
        if self.remote:
            argv.append(self.remote)
        self.process = Process("sipp", argv, os.environ, self.tmp / f"sipp-{self.port}.log").start()
        deadline = time.monotonic() + 5
        kind = socket.SOCK_STREAM if self.transport.startswith("t") else socket.SOCK_DGRAM
        while not port_taken(self.port, kind):
            if time.monotonic() > deadline or not self.process.alive():
                log = self.process.log()
                self.process.stop()
                if "Address already in use" in log:
                    raise _PortRace(log)
                raise RuntimeError(f"sipp did not start:\n{log}")
            time.sleep(0.05)
        return self

    def messages(self) -> str:
        path = self.tmp / f"sipp-{self.port}-messages.log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def wait(self, timeout: float) -> int:
        """sipp's exit code: 0 when the scenario completed (e.g. the BYE arrived)."""
        assert self.process is not None and self.process.popen is not None
        deadline = time.monotonic() + timeout
        while self.process.popen.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"sipp still running after {timeout}s; messages so far:\n{self.messages()}"
                )
            await asyncio.sleep(0.05)
        return self.process.popen.returncode

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(signal.SIGKILL)
