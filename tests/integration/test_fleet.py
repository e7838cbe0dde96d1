"""Many instances, one fleet: a 3-node NATS cluster with an R3 call registry,
two of each service, calls through the WebSocket protocol to sipp, and
instances killed mid-call.

The numbers the issue asks for (how calls spread, how long survivors took to
end a dead instance's calls) are printed, not asserted: run with ``-s``.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import nats
import pytest

from proto import fleet as fleet_records
from proto import subjects
from proto.fleet import CallRecord
from services.common.fleet.registry import CallRegistry
from tests.integration.client import BridgeClient
from tests.integration.harness import (
    TRUNK_PASSWORD,
    TRUNK_USER,
    NatsCluster,
    Process,
    Sipp,
    free_port,
    free_rtp_range,
    open_registry,
    service_env,
    start_nats_cluster,
    wait_ready,
)
from tests.integration.test_call import CHALLENGE_401, assert_tone_returns

pytestmark = pytest.mark.timeout(180)

MEDIA_MAX_CALLS = 5
"Below 8, so 8 calls cannot all sit on one worker whatever placement does."
BYE_WITHIN = 5.0
"The promise: a dead instance's calls get their BYE at the trunk within this."


@dataclass
class Fleet:
    """The processes of this module, by name, on one NATS cluster."""

    cluster: NatsCluster
    tmp: Path
    env: dict[str, str]
    processes: dict[str, Process] = field(default_factory=dict)
    http: dict[str, str] = field(default_factory=dict)
    "Base URL of each signaling instance, by name."

    def start(self, name: str, service: str, **overrides: str) -> Process:
        """One service process named ``name`` (also its ``INSTANCE_ID``)."""
        env = dict(self.env, INSTANCE_ID=name, **overrides)
        argv = [sys.executable, "-m", f"services.{service}"]
        process = Process(name, argv, env, self.tmp / f"{name}.log", self.tmp).start()
        self.processes[name] = process
        return process

    def start_media(self, name: str) -> Process:
        rtp_min, rtp_max = free_rtp_range()
        return self.start(name, "media", RTP_PORT_MIN=str(rtp_min), RTP_PORT_MAX=str(rtp_max))

    def start_signaling(self, name: str) -> Process:
        port = free_port()
        self.http[name] = f"http://127.0.0.1:{port}"
        return self.start(name, "signaling", HTTP_PORT=str(port))

    def start_sipagent(self, name: str, trunk_port: int) -> Process:
        return self.start(
            name,
            "sipagent",
            SIP_TRUNK_HOST="127.0.0.1",
            SIP_TRUNK_PORT=str(trunk_port),
            SIP_USERNAME=TRUNK_USER,
            SIP_PASSWORD=TRUNK_PASSWORD,
            SIP_DOMAIN="trunk.test",
            SIP_BIND_HOST="127.0.0.1",
        )

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        process = self.processes.pop(name, None)
        if process is not None:
            process.stop(sig)

    def logs(self) -> str:
        parts = [*self.cluster.nodes, *self.processes.values()]
        return "\n".join(f"----- {p.name}\n{p.log()[-4000:]}" for p in parts)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("fleet")
    cluster = start_nats_cluster(tmp)
    try:
        # R3: the records outlive one node. The bucket is made before any service binds it.
        took = open_registry(cluster.url, replicas=3)
        print(f"\nJetStream cluster formed, R3 call registry open after {took:.1f} s")
        env = service_env(
            cluster.url,
            LOG_LEVEL="INFO",
            HTTP_HOST="127.0.0.1",
            RTP_BIND_HOST="127.0.0.1",
            PUBLIC_IP="127.0.0.1",
            MAX_CALLS=str(MEDIA_MAX_CALLS),
            KV_REPLICAS="3",
            SETUP_TIMEOUT="10",
            INVITE_TIMEOUT="10",
        )
        fleet = Fleet(cluster, tmp, env)
        for name in ("media-a", "media-b"):
            fleet.start_media(name)
        for name in ("signaling-a", "signaling-b"):
            fleet.start_signaling(name)
        if not wait_ready(cluster.url, "media", "signaling"):
            pytest.fail(f"media or signaling did not start:\n{fleet.logs()}")
        yield fleet
        for name in list(fleet.processes):
            fleet.stop(name, signal.SIGINT)
    finally:
        cluster.stop()


async def wait_heartbeats(fleet: Fleet, *names: str, timeout: float = 20.0) -> None:
    """Until every instance in ``names`` was heard, then one more interval so the
    signaling instances have heard them too."""
    nc = await nats.connect(fleet.cluster.url.split(","))
    heard: set[str] = set()
    try:

        async def on_beat(msg: nats.aio.msg.Msg) -> None:
            heard.add(fleet_records.decode_heartbeat(msg.data).instance_id)

        await nc.subscribe(subjects.heartbeats(), cb=on_beat)
        deadline = time.monotonic() + timeout
        while not set(names) <= heard:
            if time.monotonic() > deadline:
                raise AssertionError(f"no heartbeat from {set(names) - heard}\n{fleet.logs()}")
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.2)
    finally:
        await nc.close()


async def registry_records(fleet: Fleet) -> list[CallRecord]:
    """Every record of the call registry as it stands."""
    nc = await nats.connect(fleet.cluster.url.split(","))
    try:
        registry = await CallRegistry.open(nc)
        return [entry.record for entry in await registry.list_all()]
    finally:
        await nc.close()


async def call_records(fleet: Fleet) -> dict[str, CallRecord]:
    """The records holding a SIP dialog, by SIP Call-ID."""
    return {r.dialog.sip_call_id: r for r in await registry_records(fleet) if r.dialog is not None}


RECORDS_WITHIN = 10.0
"Seconds the registry may take to show every connected call's confirmed record."


def destination(n: int) -> str:
    return f"+1555000{n:04d}"


_INVITE = re.compile(r"^INVITE sip:(\+\d+)@\S+ SIP/2\.0$.*?^Call-ID:\s*(\S+)", re.M | re.S)
_BYE = re.compile(r"^BYE sip:\S+ SIP/2\.0$.*?^Call-ID:\s*(\S+)", re.M | re.S)


def sip_call_ids(sipp: Sipp) -> dict[str, str]:
    """SIP Call-ID of each destination dialled, from what sipp received."""
    return {dest: call_id for dest, call_id in _INVITE.findall(sipp.messages())}


def byes(sipp: Sipp) -> set[str]:
    """SIP Call-IDs of the BYEs sipp received."""
    return set(_BYE.findall(sipp.messages()))


@dataclass
class Call:
    n: int
    client: BridgeClient
    signaling: str
    sip_call_id: str = ""
    record: CallRecord | None = None


async def place_calls(fleet: Fleet, count: int, first: int = 0) -> list[Call]:
    """``count`` concurrent calls, alternating between the signaling instances."""
    names = sorted(fleet.http)

    async def one(n: int) -> Call:
        name = names[n % len(names)]
        client = await BridgeClient(fleet.http[name]).connect()
        call = Call(n, client, name)
        await client.offer(codec="PCMU", destination=destination(n))
        await client.accept_answer(30)
        await client.expect("connected", 30)
        return call

    calls = await asyncio.gather(*(one(n) for n in range(first, first + count)))
    return list(calls)


async def identify(fleet: Fleet, sipp: Sipp, calls: list[Call]) -> None:
    """Each call's SIP Call-ID (via its destination) and registry record."""
    ids = sip_call_ids(sipp)
    # The SIP agents write the records beside the call, not before the browser hears
    # `connected`: on a loaded machine the last writes may still be on their way.
    deadline = time.monotonic() + RECORDS_WITHIN
    while True:
        records = await call_records(fleet)
        wanted = [records.get(ids[destination(call.n)]) for call in calls]
        if all(r is not None and r.state == "confirmed" for r in wanted):
            break
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    for call in calls:
        call.sip_call_id = ids[destination(call.n)]
        call.record = records.get(call.sip_call_id)
        assert call.record is not None, f"call {call.n} has no record: {records}"
        assert call.record.state == "confirmed", call.record


