"""Calls from the trunk to the browser: sipp calls in, aiortc clients listen, as a user meets it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import nats
import pytest

from services.common import calls_query
from tests.integration.client import BridgeClient
from tests.integration.conftest import SipagentFactory, Stack
from tests.integration.dns_tls import Stunnel, make_pki
from tests.integration.harness import TRUNK_USER, Process, Sipp, free_port, free_udp_port
from tests.integration.test_call import assert_tone_returns
from tests.integration.test_interop import (
    PHONE_USER,
    assert_phone_heard_the_browser,
    assert_phone_tone,
    hang_up_and_phone_sees_bye,
    phone_registered_at,
    running_registrar,
    via_kamailio,
)

pytestmark = pytest.mark.timeout(90)

DID = "+15550001111"
CALLER = "+15557654321"
CALLER_NAME = "Ada Lovelace"

CallerFactory = Callable[..., Sipp]


class Inbound:
    """A SIP agent that takes calls for ``alice`` and the sipp trunk that calls it."""

    def __init__(self, sipagent: SipagentFactory, tmp: Path, transport: str = "udp") -> None:
        self._sipagent = sipagent
        self.tmp = tmp
        self.transport = transport
        self.sip_port = free_port() if transport == "tcp" else free_udp_port()
        self.trunk_port = free_port() if transport == "tcp" else free_udp_port()
        self.started: list[Sipp] = []
        self.agent: Process | None = None

    def start_agent(self, **overrides: str) -> Process:
        settings = {"INBOUND_USER": "alice", "SIP_LOCAL_PORT": str(self.sip_port)}
        settings.update(overrides)
        self.agent = self._sipagent(self.trunk_port, transport=self.transport, **settings)
        return self.agent

    def call(self, scenario: str, *, over: str = "", to: int = 0, **keys: str) -> Sipp:
        """sipp, as the trunk, calls the bridge's SIP port (or ``to``) with ``scenario``,
        over the trunk's transport or ``over`` (``udp``, ``tcp``)."""
        values = {"did": DID, "caller": CALLER, "caller_name": CALLER_NAME}
        values.update(keys)
        over = over or self.transport
        sipp = Sipp(
            scenario,
            self.tmp,
            keys=values,
            transport="t1" if over == "tcp" else "u1",
            port=self.trunk_port if over == self.transport else 0,
            remote=f"127.0.0.1:{to or self.sip_port}",
        ).start()
        self.started.append(sipp)
        return sipp

    def stop(self) -> None:
        for sipp in self.started:
            sipp.stop()


@pytest.fixture
def inbound(sipagent: SipagentFactory, tmp_path: Path) -> Iterator[Inbound]:
    setup = Inbound(sipagent, tmp_path)
    yield setup
    setup.stop()


@pytest.fixture
def inbound_tcp(sipagent: SipagentFactory, tmp_path: Path) -> Iterator[Inbound]:
    setup = Inbound(sipagent, tmp_path, transport="tcp")
    yield setup
    setup.stop()


async def listener(stack: Stack, user: str = "alice") -> BridgeClient:
    client = await BridgeClient(stack.base_url).connect()
    listening = await client.listen(user)
    assert listening["user"] == user, listening
    return client


async def answered(client: BridgeClient) -> dict[str, object]:
    """Accept the ringing call; the ``incoming`` message it came with."""
    incoming = await client.expect("incoming", 15)
    await client.accept(str(incoming["call_id"]), codec="PCMU")
    await client.accept_answer()
    await client.expect("connected")
    return incoming


async def test_trunk_call_rings_alice_she_accepts_and_audio_flows_both_ways(
    stack: Stack, inbound: Inbound
) -> None:
    inbound.start_agent()
    client = await listener(stack)
    try:
        sipp = inbound.call("call_in_answered.xml")
        incoming = await answered(client)
        assert incoming["from"] == CALLER, incoming
        assert incoming["to"] == DID, incoming
        assert incoming["from_name"] == CALLER_NAME, incoming
        # sipp echoes what it gets: alice's tone went to the trunk and came back.
        await assert_tone_returns(client, stack)
        await client.hangup()
        ended = await client.expect("ended")
        assert ended["cause"] == "normal", ended
        assert await sipp.wait(10) == 0, f"the trunk got no BYE:\n{sipp.messages()}"
        messages = sipp.messages()
        assert "SIP/2.0 100 Trying" in messages
        assert "SIP/2.0 180 Ringing" in messages
    finally:
        await client.close()


