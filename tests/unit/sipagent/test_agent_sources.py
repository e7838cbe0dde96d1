"""The agent screens every message by its source: 403 or silence for strangers, a rate for all."""

from __future__ import annotations

import logging

import pytest
from sipmessage import Request, Response

from services.common.metrics import Metrics
from services.common.providers import Trunk
from services.common.settings import load_settings
from services.common.sip.message import parse_message
from services.common.sipaddr import OutboundProxy
from services.sipagent.agent import AgentConfig, SipAgent
from services.sipagent.events import Answered, Ended
from services.sipagent.transport import Addr, SipTransport
from tests.unit.sipagent.test_failover import FIRST, SECOND, Resolver, until
from tests.unit.sipagent.trunk import ANSWER, OFFER, respond, trunk_request

TRUNK = ("127.0.0.1", 5060)
SCANNER = ("198.51.100.66", 5060)


class Wire(SipTransport):
    name = "udp"
    local_port = 5070

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Addr]] = []

    def send(self, data: bytes, addr: Addr) -> None:
        self.sent.append((data, addr))

    async def close(self) -> None:
        pass

    def responses(self, addr: Addr) -> list[Response]:
        found = []
        for data, to in self.sent:
            if data.startswith(b"SIP/2.0 400"):  # echoes the unparsable request
                continue
            message = parse_message(data)
            if to == addr and isinstance(message, Response):
                found.append(message)
        return found


async def _agent(**config: object) -> tuple[SipAgent, Wire, Metrics]:
    wire = Wire()
    metrics = Metrics()
    settings: dict[str, object] = {
        "trunk_host": TRUNK[0],
        "trunk_port": TRUNK[1],
        "domain": "trunk.test",
        "public_ip": "192.0.2.1",
    }
    settings.update(config)
    agent = SipAgent(
        AgentConfig(**settings),  # type: ignore[arg-type]
        wire,
        resolver=Resolver([FIRST, SECOND]),
        metrics=metrics,
    )
    await agent.start()
    return agent, wire, metrics