def holder(call: Call, service: str) -> str:
    assert call.record is not None
    return {"media": call.record.media_id, "sipagent": call.record.sipagent_id}[service]


async def close_all(calls: list[Call]) -> None:
    await asyncio.gather(*(c.client.close() for c in calls), return_exceptions=True)


async def hang_up_all(calls: list[Call]) -> None:
    for call in calls:
        await call.client.hangup()
    for call in calls:
        await call.client.expect("ended", 15)


async def kill_and_time_byes(
    fleet: Fleet, sipp: Sipp, name: str, victims: list[Call]
) -> dict[int, float]:
    """kill -9 ``name``; seconds until sipp got each victim's BYE (fails after 15 s)."""
    process = fleet.processes.pop(name)
    assert process.popen is not None
    killed_at = time.monotonic()
    process.popen.kill()
    process.popen.wait()
    took: dict[int, float] = {}
    while len(took) < len(victims):
        seen = byes(sipp)
        for call in victims:
            if call.n not in took and call.sip_call_id in seen:
                took[call.n] = time.monotonic() - killed_at
        if time.monotonic() - killed_at > 15:
            missing = [c.n for c in victims if c.n not in took]
            raise AssertionError(f"no BYE for calls {missing} after {name} died\n{fleet.logs()}")
        await asyncio.sleep(0.05)
    return took


