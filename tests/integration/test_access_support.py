"""What the access tests share: a stack with several signaling processes, a watch on
the bus, client tokens (good and forged), and the moves of a browser or an attacker
on the WebSocket. No tests here.

A stack is nats-server, the trunk (one long-lived sipp that answers every call,
echoes RTP and expects the BYE, or the built-in demo echo peer), a media worker,
a SIP agent and one signaling process per configuration, each on its own HTTP
and ops ports and writing its audit lines to a file.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import re
import secrets
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.client import BridgeClient
from tests.integration.harness import (
    TRUNK_PASSWORD,
    TRUNK_USER,
    Process,
    Sipp,
    free_port,
    free_rtp_range,
    free_udp_port,
    service_env,
    start_nats,
    start_service,
    wait_ready,
)

# --- tokens ---------------------------------------------------------------------------

AUDIENCE = "webrtc-sip-bridge"
SECRET_OLD = secrets.token_hex(32)
SECRET_NEW = secrets.token_hex(32)
SECRET_OTHER = secrets.token_hex(32)
TOKEN_SECRETS = f"old:{SECRET_OLD},new:{SECRET_NEW}"
"``CLIENT_TOKEN_SECRET`` of every stack with tokens: two keys live (a rotation)."

ISSUED: list[str] = []
"Every token a test of this process made: none may show up in a log or an audit line."


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jws(header: Mapping[str, Any], payload: Mapping[str, Any], key: bytes | None) -> str:
    """A compact JWS signed HMAC-SHA256 with ``key`` as is (None: no signature),
    whatever ``header`` says: forgeries a JWT library refuses to make."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    signature = b"" if key is None else hmac.new(key, signing_input.encode(), "sha256").digest()
    token = f"{signing_input}.{b64url(signature)}"
    return issued(token)


def issued(token: str) -> str:
    """``token``, remembered: no log or audit line may hold it."""
    ISSUED.append(token)
    return token


def claims(
    sub: str, *, ttl: float = 300.0, now: float | None = None, **extra: Any
) -> dict[str, Any]:
    at = time.time() if now is None else now
    return {"sub": sub, "aud": AUDIENCE, "iat": int(at), "exp": int(at + ttl), **extra}


def hs256(sub: str, *, kid: str | None = "old", secret: str = SECRET_OLD, **claim: Any) -> str:
    """A token signed the way a backend would, with one of the bridge's secrets."""
    header = {"alg": "HS256", "typ": "JWT"} | ({"kid": kid} if kid is not None else {})
    return jws(header, claims(sub, **claim), secret.encode())


def fresh(what: str) -> str:
    return f"{what}-{uuid.uuid4().hex[:8]}"


# --- the stack ------------------------------------------------------------------------

TRUNK_SCENARIO = "answer_echo_long_call.xml"
TRUNK_CALLS = 500
"Calls the module's sipp answers before it exits (every call of a module, with room)."
RTP_PORTS = 200
"UDP ports of the module's media worker: a freed pair rests 5 s, and some tests call fast."
SETTLE = 0.5
"Seconds a refused attempt is given to (wrongly) reach NATS or sipp before we look."


@dataclass
class Signaling:
    """One signaling process of a stack, on its own HTTP and ops ports."""

    name: str
    port: int
    ops_port: int
    instance_id: str
    process: Process
    audit_path: Path | None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def audit(self) -> list[dict[str, Any]]:
        """The audit lines written so far."""
        if self.audit_path is None or not self.audit_path.exists():
            return []
        text = self.audit_path.read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def audit_of(self, identity: str) -> list[dict[str, Any]]:
        return [line for line in self.audit() if line.get("identity") == identity]


@dataclass
class AccessStack:
    tmp: Path
    nats_url: str
    processes: list[Process]
    signalings: dict[str, Signaling]
    sipp: Sipp | None = None
    trunk_port: int = 0
    env: dict[str, str] = field(default_factory=dict)
    "The environment every service got (before each signaling's own settings)."

    def logs(self) -> str:
        return "\n".join(f"----- {p.name}\n{p.log()[-6000:]}" for p in self.processes)

    def full_logs(self) -> str:
        return "\n".join(p.log() for p in self.processes)

    def invites(self) -> int:
        """INVITEs sipp has received so far (retransmissions included)."""
        return len(re.findall(r"^INVITE sip:", self.trunk_messages(), re.M))

    def byes(self) -> int:
        return len(re.findall(r"^BYE sip:", self.trunk_messages(), re.M))

    def trunk_messages(self) -> str:
        return self.sipp.messages() if self.sipp is not None else ""

    def ensure_trunk(self) -> None:
        """Start sipp again on its port if it exited (its global -timeout)."""
        if self.sipp is not None and not (self.sipp.process and self.sipp.process.alive()):
            self.sipp = Sipp(TRUNK_SCENARIO, self.tmp, calls=TRUNK_CALLS, port=self.sipp.port)
            self.sipp.start()