async def test_declined_call_gets_486_at_the_trunk(stack: Stack, inbound: Inbound) -> None:
    inbound.start_agent()
    client = await listener(stack)
    try:
        sipp = inbound.call("call_in_refused.xml", status="486")
        incoming = await client.expect("incoming", 15)
        await client.reject(str(incoming["call_id"]))
        assert await sipp.wait(15) == 0, sipp.messages()
    finally:
        await client.close()


async def test_nobody_listening_gets_480(stack: Stack, inbound: Inbound) -> None:
    inbound.start_agent()
    sipp = inbound.call("call_in_refused.xml", status="480")
    assert await sipp.wait(20) == 0, sipp.messages()


async def test_ring_all_first_to_accept_wins(stack: Stack, inbound: Inbound) -> None:
    inbound.start_agent()
    first = await listener(stack)
    second = await listener(stack)
    try:
        sipp = inbound.call("call_in_answered.xml")
        other = await second.expect("incoming", 15)
        await answered(first)
        ended = await second.expect("ended", 10)
        assert ended["cause"] == "answered_elsewhere", ended
        assert ended.get("call_id", other["call_id"]) == other["call_id"], ended
        await first.hangup()
        await first.expect("ended")
        assert await sipp.wait(10) == 0, sipp.messages()
    finally:
        await first.close()
        await second.close()


async def test_cancel_while_ringing_stops_the_ringing(stack: Stack, inbound: Inbound) -> None:
    inbound.start_agent()
    client = await listener(stack)
    try:
        sipp = inbound.call("call_in_cancel.xml", ring_ms="500")
        incoming = await client.expect("incoming", 15)
        ended = await client.expect("ended", 15)
        assert ended["cause"] == "cancelled", ended
        assert ended.get("call_id", incoming["call_id"]) == incoming["call_id"], ended
        assert await sipp.wait(10) == 0, sipp.messages()
    finally:
        await client.close()


async def test_an_operator_ends_a_ringing_call_480_at_the_trunk(
    stack: Stack, inbound: Inbound
) -> None:
    """``bridge calls hangup`` of a call no browser took yet: the SIP agent holding it
    answers, the trunk hears 480 (not 487) and the ringing browser ``ended`` (operator)."""
    inbound.start_agent()
    client = await listener(stack)
    nc = await nats.connect(stack.nats_url.split(","), connect_timeout=2)
    try:
        sipp = inbound.call("call_in_refused.xml", status="480")
        incoming = await client.expect("incoming", 15)
        answer = await calls_query.request_hangup(nc, str(incoming["call_id"]), 5.0)
        assert answer is not None and answer.sipagent_id and not answer.signaling_id, answer
        ended = await client.expect("ended", 10)
        assert ended["cause"] == "operator", ended
        assert await sipp.wait(10) == 0, sipp.messages()
    finally:
        await nc.close()
        await client.close()


async def test_ring_timeout_gives_480(stack: Stack, inbound: Inbound, tmp_path: Path) -> None:
    providers = tmp_path / "providers.toml"
    providers.write_text(
        f"""
[trunks.carrier]
host = "127.0.0.1"
port = {inbound.trunk_port}
transport = "udp"

[[inbound]]
number = "{DID}"
users = ["alice", "bob"]
ring_timeout = 2
"""
    )
    inbound.start_agent(PROVIDERS_FILE=str(providers), INBOUND_USER="")
    client = await listener(stack, "bob")
    try:
        sipp = inbound.call("call_in_refused.xml", status="480")
        await client.expect("incoming", 15)
        ended = await client.expect("ended", 15)
        assert ended["cause"] == "no_answer", ended
        assert await sipp.wait(10) == 0, sipp.messages()
    finally:
        await client.close()


async def test_a_source_that_is_no_trunk_gets_403_and_nobody_rings(
    stack: Stack, inbound: Inbound
) -> None:
    # The trunk is elsewhere (127.0.0.2): sipp on 127.0.0.1 is a stranger.
    inbound.start_agent(SIP_TRUNK_HOST="127.0.0.2")
    client = await listener(stack)
    try:
        sipp = inbound.call("call_in_refused.xml", status="403")
        assert await sipp.wait(15) == 0, sipp.messages()
        await asyncio.sleep(1.0)
        assert not [m for m in client.messages if m["type"] == "incoming"], client.messages
    finally:
        await client.close()