def report(what: str, took: dict[int, float]) -> None:
    values = sorted(took.values())
    print(
        f"\n{what}: {len(values)} call(s) got their BYE at the trunk after "
        f"{values[0]:.2f}-{values[-1]:.2f} s (each: "
        + ", ".join(f"{took[n]:.2f}" for n in sorted(took))
        + ")"
    )


async def test_eight_calls_spread_over_two_of_each_with_audio(fleet: Fleet, tmp_path: Path) -> None:
    sipp = Sipp("challenge_echo_bye.xml", tmp_path, keys=dict(CHALLENGE_401), calls=8).start()
    fleet.start_sipagent("sipagent-a", sipp.port)
    fleet.start_sipagent("sipagent-b", sipp.port)
    calls: list[Call] = []
    try:
        await wait_heartbeats(fleet, "media-a", "media-b", "sipagent-a", "sipagent-b")
        calls = await place_calls(fleet, 8)
        await identify(fleet, sipp, calls)
        spread = {
            service: Counter(holder(c, service) for c in calls) for service in ("media", "sipagent")
        }
        media, agents = dict(spread["media"]), dict(spread["sipagent"])
        print(f"\nplacement of 8 calls: media {media}; SIP agents {agents}")
        assert set(spread["media"]) == {"media-a", "media-b"}, spread
        assert Counter(c.signaling for c in calls) == {"signaling-a": 4, "signaling-b": 4}

        # Every call: the tone goes to the trunk and its echo comes back.
        await asyncio.gather(*(assert_tone_returns(c.client, fleet) for c in calls))
        await hang_up_all(calls)
        assert await sipp.wait(15) == 0, f"trunk missed a BYE:\n{sipp.messages()[-5000:]}"
        assert not await registry_records(fleet), "records left after every call ended"
    finally:
        await close_all(calls)
        sipp.stop()
        fleet.stop("sipagent-a")
        fleet.stop("sipagent-b")


def live(fleet: Fleet, service: str) -> list[str]:
    return sorted(name for name in fleet.processes if name.startswith(service))


async def test_killed_media_worker_calls_get_bye_others_keep_audio(
    fleet: Fleet, tmp_path: Path
) -> None:
    sipp = Sipp("challenge_echo_bye.xml", tmp_path, keys=dict(CHALLENGE_401), calls=4).start()
    fleet.start_sipagent("sipagent-c", sipp.port)
    fleet.start_sipagent("sipagent-d", sipp.port)
    calls: list[Call] = []
    try:
        await wait_heartbeats(fleet, *live(fleet, "media"), "sipagent-c", "sipagent-d")
        calls = await place_calls(fleet, 4)
        await identify(fleet, sipp, calls)
        spread = Counter(holder(c, "media") for c in calls)
        victim_name = spread.most_common(1)[0][0]
        victims = [c for c in calls if holder(c, "media") == victim_name]
        others = [c for c in calls if c not in victims]
        print(f"\nmedia spread {dict(spread)}; killing {victim_name}")

        took = await kill_and_time_byes(fleet, sipp, victim_name, victims)
        report(f"kill -9 {victim_name}", took)
        assert max(took.values()) < BYE_WITHIN, took
        for call in victims:
            ended = await call.client.expect("ended", 10)
            print(f"call {call.n}: ended {ended}")
        # The other worker's calls never noticed.
        await asyncio.gather(*(assert_tone_returns(c.client, fleet) for c in others))
        assert not any(m["type"] == "ended" for c in others for m in c.client.messages)
        await hang_up_all(others)
        assert await sipp.wait(15) == 0, f"trunk missed a BYE:\n{sipp.messages()[-5000:]}"
        assert not await registry_records(fleet), "a dead worker's records were left"
    finally:
        await close_all(calls)
        sipp.stop()
        fleet.stop("sipagent-c")
        fleet.stop("sipagent-d")
        if len(live(fleet, "media")) < 2:
            fleet.start_media("media-c")


