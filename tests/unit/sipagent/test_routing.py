"""The SIP agent routes each dial by destination and puts the custom headers in the INVITE."""

from __future__ import annotations

import logging
import re

import pytest
from sipmessage import Request

from proto import errors, subjects
from proto.events import CallEnded, DialRequested, HangupRequested, InviteSent
from services.common.dialplan import parse_prefixes
from services.common.providers import Providers, Route, Trunk
from services.sipagent.app import SipAgentService
from tests.unit.sipagent.test_agent import TRUNK, FakeBus, _agent, _bytes, until
from tests.unit.sipagent.trunk import ANSWER, OFFER, respond

SUPPORT = Trunk(
    name="support",
    host="127.0.0.2",
    port=5080,
    username="support_user",
    password="pw2",
    domain="provider1.test",
    headers=(("X-Customer", "acme"),),
)
US = Trunk(name="us", host="127.0.0.3", port=5090, codecs=("PCMA",))
DEFAULT = Trunk(name="default", host=TRUNK[0], port=TRUNK[1], domain="trunk.test")
PROVIDERS = Providers(
    trunks={"support": SUPPORT, "us": US, "default": DEFAULT},
    routes=(
        Route(match="support", trunk="support", user="1000"),
        Route(match=r"^\+1", trunk="us", pattern=re.compile(r"^\+1")),
    ),
)
AUDIO_OFFER = OFFER + "m=audio 10000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
CONTEXT = '{"user_id":"12345","language":"en"}'


def dial(
    destination: str, headers: dict[str, str] | None = None, offer: str = OFFER
) -> DialRequested:
    return DialRequested(
        call_id="call1",
        destination=destination,
        offer_sdp=offer,
        media_id="m1",
        signaling_id="s1",
        headers=headers or {},
    )


async def service(providers: Providers = PROVIDERS):  # type: ignore[no-untyped-def]
    agent, transport = await _agent()
    bus = FakeBus()
    return agent, transport, bus, SipAgentService(bus, agent, "sa1", providers=providers)  # type: ignore[arg-type]


async def test_route_picks_trunk_user_and_headers_go_in_the_invite_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    agent, transport, bus, svc = await service()
    await svc.on_work(dial("support", {"X-Agent-Context": CONTEXT}))
    await until(lambda: bool(bus.published))
    sent = bus.events()[0]
    assert isinstance(sent, InviteSent) and sent.request_uri == "sip:1000@provider1.test"
    invite, addr = transport.sent[0]
    assert isinstance(invite, Request) and invite.method == "INVITE"
    assert addr == ("127.0.0.2", 5080)
    assert invite.headers["X-Customer"] == "acme"
    assert invite.headers["X-Agent-Context"] == CONTEXT
    assert "sip:support_user@provider1.test" in invite.headers["From"]
    # INFO logs name the headers, never their values.
    info = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)
    assert "X-Agent-Context" in info and "12345" not in info

    agent.receive(_bytes(respond(invite, 200, body=ANSWER)), addr)
    await until(lambda: len(bus.published) >= 2)
    on_signaling = bus.handlers[subjects.call_events("call1", "signaling")]
    await on_signaling(HangupRequested(call_id="call1", cause=errors.NORMAL))
    bye = transport.last()
    assert isinstance(bye, Request) and bye.method == "BYE"
    for message, _ in transport.sent[1:]:
        assert message.headers.get("X-Agent-Context") is None
        assert message.headers.get("X-Customer") is None
    agent.receive(_bytes(respond(bye, 200)), addr)
    await until(lambda: isinstance(bus.events()[-1], CallEnded))
    await svc.shutdown(grace=0.1)
    await agent.close()


async def test_regex_route_and_trunk_codecs() -> None:
    agent, transport, bus, svc = await service()
    await svc.on_work(dial("+15551234567", offer=AUDIO_OFFER))
    await until(lambda: bool(bus.published))
    invite, addr = transport.sent[0]
    assert isinstance(invite, Request)
    assert addr == ("127.0.0.3", 5090)
    assert str(invite.uri) == "sip:+15551234567@127.0.0.3"
    assert "m=audio 10000 RTP/AVP 8 101\r\n" in invite.body.decode()
    await svc.shutdown(grace=0.1)
    await agent.close()


async def test_unknown_destination_sends_no_invite() -> None:
    agent, transport, bus, svc = await service()
    await svc.on_work(dial("sales"))
    await until(lambda: bool(bus.published))
    (event,) = bus.events()
    assert isinstance(event, CallEnded)
    assert (event.cause, event.code) == (errors.REJECTED, errors.UNKNOWN_DESTINATION)
    assert transport.sent == []
    await agent.close()


@pytest.mark.parametrize("destination", ["+19005550100", "19005550100", "0019005550100"])
async def test_the_dial_plan_is_checked_again_before_any_invite(destination: str) -> None:
    """A DialRequested that got past signaling (or came from elsewhere) still cannot
    reach a denied number."""
    agent, transport = await _agent()
    bus = FakeBus()
    svc = SipAgentService(
        bus,  # type: ignore[arg-type]
        agent,
        "sa1",
        dial_deny=parse_prefixes("+1900"),
    )
    await svc.on_work(dial(destination))
    await until(lambda: bool(bus.published))
    (event,) = bus.events()
    assert isinstance(event, CallEnded)
    assert (event.cause, event.code) == (errors.REJECTED, errors.FORBIDDEN_DESTINATION)
    assert transport.sent == []
    await agent.close()


async def test_headers_not_allowed_send_no_invite() -> None:
    agent, transport, bus, svc = await service()
    await svc.on_work(dial("support", {"X-Customer": "evil"}))
    await until(lambda: bool(bus.published))
    (event,) = bus.events()
    assert isinstance(event, CallEnded) and event.code == errors.BAD_HEADERS
    assert transport.sent == []
    await agent.close()


async def test_without_providers_everything_goes_to_the_agent_trunk() -> None:
    agent, transport = await _agent()
    bus = FakeBus()
    svc = SipAgentService(bus, agent, "sa1")  # type: ignore[arg-type]
    await svc.on_work(dial("sales", {"X-Agent-Context": "text"}))
    await until(lambda: bool(bus.published))
    invite, addr = transport.sent[0]
    assert addr == TRUNK and isinstance(invite, Request)
    assert invite.headers["X-Agent-Context"] == "text"
    await svc.shutdown(grace=0.1)
    await agent.close()