def refused(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value("bridge_sip_refused_total", {"reason": reason})
    return value or 0.0


def scan(method: str, number: int = 1, source: Addr = SCANNER) -> bytes:
    body = b"v=0\r\n" if method == "INVITE" else b""
    return (
        f"{method} sip:9011441234567@192.0.2.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {source[0]}:{source[1]};branch=z9hG4bKscan{number}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:100@{source[0]}>;tag=scan{number}\r\n"
        "To: <sip:9011441234567@192.0.2.1>\r\n"
        f"Call-ID: scan-{number}@{source[0]}\r\n"
        f"CSeq: 1 {method}\r\n"
        f"Contact: <sip:100@{source[0]}:{source[1]}>\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


@pytest.mark.parametrize("method", ["INVITE", "OPTIONS", "REGISTER", "BYE", "MESSAGE"])
async def test_a_request_from_an_unknown_source_gets_403_and_reaches_nothing(method: str) -> None:
    agent, wire, metrics = await _agent()
    request = parse_message(scan(method))
    agent.receive(scan(method), SCANNER)
    [forbidden] = wire.responses(SCANNER)
    assert (forbidden.code, forbidden.phrase) == (403, "Forbidden")
    for name in ("Via", "From", "Call-ID", "CSeq"):
        assert forbidden.headers.getlist(name) == request.headers.getlist(name)
    assert forbidden.headers["To"].startswith(request.headers["To"] + ";tag=")
    assert agent.active_calls == 0
    assert refused(metrics, "unknown_source") == 1
    # The same request from the trunk's address is handled as always.
    agent.receive(scan(method, source=TRUNK), (TRUNK[0], 5099))
    assert wire.responses((TRUNK[0], 5099))[0].code in (200, 481)
    await agent.close()


async def test_an_ack_from_an_unknown_source_gets_nothing() -> None:
    agent, wire, metrics = await _agent()
    agent.receive(scan("ACK"), SCANNER)
    assert wire.sent == []
    assert refused(metrics, "unknown_source") == 1
    await agent.close()


async def test_drop_mode_says_nothing_even_to_garbage() -> None:
    agent, wire, metrics = await _agent(unknown_sources="drop")
    for number, method in enumerate(["INVITE", "OPTIONS", "REGISTER"]):
        agent.receive(scan(method, number), SCANNER)
    agent.receive(scan("OPTIONS").replace(b"CSeq: 1 OPTIONS", b"CSeq: x"), SCANNER)
    assert wire.sent == []
    assert refused(metrics, "unknown_source") == 4
    # The trunk still gets its answers, a bad message its 400.
    agent.receive(scan("OPTIONS", source=TRUNK), TRUNK)
    agent.receive(scan("OPTIONS").replace(b"CSeq: 1 OPTIONS", b"CSeq: x"), TRUNK)
    assert [r.code for r in wire.responses(TRUNK)] == [200]
    assert wire.sent[-1][0].startswith(b"SIP/2.0 400 Bad Request")
    await agent.close()


async def test_a_bye_of_a_dialog_from_another_server_of_the_trunk_is_taken() -> None:
    agent, wire, _ = await _agent()
    handle = await agent.dial("c1", "+15551234567", OFFER)
    invite = parse_message(wire.sent[0][0])
    assert isinstance(invite, Request)
    ok = respond(invite, 200, body=ANSWER)
    agent.receive(bytes(ok), TRUNK)
    assert await handle.events.get() == Answered(ANSWER)
    other = ("198.51.100.99", 5060)  # after Record-Route, another server of the trunk
    agent.receive(bytes(trunk_request("BYE", invite, ok, 2, "z9hG4bKbye")), other)
    [reply] = wire.responses(other)
    assert reply.code == 200
    ended = await handle.events.get()
    assert isinstance(ended, Ended) and ended.cause == "remote_hangup"
    await agent.close()


async def test_a_flood_is_dropped_unread_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    agent, wire, metrics = await _agent()
    caplog.set_level(logging.DEBUG, "services.sipagent")
    for number in range(2000):
        agent.receive(scan("OPTIONS", number), SCANNER)
    forbidden = wire.responses(SCANNER)
    # The burst of SIP_SOURCE_RATE (50/s), and what refilled meanwhile.
    assert 50 <= len(forbidden) <= 60
    assert {r.code for r in forbidden} == {403}
    assert refused(metrics, "rate") + refused(metrics, "unknown_source") == 2000
    assert refused(metrics, "rate") >= 1900
    lines = [r for r in caplog.records if SCANNER[0] in r.getMessage()]
    assert len(lines) <= 2, [r.getMessage() for r in lines]
    # The trunk is not crowded out.
    agent.receive(scan("OPTIONS", source=TRUNK), TRUNK)
    assert wire.responses(TRUNK)[0].code == 200
    await agent.close()


async def test_no_rate_with_sip_source_rate_off() -> None:
    agent, wire, metrics = await _agent(source_rate=None)
    for number in range(300):
        agent.receive(scan("OPTIONS", number), SCANNER)
    assert len(wire.responses(SCANNER)) == 300
    assert refused(metrics, "rate") == 0
    await agent.close()


async def test_addresses_a_trunk_name_resolved_to_are_known() -> None:
    agent, wire, _ = await _agent(trunk_host="trunk.test", trunk_port=0)
    probe = ("192.0.2.20", 5099)  # SECOND's address, another port
    agent.receive(scan("OPTIONS", 1, probe), probe)
    assert wire.responses(probe)[-1].code == 403
    await agent.dial("c1", "100", OFFER)  # resolves trunk.test: FIRST and SECOND
    agent.receive(scan("OPTIONS", 2, probe), probe)
    assert wire.responses(probe)[-1].code == 200
    await agent.close()


async def test_know_trunks_takes_literals_at_once_and_resolves_names() -> None:
    agent, _, _ = await _agent(outbound_proxy=OutboundProxy("203.0.113.5", 5060, ""))
    assert agent.screen.known("203.0.113.5")  # SIP_OUTBOUND_PROXY
    agent.know_trunks(
        [
            Trunk(name="a", host="203.0.113.7"),
            Trunk(name="b", host="pbx.test", outbound_proxy=OutboundProxy("[2001:db8::5]", 0, "")),
            Trunk(name="c", host=""),
        ]
    )
    assert agent.screen.known("203.0.113.7")
    assert agent.screen.known("2001:db8::5")
    await until(lambda: agent.screen.known(FIRST.host) and agent.screen.known(SECOND.host))
    await agent.close()


def test_settings_reach_the_agent_config() -> None:
    settings = load_settings({"SIP_UNKNOWN_SOURCES": "drop", "SIP_SOURCE_RATE": "5/s"}, None)
    config = AgentConfig.from_settings(settings)
    assert config.unknown_sources == "drop"
    assert config.source_rate is not None and str(config.source_rate) == "5/s"
    assert AgentConfig.from_settings(load_settings({}, None)).unknown_sources == "reject"