async def test_killed_sip_agent_calls_get_bye_from_a_survivor(fleet: Fleet, tmp_path: Path) -> None:
    sipp = Sipp("challenge_echo_bye.xml", tmp_path, keys=dict(CHALLENGE_401), calls=4).start()
    fleet.start_sipagent("sipagent-e", sipp.port)
    fleet.start_sipagent("sipagent-f", sipp.port)
    calls: list[Call] = []
    try:
        await wait_heartbeats(fleet, *live(fleet, "media"), "sipagent-e", "sipagent-f")
        calls = await place_calls(fleet, 4)
        await identify(fleet, sipp, calls)
        spread = Counter(holder(c, "sipagent") for c in calls)
        victim_name = spread.most_common(1)[0][0]
        survivor = "sipagent-f" if victim_name == "sipagent-e" else "sipagent-e"
        victims = [c for c in calls if holder(c, "sipagent") == victim_name]
        others = [c for c in calls if c not in victims]
        print(f"\nSIP agent spread {dict(spread)}; killing {victim_name}")

        took = await kill_and_time_byes(fleet, sipp, victim_name, victims)
        report(f"kill -9 {victim_name}", took)
        assert max(took.values()) < BYE_WITHIN, took
        assert "BYE for a dead SIP agent's dialog" in fleet.processes[survivor].log()
        for call in victims:
            ended = await call.client.expect("ended", 10)
            assert ended["cause"] == "internal", ended
        await asyncio.gather(*(assert_tone_returns(c.client, fleet) for c in others))
        await hang_up_all(others)
        assert await sipp.wait(15) == 0, f"trunk missed a BYE:\n{sipp.messages()[-5000:]}"
        assert not await registry_records(fleet), "a dead SIP agent's records were left"
    finally:
        await close_all(calls)
        sipp.stop()
        fleet.stop("sipagent-e")
        fleet.stop("sipagent-f")


async def test_one_nats_node_lost_calls_keep_audio_new_call_works(
    fleet: Fleet, tmp_path: Path
) -> None:
    sipp = Sipp("challenge_echo_bye.xml", tmp_path, keys=dict(CHALLENGE_401), calls=3).start()
    fleet.start_sipagent("sipagent-g", sipp.port)
    fleet.start_sipagent("sipagent-h", sipp.port)
    calls: list[Call] = []
    node: Process | None = None
    try:
        await wait_heartbeats(fleet, *live(fleet, "media"), "sipagent-g", "sipagent-h")
        calls = await place_calls(fleet, 2)
        # The node serving the most of the bridge's connections.
        clients = [await connections(monitor) for monitor in fleet.cluster.monitors]
        index = clients.index(max(clients))
        node = fleet.cluster.nodes[index]
        print(f"\nclients per NATS node {clients}; killing {node.name}")
        assert node.popen is not None
        node.popen.kill()
        node.popen.wait()
        lost_at = time.monotonic()
        await asyncio.gather(*(assert_tone_returns(c.client, fleet) for c in calls))
        placing = time.monotonic()
        [new] = await place_calls(fleet, 1, first=2)
        calls.append(new)
        print(
            f"\na new call placed {placing - lost_at:.1f} s after a NATS node died"
            f" connected in {time.monotonic() - placing:.1f} s"
        )
        await assert_tone_returns(new.client, fleet)
        # Lost leases would have ended calls: every call is still up.
        assert not any(m["type"] == "ended" for c in calls for m in c.client.messages)
        await hang_up_all(calls)
        assert await sipp.wait(15) == 0, f"trunk missed a BYE:\n{sipp.messages()[-5000:]}"
    finally:
        await close_all(calls)
        sipp.stop()
        fleet.stop("sipagent-g")
        fleet.stop("sipagent-h")
        if node is not None:
            node.start()


async def connections(monitor: str) -> int:
    """Client connections of one nats-server, from its monitoring endpoint."""
    async with aiohttp.ClientSession() as http, http.get(f"{monitor}/connz") as response:
        return int((await response.json())["num_connections"])
