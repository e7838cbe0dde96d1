"""Failover between the targets of a trunk, and the outbound proxy's Route, through the agent.

Timer B, and what the clock decides, are tested on the core's fake clock: ``test_agent_core.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from sipmessage import Request, Response

from proto import errors
from services.common.sip.message import parse_message
from services.common.sipaddr import OutboundProxy
from services.sipagent.agent import AgentConfig, SipAgent, UnreachableError
from services.sipagent.events import Answered, Ended, Progress
from services.sipagent.resolve import Target
from services.sipagent.sipdns import Resolution, ResolveError, SipResolver
from services.sipagent.transport import Addr, SipTransport
from tests.unit.sipagent.trunk import ANSWER, OFFER, respond

FIRST = Target("192.0.2.10", 5060, "udp", "trunk.test", "SRV _sip._udp.trunk.test")
SECOND = Target("192.0.2.20", 5062, "udp", "trunk.test", "SRV _sip._udp.trunk.test")


class Transport(SipTransport):
    name = "udp"
    local_port = 5070

    def __init__(self) -> None:
        self.sent: list[tuple[Request | Response, Addr]] = []

    def send(self, data: bytes, addr: Addr) -> None:
        self.sent.append((parse_message(data), addr))

    async def close(self) -> None:
        pass

    def requests(self, method: str, addr: Addr) -> list[Request]:
        return [
            m for m, a in self.sent if isinstance(m, Request) and m.method == method and a == addr
        ]


class Resolver(SipResolver):
    def __init__(self, targets: list[Target]) -> None:
        super().__init__()
        self.targets = targets

    async def resolve(
        self, host: str, port: int, transport: str, *, explicit: bool = True
    ) -> Resolution:
        return Resolution(list(self.targets))


async def _agent(
    targets: tuple[Target, ...] = (FIRST, SECOND), **config: object
) -> tuple[SipAgent, Transport]:
    transport = Transport()
    agent = SipAgent(
        AgentConfig(trunk_host="trunk.test", public_ip="192.0.2.1", **config),  # type: ignore[arg-type]
        transport,
        resolver=Resolver(list(targets)),
    )
    await agent.start()
    return agent, transport


async def until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not predicate():
            await asyncio.sleep(0.001)


async def test_a_503_moves_the_call_to_the_next_target_and_rests_the_first() -> None:
    agent, transport = await _agent()
    handle = await agent.dial("c1", "100", OFFER)
    [invite] = transport.requests("INVITE", FIRST.addr)
    agent.receive(bytes(respond(invite, 503, headers=[("Retry-After", "120")])), FIRST.addr)
    assert transport.requests("ACK", FIRST.addr)  # the 503 is acknowledged
    [second] = transport.requests("INVITE", SECOND.addr)
    assert second.call_id != invite.call_id  # a new INVITE transaction, its own Call-ID
    assert handle.trunk == SECOND.addr
    agent.receive(bytes(respond(second, 200, body=ANSWER)), SECOND.addr)
    assert await handle.events.get() == Answered(ANSWER)
    assert handle.events.empty()  # the 503 never reached the caller
    # Retry-After: the next call skips the resting target altogether.
    other = await agent.dial("c2", "100", OFFER)
    assert other.trunk == SECOND.addr and len(transport.requests("INVITE", FIRST.addr)) == 1
    await agent.close()


async def test_a_503_after_100_trying_fails_over() -> None:
    agent, transport = await _agent()
    handle = await agent.dial("c1", "100", OFFER)
    [invite] = transport.requests("INVITE", FIRST.addr)
    agent.receive(bytes(respond(invite, 100, to_tag=None)), FIRST.addr)
    agent.receive(bytes(respond(invite, 503)), FIRST.addr)
    assert len(transport.requests("INVITE", SECOND.addr)) == 1
    assert handle.trunk == SECOND.addr and handle.events.empty()
    await agent.close()


async def test_no_failover_after_ringing() -> None:
    agent, transport = await _agent()
    handle = await agent.dial("c1", "100", OFFER)
    [invite] = transport.requests("INVITE", FIRST.addr)
    agent.receive(bytes(respond(invite, 180)), FIRST.addr)
    agent.receive(bytes(respond(invite, 503)), FIRST.addr)
    assert await handle.events.get() == Progress(180)
    ended = await handle.events.get()
    assert isinstance(ended, Ended) and ended.status == 503
    assert transport.requests("INVITE", SECOND.addr) == []
    await agent.close()


async def test_other_failures_do_not_fail_over() -> None:
    agent, transport = await _agent()
    handle = await agent.dial("c1", "100", OFFER)
    [invite] = transport.requests("INVITE", FIRST.addr)
    agent.receive(bytes(respond(invite, 486)), FIRST.addr)
    ended = await handle.events.get()
    assert isinstance(ended, Ended) and ended.status == 486
    assert transport.requests("INVITE", SECOND.addr) == []
    await agent.close()


async def test_a_transport_failure_fails_over_then_ends_with_its_reason() -> None:
    agent, transport = await _agent()
    handle = await agent.dial("c1", "100", OFFER)
    assert transport.on_error is not None
    transport.on_error(FIRST.addr, "tls connection to 192.0.2.10:5060 failed: certificate refused")
    assert transport.requests("INVITE", SECOND.addr)
    transport.on_error(SECOND.addr, "tcp connection to 192.0.2.20:5062 failed: refused")
    ended = await handle.events.get()
    assert ended == Ended(
        errors.UNREACHABLE, None, "tcp connection to 192.0.2.20:5062 failed: refused"
    )
    assert agent.active_calls == 0
    handle.hangup(errors.CANCELLED)  # nothing left to cancel: no second Ended
    await asyncio.sleep(0)
    assert handle.events.empty()
    await agent.close()


async def test_a_hung_up_call_does_not_fail_over() -> None:
    agent, transport = await _agent()
    handle = await agent.dial("c1", "100", OFFER)
    [invite] = transport.requests("INVITE", FIRST.addr)
    agent.receive(bytes(respond(invite, 100, to_tag=None)), FIRST.addr)
    handle.hangup(errors.CANCELLED)
    [cancel] = transport.requests("CANCEL", FIRST.addr)
    agent.receive(bytes(respond(cancel, 200)), FIRST.addr)
    agent.receive(bytes(respond(invite, 487)), FIRST.addr)
    ended = await handle.events.get()
    assert isinstance(ended, Ended) and ended.cause == errors.CANCELLED
    assert transport.requests("INVITE", SECOND.addr) == []
    await agent.close()


async def test_outbound_proxy_route_on_invite_cancel_and_ack() -> None:
    proxy = OutboundProxy("proxy.test", 5070, "udp")
    agent, transport = await _agent((FIRST,), outbound_proxy=proxy, domain="trunk.test")
    handle = await agent.dial("c1", "100", OFFER)
    [invite] = transport.requests("INVITE", FIRST.addr)
    route = "<sip:proxy.test:5070;transport=udp;lr>"
    assert invite.headers.getlist("Route") == [route]
    assert str(invite.uri) == "sip:100@trunk.test"  # the trunk's Request-URI, not the proxy's
    agent.receive(bytes(respond(invite, 100, to_tag=None)), FIRST.addr)
    handle.hangup(errors.CANCELLED)
    [cancel] = transport.requests("CANCEL", FIRST.addr)
    assert cancel.headers.getlist("Route") == [route]
    agent.receive(bytes(respond(invite, 487)), FIRST.addr)
    [ack] = transport.requests("ACK", FIRST.addr)
    assert ack.headers.getlist("Route") == [route]
    await agent.close()


async def test_tls_targets_use_sips_uris() -> None:
    target = Target("192.0.2.30", 5061, "tls", "trunk.test")
    transport = Transport()
    transport.name = "tls"
    agent = SipAgent(
        AgentConfig(
            trunk_host="trunk.test", public_ip="192.0.2.1", transport="tls", username="bridge"
        ),
        transport,
        resolver=Resolver([target]),
    )
    await agent.start()
    await agent.dial("c1", "100", OFFER)
    [invite] = transport.requests("INVITE", target.addr)
    assert str(invite.uri) == "sips:100@trunk.test"
    assert invite.headers["From"].startswith("<sips:bridge@trunk.test>")
    assert invite.headers["Contact"] == "<sips:bridge@192.0.2.1:5070>"
    assert invite.headers.getlist("Via")[0].startswith("SIP/2.0/TLS ")
    await agent.close()


class DeadDns(SipResolver):
    async def resolve(
        self, host: str, port: int, transport: str, *, explicit: bool = True
    ) -> Resolution:
        raise ResolveError(f"cannot resolve {host}: Name or service not known")


async def test_a_name_that_does_not_resolve_is_unreachable_and_sends_nothing() -> None:
    transport = Transport()
    agent = SipAgent(AgentConfig(trunk_host="trunk.test"), transport, resolver=DeadDns())
    await agent.start()
    with pytest.raises(
        UnreachableError,
        match=r"^SIP_TRUNK_HOST: cannot resolve trunk\.test: Name or service not known$",
    ):
        await agent.dial("c1", "100", OFFER)
    assert transport.sent == [] and agent.active_calls == 0
    await agent.close()
