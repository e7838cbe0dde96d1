"""The fleet's rules for dead instances, on calls from the trunk: sipp calls in,
a browser listening as ``alice`` answers, then the SIP agent, the signaling
instance or the media worker holding the call is killed (SIGKILL) and the
trunk still gets its BYE.

Two of each service on one JetStream nats-server. The trunk calls one SIP
agent; the other, on its own SIP port toward the same trunk, is the survivor.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import Iterator
from itertools import count
from pathlib import Path

import pytest

from proto.fleet import CallRecord
from services.common.sip.message import tag_of
from services.sipagent.recovery import CSEQ_GAP
from tests.integration.client import BridgeClient
from tests.integration.harness import (
    TRUNK_PASSWORD,
    TRUNK_USER,
    NatsCluster,
    Process,
    Sipp,
    free_port,
    free_udp_port,
    service_env,
    start_nats,
    wait_ready,
)
from tests.integration.test_fleet import (
    BYE_WITHIN,
    Fleet,
    live,
    registry_records,
    wait_heartbeats,
)
from tests.integration.test_inbound import Inbound, answered

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("fleet-inbound")
    nats, url = start_nats(tmp)
    fleet = Fleet(
        NatsCluster([nats], [url], []),
        tmp,
        service_env(
            url,
            LOG_LEVEL="INFO",
            HTTP_HOST="127.0.0.1",
            RTP_BIND_HOST="127.0.0.1",
            PUBLIC_IP="127.0.0.1",
            SETUP_TIMEOUT="10",
        ),
    )
    try:
        for name in ("media-a", "media-b"):
            fleet.start_media(name)
        for name in ("signaling-a", "signaling-b"):
            fleet.start_signaling(name)
        if not wait_ready(url, "media", "signaling"):
            pytest.fail(f"media or signaling did not start:\n{fleet.logs()}")
        yield fleet
        for name in list(fleet.processes):
            fleet.stop(name, signal.SIGINT)
    finally:
        nats.stop()


_agent_names = (f"sipagent-{n}" for n in count(1))


class Agents:
    """Two SIP agents toward one sipp trunk: the trunk calls the first."""

    def __init__(self, fleet: Fleet, tmp: Path, transport: str = "udp") -> None:
        self.fleet = fleet
        self.names: list[str] = []
        self.ports: dict[str, int] = {}
        self.inbound = Inbound(self._start, tmp, transport)

    def _start(self, trunk_port: int, transport: str = "udp", **overrides: str) -> Process:
        name = next(_agent_names)
        self.names.append(name)
        self.ports[name] = int(overrides["SIP_LOCAL_PORT"])
        return self.fleet.start(
            name,
            "sipagent",
            SIP_TRUNK_HOST="127.0.0.1",
            SIP_TRUNK_PORT=str(trunk_port),
            SIP_USERNAME=TRUNK_USER,
            SIP_PASSWORD=TRUNK_PASSWORD,
            SIP_DOMAIN="trunk.test",
            SIP_TRANSPORT=transport,
            SIP_BIND_HOST="127.0.0.1",
            **overrides,
        )

    async def start(self) -> tuple[str, str]:
        """The called agent and the survivor, both heard by everyone."""
        self.inbound.start_agent()
        port = free_port() if self.inbound.transport == "tcp" else free_udp_port()
        self.inbound.start_agent(SIP_LOCAL_PORT=str(port))
        await wait_heartbeats(self.fleet, *live(self.fleet, "media"), *self.names)
        called, survivor = self.names
        return called, survivor

    def stop(self) -> None:
        self.inbound.stop()
        for name in self.names:
            self.fleet.stop(name)


@pytest.fixture
def agents(fleet: Fleet, tmp_path: Path) -> Iterator[Agents]:
    # UDP only: sipp, as a TCP caller, abandons its call when the connection to
    # the killed agent closes, so it would never take the survivor's BYE.
    setup = Agents(fleet, tmp_path)
    yield setup
    setup.stop()


async def connected_call(fleet: Fleet, agents: Agents) -> tuple[BridgeClient, Sipp, CallRecord]:
    """alice (on signaling-a) answers the trunk's call; its confirmed record."""
    client = await BridgeClient(fleet.http["signaling-a"]).connect()
    listening = await client.listen("alice")
    assert listening["user"] == "alice", listening
    sipp = agents.inbound.call("call_in_answered.xml")
    incoming = await answered(client)
    call_id = str(incoming["call_id"])
    deadline = time.monotonic() + 5
    while True:
        found = [r for r in await registry_records(fleet) if r.call_id == call_id]
        if found and found[0].state == "confirmed" and found[0].media_id:
            record = found[0]
            break
        assert time.monotonic() < deadline, f"no confirmed record: {found}\n{fleet.logs()}"
        await asyncio.sleep(0.1)
    assert record.direction == "inbound", record
    assert record.signaling_id == "signaling-a", record
    assert record.sipagent_id == agents.names[0], record
    return client, sipp, record