def start_access_stack(
    tmp: Path,
    signalings: Mapping[str, Mapping[str, str | None]],
    *,
    trunk: str = "sipp",
    providers: Callable[[int], str] | None = None,
) -> Iterator[AccessStack]:
    """nats-server, the trunk (``sipp`` or the ``demo`` echo peer), media, a SIP agent
    and one signaling process per entry of ``signalings`` (its settings; None removes
    a setting the harness gives). Each signaling writes its audit lines to a file."""
    nats_proc, nats_url = start_nats(tmp)
    processes = [nats_proc]
    stack = AccessStack(tmp, nats_url, processes, {})
    try:
        if trunk == "sipp":
            stack.sipp = Sipp(TRUNK_SCENARIO, tmp, calls=TRUNK_CALLS, port=free_udp_port())
            stack.sipp.start()
            stack.trunk_port = stack.sipp.port
        else:
            stack.trunk_port = free_udp_port()
            demo_env = service_env(
                "nats://unused", DEMO_SIP_HOST="127.0.0.1", DEMO_SIP_PORT=str(stack.trunk_port)
            )
            demo = start_service("demo", demo_env, tmp)
            processes.append(demo)
            _wait_for(lambda: "demo SIP peer listening" in demo.log(), demo, stack)
        rtp_min, rtp_max = free_rtp_range(RTP_PORTS)
        common: dict[str, str] = {
            "HTTP_HOST": "127.0.0.1",
            "RTP_BIND_HOST": "127.0.0.1",
            "PUBLIC_IP": "127.0.0.1",
            "INVITE_TIMEOUT": "3",
        }
        if providers is not None:
            path = tmp / "providers.toml"
            path.write_text(providers(stack.trunk_port))
            common["PROVIDERS_FILE"] = str(path)
        if trunk == "demo":
            common["BRIDGE_DEMO"] = "true"
        stack.env = service_env(nats_url, **common)
        media_env = dict(stack.env, RTP_PORT_MIN=str(rtp_min), RTP_PORT_MAX=str(rtp_max))
        processes.append(start_service("media", media_env, tmp))
        agent_env = dict(
            stack.env,
            SIP_TRUNK_HOST="127.0.0.1",
            SIP_TRUNK_PORT=str(stack.trunk_port),
            SIP_USERNAME=TRUNK_USER if trunk == "sipp" else "demo",
            SIP_PASSWORD=TRUNK_PASSWORD if trunk == "sipp" else "",
            SIP_DOMAIN="trunk.test",
            SIP_TRANSPORT="udp",
            SIP_BIND_HOST="127.0.0.1",
        )
        processes.append(start_service("sipagent", agent_env, tmp))
        for name, overrides in signalings.items():
            stack.signalings[name] = _start_signaling(stack, name, overrides)
        if not wait_ready(nats_url, "media", "sipagent", "signaling"):
            pytest.fail(f"the stack did not start:\n{stack.logs()}")
        for signaling in stack.signalings.values():
            _wait_for(lambda s=signaling: _healthy(s), signaling.process, stack)  # type: ignore[misc]
        yield stack
    finally:
        for process in reversed(processes):
            process.stop()
        if stack.sipp is not None:
            stack.sipp.stop()


def _start_signaling(
    stack: AccessStack, name: str, overrides: Mapping[str, str | None]
) -> Signaling:
    port, ops_port = free_port(), free_port()
    audit_path = stack.tmp / f"audit-{name}.jsonl"
    env = dict(
        stack.env,
        HTTP_PORT=str(port),
        OPS_PORT=str(ops_port),
        INSTANCE_ID=f"sig-{name}",
        AUDIT_LOG=str(audit_path),
    )
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    process = Process(
        f"signaling-{name}",
        [sys.executable, "-m", "services.signaling"],
        env,
        stack.tmp / f"signaling-{name}.log",
        cwd=stack.tmp,
    ).start()
    stack.processes.append(process)
    audit = Path(env["AUDIT_LOG"]) if env.get("AUDIT_LOG") else None
    return Signaling(name, port, ops_port, f"sig-{name}", process, audit)


