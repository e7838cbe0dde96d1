"""Janus's SIP plugin as a comparison point: its process and a driver of its HTTP API.

``Janus`` runs Debian's ``janus`` in the foreground as a child with a
generated config folder: the SIP plugin and the HTTP transport alone (the
plugin, transport, event-handler and logger folders hold only those, and
the rest are disabled by name too), HTTP on a free 127.0.0.1 port, no admin
API, no STUN, no 1:1 NAT mapping, RTP port ranges for ICE and for the SIP
side, low debug level, log to a file.

``JanusClient`` is one Janus session over HTTP (long-poll for events, a
keepalive every ``KEEPALIVE`` seconds). ``call(offer_sdp)`` attaches a SIP
plugin handle, registers it as a guest with the SIP trunk as proxy, calls
the trunk with the WebRTC peer's offer and returns a ``JanusCall`` once
Janus sent ``accepted`` with the answer (``.answer_sdp``); ``.hangup()``
ends it. Any WebRTC peer that gives an offer and takes an answer fits.

``python -m bench.janus`` proves it end to end with aiortc peers and sipp as
the trunk (PCMU, RTP echoed) and measures Janus's CPU per call.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.daemon import Daemon
from bench.peers import describe_webrtc, idle_share
from bench.ports import free_port, free_port_range, port_free

BINARY = "janus"
LIB_DIR = Path("/usr/lib/x86_64-linux-gnu/janus")
PLUGIN = "janus.plugin.sip"
PLUGIN_LIB = "libjanus_sip.so"
TRANSPORT_LIB = "libjanus_http.so"
OTHER_PLUGINS = (
    "libjanus_audiobridge.so",
    "libjanus_duktape.so",
    "libjanus_echotest.so",
    "libjanus_lua.so",
    "libjanus_nosip.so",
    "libjanus_recordplay.so",
    "libjanus_streaming.so",
    "libjanus_textroom.so",
    "libjanus_videocall.so",
    "libjanus_videoroom.so",
    "libjanus_voicemail.so",
)
OTHER_TRANSPORTS = (
    "libjanus_websockets.so",
    "libjanus_rabbitmq.so",
    "libjanus_mqtt.so",
    "libjanus_nanomsg.so",
    "libjanus_pfunix.so",
)
KEEPALIVE = 25.0
"Seconds between session keepalives (Janus drops a session silent for 60 s)."
POLL_EVENTS = 16
"Events one long-poll GET may bring (``maxev``)."


def lib_dir() -> Path:
    """Where Debian put Janus's modules (multiarch path)."""
    if LIB_DIR.is_dir():
        return LIB_DIR
    for candidate in Path("/usr/lib").glob("*/janus"):
        if (candidate / "plugins" / PLUGIN_LIB).exists():
            return candidate
    raise FileNotFoundError("janus modules not found: apt-get install janus")


def _quoted(items: tuple[str, ...] | list[str]) -> str:
    return '"' + ",".join(items) + '"'


def core_config(
    folder: Path,
    *,
    rtp_range: tuple[int, int],
    debug_level: int = 3,
    session_timeout: int = 60,
) -> str:
    """``janus.jcfg``: modules from ``folder``'s own sub-folders, media on loopback."""
    return f"""general: {{
	configs_folder = "{folder}"
	plugins_folder = "{folder / "plugins"}"
	transports_folder = "{folder / "transports"}"
	events_folder = "{folder / "events"}"
	loggers_folder = "{folder / "loggers"}"
	debug_level = {debug_level}
	debug_timestamps = true
	debug_colors = false
	interface = "127.0.0.1"
	session_timeout = {session_timeout}
	hide_dependencies = true
}}
certificates: {{
}}
media: {{
	ipv6 = false
	rtp_port_range = "{rtp_range[0]}-{rtp_range[1]}"
}}
nat: {{
	nice_debug = false
	ice_enforce_list = "127.0.0.1"
	ignore_mdns = true
}}
plugins: {{
	disable = {_quoted(OTHER_PLUGINS)}
}}
transports: {{
	disable = {_quoted(OTHER_TRANSPORTS)}
}}
loggers: {{
	disable = "libjanus_jsonlog.so"
}}
events: {{
	broadcast = false
}}
"""


def http_config(port: int) -> str:
    """``janus.transport.http.jcfg``: plain HTTP on 127.0.0.1:``port``, no admin API."""
    return f"""general: {{
	json = "compact"
	base_path = "/janus"
	http = true
	port = {port}
	ip = "127.0.0.1"
	https = false
}}
admin: {{
	admin_http = false
	admin_https = false
}}
cors: {{
}}
"""