def kill(fleet: Fleet, name: str) -> float:
    """kill -9 ``name``; when it died."""
    process = fleet.processes.pop(name)
    assert process.popen is not None
    process.popen.kill()
    process.popen.wait()
    return time.monotonic()


async def bye_within(fleet: Fleet, sipp: Sipp, killed_at: float) -> float:
    """Seconds from the kill to sipp's receiving the BYE (sipp completes its scenario)."""
    try:
        code = await sipp.wait(15)
    except TimeoutError:
        raise AssertionError(f"no BYE at the trunk\n{fleet.logs()}") from None
    took = time.monotonic() - killed_at
    assert code == 0, sipp.messages()
    print(f"\nthe trunk got its BYE {took:.2f} s after the kill")
    return took


_HEADER = r"^{}:[ \t]*(.*?)\r?$"


def message(messages: str, first_line: str) -> str:
    """The first SIP message in sipp's trace whose first line starts with ``first_line``."""
    for block in re.split(r"^-{5,}.*$", messages, flags=re.M):
        # Each block: sipp's "UDP message sent/received ..." line, then the message.
        text = block.strip().partition("\n")[2].strip()
        if text.startswith(first_line):
            return text
    raise AssertionError(f"no {first_line!r} in:\n{messages}")


def header(text: str, name: str) -> str:
    found = re.search(_HEADER.format(re.escape(name)), text, flags=re.M | re.I)
    assert found is not None, f"no {name} in:\n{text}"
    return found.group(1).strip()


def assert_uas_bye(sipp: Sipp, survivor_port: int) -> None:
    """The survivor's BYE is in the trunk's dialog, from the UAS side of it."""
    messages = sipp.messages()
    invite = message(messages, "INVITE ")
    ok = message(messages, "SIP/2.0 200")
    bye = message(messages, "BYE ")
    assert header(bye, "Call-ID") == header(invite, "Call-ID"), bye
    # We answered: our tag (the 200's To tag) is the From tag, the trunk's the To tag.
    assert tag_of(header(bye, "From")) == tag_of(header(ok, "To")), bye
    assert tag_of(header(bye, "To")) == tag_of(header(invite, "From")), bye
    # Our own CSeq space: the trunk's INVITE CSeq says nothing about ours.
    assert header(bye, "CSeq") == f"{CSEQ_GAP} BYE", bye
    contact = re.search(r"<([^>]+)>", header(invite, "Contact"))
    assert contact is not None
    assert bye.splitlines()[0] == f"BYE {contact.group(1)} SIP/2.0", bye
    assert f"127.0.0.1:{survivor_port}" in header(bye, "Via"), bye


async def test_killed_sip_agent_inbound_call_gets_bye_from_a_survivor(
    fleet: Fleet, agents: Agents
) -> None:
    called, survivor = await agents.start()
    client, sipp, _ = await connected_call(fleet, agents)
    try:
        killed_at = kill(fleet, called)
        took = await bye_within(fleet, sipp, killed_at)
        assert took < BYE_WITHIN, took
        assert "BYE for a dead SIP agent's dialog" in fleet.processes[survivor].log()
        assert_uas_bye(sipp, agents.ports[survivor])
        ended = await client.expect("ended", 10)
        assert ended["cause"] == "internal", ended
        await asyncio.sleep(0.5)
        assert not await registry_records(fleet), "a dead SIP agent's record was left"
    finally:
        await client.close()


async def test_killed_signaling_inbound_call_gets_bye(fleet: Fleet, agents: Agents) -> None:
    await agents.start()
    client, sipp, _ = await connected_call(fleet, agents)
    try:
        killed_at = kill(fleet, "signaling-a")
        took = await bye_within(fleet, sipp, killed_at)
        assert took < BYE_WITHIN, took
        bye = message(sipp.messages(), "BYE ")
        assert header(bye, "CSeq").endswith(" BYE"), bye
        await asyncio.sleep(0.5)
        assert not await registry_records(fleet), "a dead signaling instance's record was left"
    finally:
        await client.close()
        fleet.start_signaling("signaling-a")
        await wait_heartbeats(fleet, "signaling-a")


async def test_killed_media_worker_inbound_call_gets_bye(fleet: Fleet, agents: Agents) -> None:
    await agents.start()
    client, sipp, record = await connected_call(fleet, agents)
    try:
        killed_at = kill(fleet, record.media_id)
        took = await bye_within(fleet, sipp, killed_at)
        assert took < BYE_WITHIN, took
        ended = await client.expect("ended", 10)
        assert ended["cause"] == "media_failed", ended
        await asyncio.sleep(0.5)
        assert not await registry_records(fleet), "a dead media worker's record was left"
    finally:
        await client.close()
        fleet.start_media(record.media_id)
        await wait_heartbeats(fleet, record.media_id)