def _healthy(signaling: Signaling) -> bool:
    try:
        with urllib.request.urlopen(f"{signaling.base_url}/healthz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _wait_for(check: Callable[[], bool], process: Process, stack: AccessStack) -> None:
    deadline = time.monotonic() + 30
    while not check():
        if not process.alive() or time.monotonic() > deadline:
            pytest.fail(f"{process.name} did not start:\n{stack.logs()}")
        time.sleep(0.05)


# --- what the bus saw -----------------------------------------------------------------


class BusWatch:
    """Every event published under ``bridge.v1.>`` while it is open (its own connection)."""

    def __init__(self, nats_url: str) -> None:
        self._url = nats_url
        self._nc: Any = None
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def __aenter__(self) -> BusWatch:
        self._nc = await nats.connect(self._url, connect_timeout=2)
        await self._nc.subscribe("bridge.v1.>", cb=self._on_message)
        await self._nc.flush()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._nc.close()

    async def _on_message(self, msg: Any) -> None:
        try:
            data = json.loads(msg.data)
        except ValueError:
            return
        if isinstance(data, dict):
            self.events.append((msg.subject, data))

    def work(self, signaling: Signaling) -> list[dict[str, Any]]:
        """The CallRequested and DialRequested ``signaling`` published."""
        return [
            data
            for _, data in self.events
            if data.get("type") in ("call.requested", "dial.requested")
            and data.get("signaling_id") == signaling.instance_id
        ]

    async def settle(self) -> None:
        await asyncio.sleep(SETTLE)
        await self._nc.flush()


async def assert_nothing_left(
    stack: AccessStack,
    watch: BusWatch,
    signaling: Signaling,
    invites_before: int,
    work_before: int = 0,
) -> None:
    """No new work on NATS and no new INVITE at sipp: what every refusal must leave."""
    await watch.settle()
    work = watch.work(signaling)[work_before:]
    assert work == [], f"refused, yet on NATS: {work}"
    assert stack.invites() == invites_before, f"refused, yet sipp got an INVITE:\n{stack.logs()}"


# --- sockets and calls ----------------------------------------------------------------

FAKE_SDP = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n"
"An offer good enough for the session: refusals come before any media."


async def open_socket(
    base_url: str,
    token: str | None = None,
    *,
    bearer: bool = False,
    headers: Mapping[str, str] | None = None,
) -> BridgeClient:
    """A WebSocket with ``token`` in ``?token=`` or (``bearer``) the Authorization header."""
    sent = dict(headers or {})
    if bearer and token is not None:
        sent["Authorization"] = f"Bearer {token}"
    client = BridgeClient(base_url)
    await client.connect(token=None if bearer else token, headers=sent or None)
    return client


async def refusal(client: BridgeClient) -> tuple[str, int | None]:
    """The code of the ``error`` a refused socket gets, and its close code."""
    error = await client.expect("error", 10)
    return str(error["code"]), await client.wait_closed()


async def accepted(client: BridgeClient) -> None:
    """The socket is open for business: a hang-up with no call gets ``no_call``."""
    await client.send({"type": "hangup"})
    error = await client.expect("error", 10)
    assert error["code"] == "no_call", client.messages


async def refused_offer(client: BridgeClient, destination: str) -> dict[str, Any]:
    """The ``error`` an offer to ``destination`` gets (an attacker needs no real SDP)."""
    await client.send({"type": "offer", "sdp": FAKE_SDP, "destination": destination})
    return await client.expect("error", 10)


async def place_call(client: BridgeClient, destination: str = "+15551234567") -> None:
    await client.offer(codec="PCMU", destination=destination)
    await client.accept_answer()
    await client.expect("connected")


async def hang_up(client: BridgeClient) -> dict[str, Any]:
    await client.hangup()
    ended = await client.expect("ended")
    assert ended["cause"] == "normal", ended
    return ended


async def new_call(client: BridgeClient, destination: str = "+15551234567") -> None:
    """Place another call on the same socket (a fresh peer connection)."""
    if client.pc is not None:
        await client.pc.close()
    await place_call(client, destination)


async def refused_total(signaling: Signaling, reason: str) -> float:
    """``bridge_refused_total{reason}`` on the signaling's ops endpoint."""
    url = f"http://127.0.0.1:{signaling.ops_port}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        text = await response.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "bridge_refused_total" and sample.labels.get("reason") == reason:
                return float(sample.value)
    return 0.0


async def until(check: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        await asyncio.sleep(0.05)