def sip_config(rtp_range: tuple[int, int]) -> str:
    """``janus.plugin.sip.jcfg``: SIP and RTP on 127.0.0.1, no keepalives, no events."""
    return f"""general: {{
	local_ip = "127.0.0.1"
	keepalive_interval = 0
	behind_nat = false
	register_ttl = 3600
	rtp_port_range = "{rtp_range[0]}-{rtp_range[1]}"
	sip_timer_t1x64 = 32000
	events = false
}}
"""


def write_config(
    folder: Path,
    *,
    http_port: int,
    ice_range: tuple[int, int],
    sip_rtp_range: tuple[int, int],
    debug_level: int = 3,
) -> Path:
    """The config folder: the three files and module folders with only SIP and HTTP in them.

    Returns the path of ``janus.jcfg``.
    """
    modules = lib_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for name, lib in (("plugins", PLUGIN_LIB), ("transports", TRANSPORT_LIB)):
        sub = folder / name
        sub.mkdir(exist_ok=True)
        link = sub / lib
        if not link.exists():
            link.symlink_to(modules / name / lib)
    for name in ("events", "loggers"):
        (folder / name).mkdir(exist_ok=True)
    core = folder / "janus.jcfg"
    core.write_text(core_config(folder, rtp_range=ice_range, debug_level=debug_level))
    (folder / "janus.transport.http.jcfg").write_text(http_config(http_port))
    (folder / f"{PLUGIN}.jcfg").write_text(sip_config(sip_rtp_range))
    return core


SHIM_SOURCE = Path(__file__).with_name("loopback_ifaddrs.c")


