"""Where in-dialog requests go: the route set, else the remote target; responses to the source."""

from __future__ import annotations

from sipmessage import URI, Request, Response

from services.common.sip.message import parse_message
from services.common.sip.next_hop import next_hop
from services.sipagent.agent import AgentConfig, SipAgent
from services.sipagent.transport import Addr, SipTransport
from tests.unit.sipagent.peer import OUR_OFFER, trunk_sdp
from tests.unit.sipagent.trunk import respond, trunk_request

TRUNK = ("127.0.0.1", 5060)


class Wire(SipTransport):
    name = "udp"
    local_port = 5070

    def __init__(self) -> None:
        self.sent: list[tuple[Request | Response, Addr]] = []

    def send(self, data: bytes, addr: Addr) -> None:
        self.sent.append((parse_message(data), addr))

    async def close(self) -> None:
        pass

    def to(self, method: str) -> Addr:
        return next(a for m, a in reversed(self.sent) if getattr(m, "method", "") == method)


async def _agent() -> tuple[SipAgent, Wire]:
    wire = Wire()
    config = AgentConfig(
        trunk_host=TRUNK[0], trunk_port=TRUNK[1], domain="trunk.test", public_ip="192.0.2.1"
    )
    agent = SipAgent(config, wire)
    await agent.start()
    return agent, wire


def _request(uri: str, *routes: str) -> Request:
    request = Request("BYE", URI.parse(uri))
    for route in routes:
        request.headers.add("Route", route)
    return request


def test_next_hop_rules() -> None:
    default = ("127.0.0.1", 5060)
    assert next_hop(_request("sip:a@198.51.100.20:5062"), default) == ("198.51.100.20", 5062)
    assert next_hop(_request("sip:a@198.51.100.20"), default) == ("198.51.100.20", 5060)
    assert next_hop(_request("sip:a@[2001:db8::1]:5080"), default) == ("2001:db8::1", 5080)
    loose = _request("sip:a@198.51.100.20", "<sip:203.0.113.10:5070;lr>", "<sip:x.test;lr>")
    assert next_hop(loose, default) == ("203.0.113.10", 5070)
    # A host name is not resolved here: the trunk's address is used instead.
    assert next_hop(_request("sip:a@pbx.example.com:5062"), default) == default
    assert next_hop(_request("sip:a@1.2.3.4", "<sip:proxy.test;lr>"), default) == default
    # A public trunk naming a private address (NAT): the trunk's address instead.
    public = ("93.184.216.34", 5060)
    assert next_hop(_request("sip:a@10.1.2.3:5062"), public) == public
    assert next_hop(_request("sip:a@93.184.216.35:5062"), public) == ("93.184.216.35", 5062)


async def test_ack_and_bye_follow_record_route() -> None:
    agent, wire = await _agent()
    handle = await agent.dial("c1", "+15551234567", OUR_OFFER)
    invite, addr = wire.sent[0]
    assert isinstance(invite, Request) and addr == TRUNK
    assert "rport" in invite.via[0].parameters
    ok = respond(
        invite,
        200,
        body=trunk_sdp(),
        headers=[("Record-Route", "<sip:proxy2.test;lr>, <sip:203.0.113.10:5070;lr>")],
    )
    ok.headers.set("Contact", "<sip:trunk@198.51.100.20:5062>")
    agent.receive(bytes(ok), TRUNK)
    ack, addr = wire.sent[-1]
    assert isinstance(ack, Request) and ack.method == "ACK"
    assert addr == ("203.0.113.10", 5070)
    assert ack.headers.getlist("Route") == ["<sip:203.0.113.10:5070;lr>", "<sip:proxy2.test;lr>"]
    assert str(ack.uri) == "sip:trunk@198.51.100.20:5062"
    handle.hangup("normal")
    assert wire.to("BYE") == ("203.0.113.10", 5070)
    await agent.close()


async def test_without_route_set_requests_go_to_the_remote_target() -> None:
    agent, wire = await _agent()
    handle = await agent.dial("c1", "+15551234567", OUR_OFFER)
    invite = wire.sent[0][0]
    assert isinstance(invite, Request)
    ok = respond(invite, 200, body=trunk_sdp())
    ok.headers.set("Contact", "<sip:trunk@198.51.100.20:5062>")
    agent.receive(bytes(ok), TRUNK)
    assert wire.to("ACK") == ("198.51.100.20", 5062)
    # A request of the trunk is answered where it came from (rport).
    source = ("198.51.100.99", 40123)
    agent.receive(bytes(trunk_request("OPTIONS", invite, ok, 5, "z9hG4bKopt")), source)
    reply, addr = wire.sent[-1]
    assert isinstance(reply, Response) and reply.code == 200 and addr == source
    handle.hold(True)
    assert wire.to("INVITE") == ("198.51.100.20", 5062)
    await agent.close()


async def test_ack_of_a_refusal_and_cancel_go_to_the_trunk() -> None:
    agent, wire = await _agent()
    handle = await agent.dial("c1", "+15551234567", OUR_OFFER)
    invite = wire.sent[0][0]
    assert isinstance(invite, Request)
    ringing = respond(invite, 180)
    ringing.headers.set("Contact", "<sip:trunk@198.51.100.20:5062>")
    agent.receive(bytes(ringing), TRUNK)
    handle.hangup("cancelled")
    assert wire.to("CANCEL") == TRUNK
    agent.receive(bytes(respond(invite, 487, "Request Terminated")), TRUNK)
    assert wire.to("ACK") == TRUNK
    await agent.close()
