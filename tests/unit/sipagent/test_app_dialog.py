"""The service boundary for in-dialog features: bus events in, SIP out, and back."""

from __future__ import annotations

from collections.abc import Callable

from sipmessage import Request

from proto import subjects
from proto.events import (
    DialRequested,
    DtmfReceived,
    DtmfRequested,
    HoldFailed,
    HoldRequested,
    InviteSent,
    SessionUpdated,
)
from proto.fleet import CallRecord
from services.common.providers import Providers, Trunk
from services.sipagent.agent import AgentConfig, SipAgent
from services.sipagent.app import SipAgentService
from tests.unit.sipagent.peer import OUR_OFFER, trunk_sdp, with_body
from tests.unit.sipagent.test_agent import TRUNK, FakeBus, FakeTransport, until
from tests.unit.sipagent.trunk import respond, trunk_request


async def test_hold_dtmf_and_session_updates_through_the_bus() -> None:
    transport = FakeTransport()
    config = AgentConfig(trunk_host=TRUNK[0], trunk_port=TRUNK[1], public_ip="192.0.2.1")
    agent = SipAgent(config, transport)
    await agent.start()
    bus = FakeBus()
    trunk = Trunk(name="default", host=TRUNK[0], port=TRUNK[1], domain="trunk.test", dtmf="info")
    service = SipAgentService(
        bus,  # type: ignore[arg-type]
        agent,
        "sa1",
        providers=Providers.single(trunk),
    )
    dial = DialRequested(
        call_id="call1", destination="100", offer_sdp=OUR_OFFER, media_id="m1", signaling_id="s1"
    )
    await service.on_work(dial)
    await until(lambda: bool(bus.published))
    sent = bus.events()[0]
    assert isinstance(sent, InviteSent) and sent.dtmf == "info"
    on_signaling = bus.handlers[subjects.call_events("call1", "signaling")]

    await on_signaling(HoldRequested(call_id="call1", held=True))
    await until(lambda: any(isinstance(e, HoldFailed) for e in bus.events()))

    invite = transport.sent[0][0]
    assert isinstance(invite, Request)
    ok = respond(invite, 200, body=trunk_sdp())
    agent.receive(bytes(ok), TRUNK)
    await on_signaling(HoldRequested(call_id="call1", held=True))
    reinvite = transport.last()
    assert isinstance(reinvite, Request) and reinvite.method == "INVITE"
    assert b"a=sendonly" in reinvite.body
    agent.receive(bytes(respond(reinvite, 200, body=trunk_sdp("recvonly"))), TRUNK)
    await until(lambda: any(isinstance(e, SessionUpdated) for e in bus.events()))
    updated = next(e for e in bus.events() if isinstance(e, SessionUpdated))
    assert updated.local_hold and not updated.remote_hold

    await on_signaling(DtmfRequested(call_id="call1", digits="9"))
    info = transport.last()
    assert isinstance(info, Request) and info.method == "INFO" and b"Signal=9" in info.body

    incoming = with_body(
        trunk_request("INFO", invite, ok, 2, "z9hG4bKi2"), "Signal=4\r\n", "application/dtmf-relay"
    )
    agent.receive(bytes(incoming), TRUNK)
    await until(lambda: any(isinstance(e, DtmfReceived) for e in bus.events()))
    received = next(e for e in bus.events() if isinstance(e, DtmfReceived))
    assert received.digit == "4" and received.method == "info"
    await service.shutdown(grace=0.1)
    await agent.close()


class FakeFleet:
    """The call registry as one record per call, updated the way FleetMember does."""

    def __init__(self) -> None:
        self.records: dict[str, CallRecord] = {}

    async def update(self, call_id: str, change: Callable[[CallRecord], CallRecord]) -> None:
        base = self.records.get(call_id) or CallRecord(
            call_id=call_id, state="setup", updated_at=0.0
        )
        self.records[call_id] = change(base)

    async def delete(self, call_id: str) -> None:
        self.records.pop(call_id, None)


async def test_registry_names_the_new_dialog_after_a_transfer() -> None:
    transport = FakeTransport()
    config = AgentConfig(
        trunk_host=TRUNK[0], trunk_port=TRUNK[1], domain="trunk.test", public_ip="192.0.2.1"
    )
    agent = SipAgent(config, transport)
    await agent.start()
    bus = FakeBus()
    service = SipAgentService(bus, agent, "sa1")  # type: ignore[arg-type]
    fleet = FakeFleet()
    service.attach(fleet)  # type: ignore[arg-type]
    dial = DialRequested(
        call_id="call1", destination="100", offer_sdp=OUR_OFFER, media_id="m1", signaling_id="s1"
    )
    await service.on_work(dial)
    await until(lambda: bool(transport.sent))
    invite = transport.sent[0][0]
    assert isinstance(invite, Request)
    ok = respond(invite, 200, body=trunk_sdp())
    agent.receive(bytes(ok), TRUNK)
    await until(lambda: _dialog_id(fleet) == invite.call_id)

    refer = trunk_request("REFER", invite, ok, 2, "z9hG4bKr2")
    refer.headers.add("Refer-To", "<sip:bob@203.0.113.5>")
    agent.receive(bytes(refer), TRUNK)
    new_invite = next(
        m for m, _ in transport.sent if isinstance(m, Request) and m.uri.user == "bob"
    )
    agent.receive(bytes(respond(new_invite, 200, body=trunk_sdp(port=31000))), TRUNK)
    await until(lambda: _dialog_id(fleet) == new_invite.call_id)
    moved = next(e for e in bus.events() if isinstance(e, SessionUpdated))
    assert moved.transferred_to == "sip:bob@203.0.113.5"
    await service.shutdown(grace=0.1)
    await agent.close()


def _dialog_id(fleet: FakeFleet) -> str:
    record = fleet.records.get("call1")
    return record.dialog.sip_call_id if record and record.dialog else ""
