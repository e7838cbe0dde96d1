"""Registrations hosted by the asyncio agent, with a fake transport; the service's reply."""

from __future__ import annotations

import asyncio

import msgspec
from sipmessage import Request

from proto import registrations as registrations_proto
from services.common.providers import Trunk
from services.sipagent.agent import AgentConfig, SipAgent
from services.sipagent.app import registrations_reply
from services.sipagent.registration import RegistrationState
from tests.unit.sipagent.test_agent import TRUNK, FakeTransport, until
from tests.unit.sipagent.trunk import respond

CHALLENGE = 'Digest realm="trunk.test", nonce="n1", algorithm=MD5'
PASSWORD = "pw:secret"


async def _agent() -> tuple[SipAgent, FakeTransport]:
    transport = FakeTransport()
    agent = SipAgent(
        AgentConfig(trunk_host=TRUNK[0], trunk_port=TRUNK[1], public_ip="192.0.2.1"), transport
    )
    await agent.start()
    return agent, transport


def trunk(**overrides: object) -> Trunk:
    params: dict[str, object] = {
        "name": "main",
        "host": TRUNK[0],
        "port": TRUNK[1],
        "username": "bridge",
        "password": PASSWORD,
        "domain": "trunk.test",
        "register": True,
        "register_expires": 300,
    }
    params.update(overrides)
    return Trunk(**params)  # type: ignore[arg-type]


def registers(transport: FakeTransport) -> list[Request]:
    return [m for m, _ in transport.sent if isinstance(m, Request) and m.method == "REGISTER"]


async def test_register_through_the_agent_and_unregister() -> None:
    agent, transport = await _agent()
    agent.register(trunk())
    await until(lambda: len(registers(transport)) == 1)
    first = registers(transport)[0]
    assert transport.sent[0][1] == TRUNK
    assert str(first.uri) == "sip:trunk.test"
    assert first.headers["Contact"] == "<sip:bridge@192.0.2.1:5070;transport=udp>"
    assert first.headers["Expires"] == "300"

    challenge = respond(first, 401, "Unauthorized", headers=[("WWW-Authenticate", CHALLENGE)])
    agent.receive(bytes(challenge), TRUNK)
    second = registers(transport)[-1]
    assert second.headers.get("Authorization") is not None
    agent.receive(bytes(respond(second, 200, headers=[("Expires", "120")])), TRUNK)
    # A response of a registration is never answered as if it belonged to nothing.
    assert all(isinstance(m, Request) for m, _ in transport.sent)

    (status,) = agent.registrations.statuses(0.0)
    assert status.state is RegistrationState.REGISTERED
    assert agent.registrations.registered("main")

    reply = registrations_reply(agent, "sipagent-1")
    decoded = registrations_proto.decode(registrations_proto.encode(reply))
    (shown,) = decoded.registrations
    assert (decoded.instance_id, shown.trunk, shown.state) == ("sipagent-1", "main", "registered")
    assert shown.status_code == 200 and shown.expires_at is not None
    assert PASSWORD not in msgspec.json.encode(reply).decode()

    unregistering = asyncio.create_task(agent.unregister_all(5.0))
    await until(lambda: registers(transport)[-1].headers["Expires"] == "0")
    bye = registers(transport)[-1]
    agent.receive(bytes(respond(bye, 200)), TRUNK)
    assert await unregistering
    assert agent.registrations.statuses(0.0) == []
    await agent.close()


async def test_unregister_all_is_bounded_when_the_registrar_is_silent() -> None:
    agent, transport = await _agent()
    agent.register(trunk())
    await until(lambda: len(registers(transport)) == 1)
    first = registers(transport)[0]
    agent.receive(bytes(respond(first, 200)), TRUNK)
    assert not await agent.unregister_all(0.05)
    await agent.close()


async def test_unreachable_trunk_shows_failed_with_a_next_attempt() -> None:
    agent, _ = await _agent()
    agent.register(trunk(host="no-such-host.invalid"))
    await until(lambda: bool(agent.registrations.statuses(0.0)))
    (status,) = agent.registrations.statuses(0.0)
    assert status.state is RegistrationState.FAILED
    assert "no-such-host.invalid" in status.reason
    assert status.next_attempt_at is not None
    assert await agent.unregister_all(1.0)  # nothing bound: nothing to wait for
    await agent.close()