def build_loopback_shim(folder: Path) -> Path:
    """Compile ``loopback_ifaddrs.c`` into ``folder``; the path of the shared object."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise FileNotFoundError("no C compiler for the Janus loopback shim: apt-get install gcc")
    target = folder / "libloopback_ifaddrs.so"
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-o", str(target), str(SHIM_SOURCE), "-ldl"],
        check=True,
        capture_output=True,
    )
    return target


@dataclass
class Janus(Daemon):
    """``janus`` as a child process with a config folder from ``write_config``."""

    workdir: Path
    ports: int = 400
    "Size of each of the two RTP port ranges (ICE side and SIP side)."
    debug_level: int = 3
    loopback_ice: bool = True
    "Preload ``loopback_ifaddrs.c`` so Janus gathers 127.0.0.1 (it skips loopback otherwise)."
    http_port: int = 0
    popen: subprocess.Popen[bytes] | None = None
    stop_signal: signal.Signals = signal.SIGINT
    ice_range: tuple[int, int] = (0, 0)
    sip_rtp_range: tuple[int, int] = (0, 0)

    @property
    def log_path(self) -> Path:
        return self.workdir / "janus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/janus"

    def start(self, timeout: float = 15.0) -> Janus:
        if self.popen is not None:
            raise RuntimeError("already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        first, last = free_port_range(2 * self.ports)
        self.ice_range = (first, first + self.ports - 1)
        self.sip_rtp_range = (first + self.ports, last)
        self.http_port = self.http_port or free_port()
        folder = self.workdir / "conf"
        core = write_config(
            folder,
            http_port=self.http_port,
            ice_range=self.ice_range,
            sip_rtp_range=self.sip_rtp_range,
            debug_level=self.debug_level,
        )
        argv = [
            BINARY,
            f"--config={core}",
            f"--configs-folder={folder}",
            f"--log-file={self.log_path}",
            "--disable-stdout",
        ]
        env = dict(os.environ)
        if self.loopback_ice:
            env["LD_PRELOAD"] = str(build_loopback_shim(self.workdir))
        with (self.workdir / "janus.stdout").open("wb") as out:
            self.popen = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                env=env,
            )
        deadline = time.monotonic() + timeout
        while port_free(self.http_port, kind=socket.SOCK_STREAM):
            if self.popen.poll() is not None or time.monotonic() > deadline:
                text = self.log()
                self.stop()
                raise RuntimeError(f"janus did not start:\n{text}")
            time.sleep(0.05)
        return self

    def log(self) -> str:
        parts = []
        for path in (self.log_path, self.workdir / "janus.stdout"):
            with contextlib.suppress(OSError):
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    def __enter__(self) -> Janus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def version() -> str:
    out = subprocess.run([BINARY, "--version"], capture_output=True, text=True, check=False)
    match = re.search(r"Janus version:\s*\d+\s*\(([^)]+)\)", out.stdout + out.stderr)
    return match.group(1) if match else (out.stdout + out.stderr).strip().splitlines()[0]


class JanusError(RuntimeError):
    """Janus answered with an error (core ``error`` or the SIP plugin's ``error_code``)."""


def plugin_result(event: Mapping[str, Any]) -> dict[str, Any]:
    """The SIP plugin's ``result`` of an event (empty if none); raises on a plugin error."""
    data = event.get("plugindata", {}).get("data", {})
    if "error_code" in data or "error" in data:
        raise JanusError(f"{data.get('error_code')}: {data.get('error')}")
    result = data.get("result", {})
    return dict(result) if isinstance(result, Mapping) else {}


def sip_event(event: Mapping[str, Any]) -> str | None:
    """The name of a SIP plugin event (``registered``, ``accepted``, ``hangup`` ...)."""
    if event.get("janus") != "event":
        return None
    data = event.get("plugindata", {}).get("data", {})
    if "error_code" in data:
        return "error"
    result = data.get("result")
    return str(result.get("event")) if isinstance(result, Mapping) else None


class JanusClient:
    """One Janus session: requests over HTTP POST, events by long-poll GET, keepalives."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session_id = 0
        self._http: aiohttp.ClientSession | None = None
        self._handles: dict[int, asyncio.Queue[dict[str, Any]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._ids = itertools.count(1)
        self._users = itertools.count(1)
        self.closed = False

    async def connect(self) -> JanusClient:
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
            connector=aiohttp.TCPConnector(limit=0),
        )
        reply = await self._post(self.url, {"janus": "create"})
        self.session_id = int(reply["data"]["id"])
        self._tasks = [
            asyncio.create_task(self._poll()),
            asyncio.create_task(self._keepalive()),
        ]
        return self

    @property
    def session_url(self) -> str:
        return f"{self.url}/{self.session_id}"

    async def _post(self, url: str, body: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        assert self._http is not None, "connect() first"
        body = {**body, "transaction": f"t{next(self._ids)}-{uuid.uuid4().hex[:8]}"}
        async with self._http.post(
            url, json=body, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as response:
            reply = await response.json(content_type=None)
        if reply.get("janus") == "error":
            error = reply.get("error", {})
            raise JanusError(f"{body['janus']}: {error.get('code')} {error.get('reason')}")
        return dict(reply)

    async def _poll(self) -> None:
        assert self._http is not None
        url = f"{self.session_url}?maxev={POLL_EVENTS}"
        while not self.closed:
            try:
                async with self._http.get(url, timeout=aiohttp.ClientTimeout(total=60)) as response:
                    events = await response.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError):
                if self.closed:
                    return
                await asyncio.sleep(0.2)
                continue
            if isinstance(events, dict) and events.get("janus") == "error":
                await asyncio.sleep(0.2)  # e.g. the session is gone: no busy loop
                continue
            for event in events if isinstance(events, list) else [events]:
                sender = event.get("sender")
                queue = self._handles.get(int(sender)) if sender is not None else None
                if queue is not None:
                    queue.put_nowait(event)

    async def _keepalive(self) -> None:
        while not self.closed:
            await asyncio.sleep(KEEPALIVE)
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, JanusError):
                await self._post(self.session_url, {"janus": "keepalive"})

    async def attach(self) -> int:
        reply = await self._post(self.session_url, {"janus": "attach", "plugin": PLUGIN})
        handle = int(reply["data"]["id"])
        self._handles[handle] = asyncio.Queue()
        return handle

    async def message(
        self, handle: int, body: dict[str, Any], jsep: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        request: dict[str, Any] = {"janus": "message", "body": body}
        if jsep is not None:
            request["jsep"] = jsep
        return await self._post(f"{self.session_url}/{handle}", request)

    async def next_event(
        self, handle: int, wanted: tuple[str, ...], timeout: float = 15.0
    ) -> dict[str, Any]:
        """The next SIP plugin event of ``handle`` named in ``wanted``; an error or a
        hangup before it raises ``JanusError``."""
        queue = self._handles[handle]
        async with asyncio.timeout(timeout):
            while True:
                event = await queue.get()
                if event.get("janus") == "hangup" and "hangup" not in wanted:
                    raise JanusError(f"hung up while waiting for {wanted}: {event}")
                name = sip_event(event)
                if name == "error":
                    plugin_result(event)  # raises
                if name in wanted:
                    return event
                if name == "hangup" and "hangup" not in wanted:
                    raise JanusError(f"hung up while waiting for {wanted}: {event}")

    async def detach(self, handle: int) -> None:
        with contextlib.suppress(JanusError, aiohttp.ClientError, TimeoutError):
            await self._post(f"{self.session_url}/{handle}", {"janus": "detach"})
        self._handles.pop(handle, None)

    async def call(self, offer_sdp: str, uri: str, proxy: str, timeout: float = 15.0) -> JanusCall:
        """Place a SIP call to ``uri`` (through ``proxy``) for the WebRTC offer ``offer_sdp``."""
        handle = await self.attach()
        try:
            user = f"sip:bench{next(self._users)}-{self.session_id}@127.0.0.1"
            await self.message(
                handle,
                {"request": "register", "type": "guest", "username": user, "proxy": proxy},
            )
            started = time.perf_counter()
            await self.next_event(handle, ("registered",), timeout)
            registered = time.perf_counter()
            await self.message(
                handle,
                {"request": "call", "uri": uri, "autoaccept_reinvites": False},
                {"type": "offer", "sdp": offer_sdp},
            )
            accepted = await self.next_event(handle, ("accepted",), timeout)
        except BaseException:
            await self.detach(handle)
            raise
        jsep = accepted.get("jsep") or {}
        if jsep.get("type") != "answer" or not jsep.get("sdp"):
            await self.detach(handle)
            raise JanusError(f"accepted without an answer: {accepted}")
        return JanusCall(
            self,
            handle,
            str(jsep["sdp"]),
            register_ms=(registered - started) * 1000,
            invite_ms=(time.perf_counter() - registered) * 1000,
        )

    async def close(self) -> None:
        self.closed = True
        if self._http is not None and self.session_id:
            with contextlib.suppress(JanusError, aiohttp.ClientError, TimeoutError):
                await self._post(self.session_url, {"janus": "destroy"}, timeout=5)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()


@dataclass
class JanusCall:
    """A call the SIP plugin placed; ``answer_sdp`` goes to the WebRTC peer."""

    client: JanusClient
    handle: int
    answer_sdp: str
    register_ms: float = 0.0
    "From the guest ``register`` request to the ``registered`` event (no SIP is sent)."
    invite_ms: float = 0.0
    "From the ``call`` request to the ``accepted`` event (INVITE → 200 OK at the trunk)."
    ended: bool = field(default=False)

    async def hangup(self, timeout: float = 10.0) -> None:
        """Send BYE (the plugin's ``hangup``), wait for the plugin's ``hangup`` event, detach."""
        if self.ended:
            return
        self.ended = True
        try:
            await self.client.message(self.handle, {"request": "hangup"})
            with contextlib.suppress(TimeoutError):
                await self.client.next_event(self.handle, ("hangup",), timeout)
        finally:
            await self.client.detach(self.handle)


class JanusGateway:
    """The same call interface as ``bench.rtpengine.WebrtcGateway``: ``call(offer_sdp)``."""

    def __init__(self, client: JanusClient, trunk_port: int, number: str = "echo") -> None:
        self.client = client
        self.uri = f"sip:{number}@127.0.0.1:{trunk_port}"
        self.proxy = f"sip:127.0.0.1:{trunk_port}"

    async def call(self, offer_sdp: str) -> JanusCall:
        return await self.client.call(offer_sdp, self.uri, self.proxy)


def _timings(calls: list[JanusCall]) -> dict[str, float]:
    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    return {
        "register_ms_median": median([c.register_ms for c in calls]),
        "invite_ms_median": median([c.invite_ms for c in calls]),
    }


async def measure(
    janus: Janus, tmp: Path, calls: int, hold: float, idle: float = 0.0
) -> dict[str, Any]:
    """``calls`` concurrent aiortc PCMU calls through Janus to sipp's RTP echo."""
    from bench.peers import measure_webrtc
    from tests.integration.harness import Sipp

    sipp = Sipp("answer_echo_long_call.xml", tmp, calls=calls).start()
    client = await JanusClient(janus.url).connect()
    try:
        result = await measure_webrtc(
            JanusGateway(client, sipp.port).call, janus.pid, calls, hold, idle, details=_timings
        )
    except Exception:
        print(janus.log()[-4000:], sipp.messages()[-3000:], sep="\n", file=sys.stderr)
        raise
    finally:
        await client.close()
        sipp_exit = None
        with contextlib.suppress(TimeoutError):
            sipp_exit = await sipp.wait(10)
        sipp.stop()
    result["sipp_exit"] = sipp_exit
    return result


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--hold", type=float, default=10.0)
    parser.add_argument(
        "--idle", type=float, default=5.0, help="seconds Janus's idle CPU is sampled"
    )
    parser.add_argument("--debug-level", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    results: dict[str, Any] = {"version": version(), "runs": []}
    with tempfile.TemporaryDirectory(prefix="bench-janus-") as tmp_name:
        tmp = Path(tmp_name)
        janus = Janus(tmp / "janus", debug_level=args.debug_level)
        with janus:
            results["threads_idle"] = janus.threads_now()
            idle = await idle_share(janus.pid, args.idle)
            for calls in args.calls:
                run = await measure(janus, tmp, calls, args.hold, idle)
                results["runs"].append(run)
                print(
                    f"janus {describe_webrtc(run)} (guest register {run['register_ms_median']:.0f}"
                    f" ms, INVITE → accepted {run['invite_ms_median']:.0f} ms),"
                    f" sipp exit {run['sipp_exit']}",
                    flush=True,
                )
            results["threads_after"] = janus.threads_now()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def run(argv: list[str] | None = None) -> int:
    with asyncio.Runner() as runner:
        return runner.run(main(argv))


if __name__ == "__main__":
    sys.exit(run())
