"""The asyncio adapter and the service boundary, with a fake transport and a fake bus."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest
from sipmessage import Request, Response

from proto import errors, subjects
from proto.events import (
    AnyEvent,
    CallAnswered,
    CallEnded,
    DialRequested,
    HangupRequested,
    InviteSent,
    ProgressReceived,
)
from services.common.sip.message import parse_message
from services.sipagent import connections as connections_module
from services.sipagent import follow as follow_module
from services.sipagent import recovery
from services.sipagent import service as service_module
from services.sipagent.agent import (
    AgentConfig,
    CallHandle,
    DialError,
    SipAgent,
    check_destination,
    request_uri_for,
)
from services.sipagent.app import SipAgentService
from services.sipagent.events import Answered, Ended, Progress
from services.sipagent.transfer import TransferringCall
from services.sipagent.transport import Addr, SipTransport
from tests.unit.sipagent.test_agent_core import FakeInbound, peer_request
from tests.unit.sipagent.trunk import ANSWER, OFFER, respond

TRUNK = ("127.0.0.1", 5060)
TIMEOUT = 5.0


class FakeTransport(SipTransport):
    name = "udp"
    local_port = 5070

    def __init__(self) -> None:
        self.sent: list[tuple[Request | Response, Addr]] = []
        self.raw: list[bytes] = []

    def send(self, data: bytes, addr: Addr) -> None:
        self.raw.append(data)
        if not data.startswith(b"SIP/2.0 400"):  # echoes the unparsable request
            self.sent.append((parse_message(data), addr))

    async def close(self) -> None:
        pass

    def last(self) -> Request | Response:
        return self.sent[-1][0]


async def until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not predicate():
            await asyncio.sleep(0.001)


async def _agent(transport_name: str = "udp") -> tuple[SipAgent, FakeTransport]:
    transport = FakeTransport()
    # Over TCP the absorbing timers are zero: a call is forgotten as soon as it ends.
    transport.name = transport_name
    agent = SipAgent(
        AgentConfig(
            trunk_host=TRUNK[0],
            trunk_port=TRUNK[1],
            domain="trunk.test",
            username="bridge",
            password="pw",
            public_ip="192.0.2.1",
        ),
        transport,
    )
    await agent.start()
    return agent, transport


def _bytes(message: Request | Response) -> bytes:
    return bytes(message)


async def test_call_through_the_agent() -> None:
    agent, transport = await _agent()
    handle = await agent.dial("c1", "+15551234567", OFFER)
    invite, addr = transport.sent[0]
    assert isinstance(invite, Request) and addr == TRUNK
    assert invite.headers["Contact"] == "<sip:bridge@192.0.2.1:5070;transport=udp>"
    assert invite.headers["From"].startswith("<sip:bridge@trunk.test>;tag=")
    agent.receive(_bytes(respond(invite, 180)), TRUNK)
    agent.receive(_bytes(respond(invite, 200, body=ANSWER)), TRUNK)
    assert isinstance(transport.last(), Request) and transport.last().method == "ACK"  # type: ignore[union-attr]
    assert await handle.events.get() == Progress(180)
    assert await handle.events.get() == Answered(ANSWER)
    handle.hangup(errors.NORMAL)
    bye = transport.last()
    assert isinstance(bye, Request) and bye.method == "BYE"
    agent.receive(_bytes(respond(bye, 200)), TRUNK)
    ended = await handle.events.get()
    assert isinstance(ended, Ended) and ended.cause == errors.NORMAL
    await agent.close()


async def test_agent_timer_retransmits() -> None:
    transport = FakeTransport()
    agent = SipAgent(
        AgentConfig(trunk_host=TRUNK[0], domain="trunk.test", public_ip="192.0.2.1", t1=0.002),
        transport,
    )
    await agent.start()
    handle = await agent.dial("c1", "100", OFFER)
    await until(lambda: len(transport.sent) >= 3)
    ended = await handle.events.get()
    assert ended == Ended(errors.TIMEOUT, 408, "No answer")
    assert agent.active_calls == 0
    await agent.close()


async def test_stateless_answers() -> None:
    agent, transport = await _agent()
    options = (
        b"OPTIONS sip:bridge@192.0.2.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK1\r\n"
        b"From: <sip:trunk@x>;tag=a\r\nTo: <sip:bridge@y>\r\n"
        b"Call-ID: unknown\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    source = (TRUNK[0], 5099)  # the trunk's address: unknown sources get 403
    agent.receive(options, source)
    reply, addr = transport.sent[-1]
    assert isinstance(reply, Response) and reply.code == 200 and addr == source
    agent.receive(options.replace(b"OPTIONS", b"BYE"), source)
    assert transport.last().code == 481  # type: ignore[union-attr]
    agent.receive(options.replace(b"CSeq: 1 OPTIONS", b"CSeq: nope"), source)
    assert transport.raw[-1].startswith(b"SIP/2.0 400 Bad Request")
    count = len(transport.raw)
    agent.receive(b"\x00garbage", source)
    agent.receive(options.replace(b"OPTIONS", b"ACK"), source)
    agent.receive(b"SIP/2.0 200 OK\r\n" + options.split(b"\r\n", 1)[1], source)
    assert len(transport.raw) == count
    await agent.close()


def test_request_uri_validation() -> None:
    assert request_uri_for("+1555", "trunk.test") == "sip:+1555@trunk.test"
    assert request_uri_for("alice.b", "::1") == "sip:alice.b@[::1]"
    for bad in ("", "a b", "a@b", "a\r\nVia: x", "é", "<x>", "a" * 200):
        with pytest.raises(ValueError):
            request_uri_for(bad, "trunk.test")


def test_feature_codes_are_accepted_and_hash_escaped() -> None:
    assert request_uri_for("*97", "trunk.test") == "sip:*97@trunk.test"
    assert request_uri_for("123#", "trunk.test") == "sip:123%23@trunk.test"
    assert request_uri_for("*72#555", "trunk.test") == "sip:*72%23555@trunk.test"
    check_destination("#31#")


@pytest.mark.parametrize("bad", ["1 2#", "12\t3", "12\x00", "a@b#", "a:b", "<12>", '"12"', "a>"])
def test_destinations_that_cannot_be_escaped_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        check_destination(bad)
    with pytest.raises(ValueError):
        request_uri_for(bad, "trunk.test")


async def test_hash_goes_escaped_in_request_uri_and_to() -> None:
    agent, transport = await _agent()
    handle = await agent.dial("c1", "*97#", OFFER)
    invite = transport.sent[0][0]
    assert isinstance(invite, Request)
    assert handle.request_uri == str(invite.uri) == "sip:*97%23@trunk.test"
    assert invite.headers["To"] == "<sip:*97%23@trunk.test>"
    assert b"#" not in _bytes(invite).split(b"\r\n\r\n")[0]
    await agent.close()


def test_config_repr_hides_the_password() -> None:
    config = AgentConfig(trunk_host="trunk.test", username="bridge", password="s3cr:t#p@ss")
    assert "s3cr:t#p@ss" not in repr(config)
    assert "bridge" in repr(config)


async def test_dial_fails_when_the_trunk_host_does_not_resolve_in_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    agent, transport = await _agent()

    async def hang(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(3600)

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", hang)
    monkeypatch.setattr(connections_module, "RESOLVE_TIMEOUT", 0.01)
    trunk = replace(agent.default_trunk(), host="trunk.test", port=5060)
    with pytest.raises(
        DialError, match=r"^could not resolve SIP_TRUNK_HOST trunk\.test in 0\.01 s$"
    ):
        await agent.dial("c1", "100", OFFER, trunk=trunk)
    assert transport.sent == [] and agent.active_calls == 0
    await agent.close()


class FakeBus:
    def __init__(self) -> None:
        self.published: list[tuple[str, AnyEvent]] = []
        self.handlers: dict[str, Callable[[AnyEvent], Awaitable[None]]] = {}

    async def subscribe(
        self, subject: str, handler: Callable[[AnyEvent], Awaitable[None]], queue: str = ""
    ) -> FakeBus:
        self.handlers[subject] = handler
        return self

    async def unsubscribe(self) -> None:
        pass

    async def publish(self, subject: str, event: AnyEvent) -> None:
        self.published.append((subject, event))

    def events(self) -> list[AnyEvent]:
        return [event for _, event in self.published]


async def _service(
    transport_name: str = "udp",
) -> tuple[SipAgent, FakeTransport, FakeBus, SipAgentService]:
    agent, transport = await _agent(transport_name)
    bus = FakeBus()
    return agent, transport, bus, SipAgentService(bus, agent, "sa1")  # type: ignore[arg-type]


def _logged_error(caplog: pytest.LogCaptureFixture, call_id: str) -> bool:
    return any(
        r.levelno == logging.ERROR and r.exc_info and call_id in r.getMessage()
        for r in caplog.records
    )


def _dial(destination: str = "+15551234567") -> DialRequested:
    return DialRequested(
        call_id="call1",
        destination=destination,
        offer_sdp=OFFER,
        media_id="m1",
        signaling_id="s1",
    )


async def test_service_rejects_bad_destination_without_invite() -> None:
    agent, transport, bus, service = await _service()
    await service.on_work(_dial("bad destination@x"))
    await until(lambda: bool(bus.published))
    (event,) = bus.events()
    assert isinstance(event, CallEnded) and event.cause == errors.REJECTED
    assert "destination" in event.reason.lower()
    assert transport.sent == []
    await agent.close()


async def test_service_call_and_hangup_from_signaling() -> None:
    agent, transport, bus, service = await _service()
    await service.on_work(_dial())
    await until(lambda: bool(bus.published))
    sent = bus.events()[0]
    assert isinstance(sent, InviteSent) and sent.request_uri == "sip:+15551234567@trunk.test"
    assert bus.published[0][0] == subjects.call_events("call1", "sipagent")
    invite = transport.sent[0][0]
    assert isinstance(invite, Request)
    agent.receive(_bytes(respond(invite, 183, "Session Progress", body=ANSWER)), TRUNK)
    agent.receive(_bytes(respond(invite, 200, body=ANSWER)), TRUNK)
    await until(lambda: len(bus.published) >= 3)
    assert bus.events()[1] == ProgressReceived(call_id="call1", status=183, early_sdp=ANSWER)
    assert bus.events()[2] == CallAnswered(call_id="call1", answer_sdp=ANSWER)

    on_signaling = bus.handlers[subjects.call_events("call1", "signaling")]
    await on_signaling(HangupRequested(call_id="call1", cause=errors.NORMAL))
    bye = transport.last()
    assert isinstance(bye, Request) and bye.method == "BYE"
    agent.receive(_bytes(respond(bye, 200)), TRUNK)
    await until(lambda: len(bus.published) >= 4)
    ended = bus.events()[3]
    assert isinstance(ended, CallEnded) and ended.cause == errors.NORMAL
    await service.shutdown(grace=0.1)
    await agent.close()


async def test_service_shutdown_cancels_ringing_call() -> None:
    # Over TCP the call is forgotten at its 487: shutdown need not wait out Timer D.
    agent, transport, bus, service = await _service("tcp")
    await service.on_work(_dial())
    await until(lambda: bool(bus.published))
    invite = transport.sent[0][0]
    assert isinstance(invite, Request)
    agent.receive(_bytes(respond(invite, 180)), TRUNK)

    async def trunk() -> None:
        await until(lambda: transport.last().method == "CANCEL")  # type: ignore[union-attr]
        agent.receive(_bytes(respond(transport.last(), 200)), TRUNK)  # type: ignore[arg-type]
        agent.receive(_bytes(respond(invite, 487, "Request Terminated")), TRUNK)

    trunk_task = asyncio.create_task(trunk())
    await service.shutdown(grace=2.0)
    await trunk_task
    ended = bus.events()[-1]
    assert isinstance(ended, CallEnded)
    assert (ended.cause, ended.status) == (errors.CANCELLED, 487)
    await agent.close()


async def test_service_shutdown_waits_for_the_cancel_owed() -> None:
    agent, transport = await _agent("tcp")
    bus = FakeBus()
    service = SipAgentService(bus, agent, "sa1")  # type: ignore[arg-type]
    await service.on_work(_dial())
    await until(lambda: bool(bus.published))
    invite = transport.sent[0][0]
    assert isinstance(invite, Request)

    async def trunk() -> None:
        # Hung up before any provisional: Ended at once, the CANCEL waits for the 100.
        await until(lambda: isinstance(bus.events()[-1], CallEnded))
        agent.receive(_bytes(respond(invite, 100, "Trying")), TRUNK)
        cancel = transport.last()
        assert isinstance(cancel, Request) and cancel.method == "CANCEL"
        agent.receive(_bytes(respond(cancel, 200)), TRUNK)
        agent.receive(_bytes(respond(invite, 487, "Request Terminated")), TRUNK)

    trunk_task = asyncio.create_task(trunk())
    await service.shutdown(grace=2.0)
    methods = [m.method for m, _ in transport.sent if isinstance(m, Request)]
    assert methods == ["INVITE", "CANCEL", "ACK"]
    assert agent.active_calls == 0
    await trunk_task
    ended = bus.events()[-1]
    assert isinstance(ended, CallEnded) and ended.cause == errors.CANCELLED
    await agent.close()


async def test_service_shutdown_gives_up_on_sip_clean_up_after_the_grace() -> None:
    agent, _, bus, service = await _service()
    await service.on_work(_dial())
    await until(lambda: bool(bus.published))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await service.shutdown(grace=0.2)
    assert loop.time() - started < 1.0
    assert agent.active_calls == 1  # still owes a CANCEL if a provisional comes
    await agent.close()


async def test_service_reports_internal_error_when_a_call_fails(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    agent, transport, bus, service = await _service()

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(follow_module, "ProgressReceived", broken)
    await service.on_work(_dial())
    await until(lambda: bool(bus.published))
    invite = transport.sent[0][0]
    assert isinstance(invite, Request)
    agent.receive(_bytes(respond(invite, 180)), TRUNK)
    await until(lambda: isinstance(bus.events()[-1], CallEnded))
    ended = bus.events()[-1]
    assert isinstance(ended, CallEnded) and ended.cause == errors.INTERNAL
    # The SIP side is not left ringing.
    assert transport.last().method == "CANCEL"  # type: ignore[union-attr]
    assert _logged_error(caplog, "call1")
    await service.shutdown(grace=0.1)
    await agent.close()


async def test_service_logs_and_reports_a_failed_call_task(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    agent, transport, bus, service = await _service()

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("tracing bug")

    monkeypatch.setattr(service_module, "tracer", broken)
    await service.on_work(_dial())
    await until(lambda: bool(bus.published))
    (ended,) = bus.events()
    assert isinstance(ended, CallEnded) and ended.cause == errors.INTERNAL
    assert transport.sent == [] and service.active_calls == 0
    assert _logged_error(caplog, "call1")
    await service.shutdown(grace=0.1)
    await agent.close()


async def test_a_survivor_adopts_a_dead_agents_dialog_and_sends_bye() -> None:
    dead, dead_transport = await _agent()
    handle = await dead.dial("c1", "+15551234567", OFFER)
    invite = dead_transport.sent[0][0]
    assert isinstance(invite, Request)
    dead.receive(_bytes(respond(invite, 200, body=ANSWER)), TRUNK)
    call = handle.call
    assert isinstance(call, TransferringCall) and call.dialog is not None
    stored = recovery.dialog_record(call.dialog, transport="udp", trunk=handle.trunk)

    survivor, transport = await _agent()
    adopted = survivor.adopt_bye("c1", stored)
    bye, addr = transport.sent[-1]
    assert isinstance(bye, Request) and bye.method == "BYE" and addr == TRUNK
    assert bye.headers["Call-ID"] == invite.headers["Call-ID"]
    assert bye.headers["From"] == invite.headers["From"]
    assert survivor.active_calls == 1
    survivor.receive(_bytes(respond(bye, 200)), TRUNK)
    ended = await adopted.events.get()
    assert isinstance(ended, Ended) and ended.status == 200
    await survivor.close()
    await dead.close()


async def test_adopting_an_unconfirmed_dialog_is_refused() -> None:
    agent, _ = await _agent()
    record = recovery.invite_record("sip-call-1", transport="udp", trunk=TRUNK)
    with pytest.raises(recovery.RecoveryError):
        agent.adopt_bye("c1", record)
    assert agent.active_calls == 0
    await agent.close()


async def test_an_inbound_call_gets_a_handle_driven_like_an_outbound_one() -> None:
    agent, transport = await _agent()
    handles: list[CallHandle] = []
    agent.on_invite = lambda request, addr, name, now: FakeInbound(request)
    agent.on_call = handles.append
    stranger = ("198.51.100.7", 5060)  # not the trunk: on_invite screens new INVITEs itself
    agent.receive(peer_request("INVITE"), stranger)
    [handle] = handles
    assert handle.inbound and handle.trunk == stranger and handle.transport_name == "udp"
    assert agent.handle_of("in-1") is handle and agent.active_calls == 1
    call = handle.call
    assert isinstance(call, FakeInbound)
    handle.ring()
    handle.reject(486, "Busy Here")
    handle.answer(ANSWER)
    assert [what for what, _ in call.asked] == ["ring", "reject 486 Busy Here", "answer"]
    assert all(now > 0 for _, now in call.asked)  # the loop's time
    reply = transport.last()
    assert isinstance(reply, Response) and reply.code == 180 and transport.sent[-1][1] == stranger
    agent.receive(peer_request("CANCEL"), stranger)
    ended = await handle.events.get()
    assert ended == Ended(errors.CANCELLED, 487, "Request Terminated")
    assert agent.active_calls == 0 and agent.handle_of("in-1") is None
    await agent.close()