async def test_inbound_over_tcp(stack: Stack, inbound_tcp: Inbound) -> None:
    inbound_tcp.start_agent()
    client = await listener(stack)
    try:
        sipp = inbound_tcp.call("call_in_answered.xml")
        await answered(client)
        await assert_tone_returns(client, stack)
        await client.hangup()
        await client.expect("ended")
        assert await sipp.wait(10) == 0, sipp.messages()
        assert "SIP/2.0/TCP" in sipp.messages()
    finally:
        await client.close()


async def test_a_trunk_configured_for_udp_calls_in_over_tcp(stack: Stack, inbound: Inbound) -> None:
    # SIP_TRANSPORT=udp: the agent listens on TCP on the same port all the same (RFC 3261 18).
    inbound.start_agent()
    client = await listener(stack)
    try:
        sipp = inbound.call("call_in_answered.xml", over="tcp")
        await answered(client)
        await assert_tone_returns(client, stack)
        await client.hangup()
        ended = await client.expect("ended")
        assert ended["cause"] == "normal", ended
        # The 200 and the BYE came back over sipp's own TCP connection.
        assert await sipp.wait(10) == 0, f"the trunk got no BYE:\n{sipp.messages()}"
        assert "SIP/2.0/TCP" in sipp.messages()
    finally:
        await client.close()


async def test_trunk_calls_in_over_tls_and_hears_the_bye_over_it(
    stack: Stack, inbound: Inbound, tmp_path: Path
) -> None:
    # The agent's certificate, from a CA only the trunk's side (stunnel) trusts.
    pki = make_pki(tmp_path, "bridge.test", prefix="agent-")
    tls_port = free_port()
    inbound.start_agent(
        SIP_TLS_CERT=str(pki.cert), SIP_TLS_KEY=str(pki.key), SIP_TLS_PORT=str(tls_port)
    )
    # sipp speaks TCP to stunnel, which is the trunk's TLS client toward SIP_TLS_PORT.
    tunnel = Stunnel(tmp_path, pki, tls_port, client=True).start()
    client = await listener(stack)
    try:
        sipp = inbound.call("call_in_answered.xml", over="tcp", to=tunnel.port)
        incoming = await answered(client)
        assert incoming["from"] == CALLER, incoming
        await assert_tone_returns(client, stack)
        await client.hangup()
        ended = await client.expect("ended")
        assert ended["cause"] == "normal", ended
        # sipp's only connection is to stunnel: the BYE came to it over the TLS one.
        assert await sipp.wait(10) == 0, f"the trunk got no BYE:\n{sipp.messages()}"
        assert "BYE sip:" in sipp.messages()
        assert tunnel.servers() == 1, tunnel.process.log() if tunnel.process else ""
    finally:
        await client.close()
        tunnel.stop()


# --- baresip -> kamailio -> the bridge's registered binding -> the browser -------


async def test_phone_calls_the_bridges_registered_user_through_kamailio(
    stack: Stack, sipagent: SipagentFactory, tmp_path: Path
) -> None:
    with (
        running_registrar(tmp_path) as registrar,
        phone_registered_at(tmp_path, registrar) as phone,
    ):
        sip_port = free_udp_port()
        via_kamailio(
            sipagent,
            registrar,
            SIP_REGISTER="true",
            INBOUND_USER="alice",
            SIP_LOCAL_PORT=str(sip_port),
        )
        registrar.wait_registered(TRUNK_USER)
        client = await listener(stack)
        try:
            assert phone.control is not None
            phone.control.command("dial", f"sip:{TRUNK_USER}@127.0.0.1:{registrar.port}")
            incoming = await answered(client)
            assert incoming["from"] == PHONE_USER, incoming
            await asyncio.to_thread(phone.wait_event, "CALL_ESTABLISHED", 10)
            await assert_phone_tone(client, stack.logs(), registrar.logs())
            await hang_up_and_phone_sees_bye(client, phone)
            assert_phone_heard_the_browser(phone)
        finally:
            await client.close()
