"""The agent's hosting decisions on a fake clock.

Failover, requests of no call, and where an inbound call's requests go (its route set and
remote target); late answers in ``test_late_answer.py``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from sipmessage import Request, Response

from proto import errors
from services.common.providers import Trunk
from services.common.sip.message import SipMessage, make_request, make_response, parse_message
from services.sipagent.agent_core import AgentCore
from services.sipagent.agent_ports import Connect, OnInvite
from services.sipagent.config import AgentConfig
from services.sipagent.events import Answered, CallEvent, Ended, Progress
from services.sipagent.hosted import Addr, HostedCall, SipCall
from services.sipagent.inbound_call import InboundCall
from services.sipagent.resolve import Target
from tests.unit.sipagent.peer import OUR_OFFER, trunk_sdp
from tests.unit.sipagent.trunk import ANSWER, OFFER, respond

FIRST = Target("192.0.2.10", 5060, "udp", "trunk.test", "SRV _sip._udp.trunk.test")
SECOND = Target("192.0.2.20", 5062, "udp", "trunk.test", "SRV _sip._udp.trunk.test")
TRUNK = Trunk(name="default", host="trunk.test", domain="trunk.test")
PEER = ("198.51.100.7", 5060)
T1 = 0.5


@dataclass
class Wire:
    """An ``AgentCore``, a fake clock, and what the core sent, parsed as the network would."""

    core: AgentCore
    now: float = 0.0
    sent: list[tuple[SipMessage, Addr, str]] = field(default_factory=list)
    connects: list[Connect] = field(default_factory=list)
    quiet: list[bytes] = field(default_factory=list)
    "What was sent without a log line."
    events: list[tuple[HostedCall, CallEvent]] = field(default_factory=list)
    inbound: list[HostedCall] = field(default_factory=list)

    def pump(self) -> None:
        for action in self.core.actions_to_send():
            if isinstance(action, Connect):
                self.connects.append(action)
            else:
                self.sent.append((parse_message(action.data), action.addr, action.transport))
                if action.quiet:
                    self.quiet.append(action.data)
        self.inbound += self.core.inbound_calls()
        while (item := self.core.next_event()) is not None:
            self.events.append(item)

    def dial(self, *targets: Target, call_id: str = "c1") -> HostedCall:
        hosted = self.core.dial(call_id, TRUNK, "100", OFFER, targets, self.now)
        self.pump()
        return hosted

    def receive(self, message: Request | Response | bytes, addr: Addr) -> None:
        data = message if isinstance(message, bytes) else bytes(message)
        self.core.receive(data, addr, "udp", self.now)
        self.pump()

    def advance(self, to: float) -> None:
        """Run every timer up to ``to``."""
        while (deadline := self.core.get_timer()) is not None and deadline <= to:
            self.now = max(self.now, deadline)
            self.core.handle_timer(self.now)
            self.pump()
        self.now = to

    def requests(self, method: str, addr: Addr) -> list[Request]:
        return [
            m
            for m, a, _ in self.sent
            if isinstance(m, Request) and m.method == method and a == addr
        ]

    def responses(self, addr: Addr) -> list[Response]:
        return [m for m, a, _ in self.sent if isinstance(m, Response) and a == addr]

    def events_of(self, hosted: HostedCall) -> list[CallEvent]:
        return [event for h, event in self.events if h is hosted]


def wire(on_invite: OnInvite | None = None, **config: object) -> Wire:
    settings: dict[str, object] = {"trunk_host": "trunk.test", "t1": T1}
    settings.update(config)
    core = AgentCore(AgentConfig(**settings), lambda addr, transport: "192.0.2.1:5070")  # type: ignore[arg-type]
    core.on_invite = on_invite
    return Wire(core)


# --- failover --------------------------------------------------------------------------


def test_timer_b_moves_the_call_to_the_next_target() -> None:
    w = wire()
    hosted = w.dial(FIRST, SECOND)
    [first] = w.requests("INVITE", FIRST.addr)
    assert [c.target for c in w.connects] == [FIRST]
    w.advance(64 * T1 - 0.01)
    assert w.requests("INVITE", SECOND.addr) == []
    assert len(w.requests("INVITE", FIRST.addr)) > 1  # retransmitted meanwhile
    w.advance(64 * T1)
    [second] = w.requests("INVITE", SECOND.addr)
    assert second.call_id != first.call_id  # a new INVITE, its own Call-ID
    assert [c.target for c in w.connects] == [FIRST, SECOND]
    assert hosted.trunk == SECOND.addr and w.events == []  # the caller heard nothing
    w.receive(respond(second, 200, body=ANSWER), SECOND.addr)
    assert w.events_of(hosted) == [Answered(ANSWER)]


def test_timer_b_on_the_last_target_ends_the_call() -> None:
    w = wire()
    hosted = w.dial(FIRST, SECOND)
    w.advance(300.0)
    [ended] = w.events_of(hosted)
    assert isinstance(ended, Ended) and ended.cause == errors.TIMEOUT
    assert w.core.active_calls == 0 and w.core.get_timer() is None


def test_a_503_fails_over_and_its_retry_after_rests_the_target() -> None:
    w = wire()
    hosted = w.dial(FIRST, SECOND)
    [invite] = w.requests("INVITE", FIRST.addr)
    w.receive(respond(invite, 100, to_tag=None), FIRST.addr)  # a 100 is only the next hop's
    w.receive(respond(invite, 503, headers=[("Retry-After", "120")]), FIRST.addr)
    assert w.requests("ACK", FIRST.addr)  # the 503 is acknowledged
    assert len(w.requests("INVITE", SECOND.addr)) == 1
    assert hosted.trunk == SECOND.addr and w.events == []
    # Every call skips the resting target until Retry-After is over.
    w.now = 119.0
    other = w.dial(FIRST, SECOND, call_id="c2")
    assert other.trunk == SECOND.addr and len(w.requests("INVITE", FIRST.addr)) == 1
    w.now = 121.0
    again = w.dial(FIRST, SECOND, call_id="c3")
    assert again.trunk == FIRST.addr and len(w.requests("INVITE", FIRST.addr)) == 2


def test_no_failover_after_a_provisional_response() -> None:
    w = wire()
    hosted = w.dial(FIRST, SECOND)
    [invite] = w.requests("INVITE", FIRST.addr)
    w.receive(respond(invite, 180), FIRST.addr)
    w.receive(respond(invite, 503), FIRST.addr)
    progress, ended = w.events_of(hosted)
    assert progress == Progress(180)
    assert isinstance(ended, Ended) and ended.status == 503
    assert w.requests("INVITE", SECOND.addr) == []


def test_no_failover_once_hung_up() -> None:
    w = wire()
    hosted = w.dial(FIRST, SECOND)
    [invite] = w.requests("INVITE", FIRST.addr)
    w.receive(respond(invite, 100, to_tag=None), FIRST.addr)
    w.core.hangup(hosted, errors.CANCELLED, w.now)
    w.pump()
    [cancel] = w.requests("CANCEL", FIRST.addr)
    w.receive(respond(cancel, 200), FIRST.addr)
    w.receive(respond(invite, 503), FIRST.addr)
    [ended] = w.events_of(hosted)
    assert isinstance(ended, Ended) and ended.cause == errors.CANCELLED
    assert w.requests("INVITE", SECOND.addr) == []


def test_a_transport_failure_fails_over_then_ends_the_call_once() -> None:
    w = wire()
    hosted = w.dial(FIRST, SECOND)
    w.core.transport_failed("udp", FIRST.addr, "refused", w.now)
    w.pump()
    assert len(w.requests("INVITE", SECOND.addr)) == 1
    w.core.transport_failed("udp", SECOND.addr, "refused too", w.now)
    w.pump()
    assert w.events_of(hosted) == [Ended(errors.UNREACHABLE, None, "refused too")]
    assert hosted.closed and w.core.active_calls == 0
    w.core.hangup(hosted, errors.CANCELLED, w.now)  # nothing left to cancel
    w.pump()
    assert len(w.events) == 1 and w.requests("CANCEL", SECOND.addr) == []


# --- requests of no call ----------------------------------------------------------------


def peer_request(method: str, *, call_id: str = "in-1", branch: str = "z9hG4bKin1") -> bytes:
    body = "v=0\r\n" if method == "INVITE" else ""
    return (
        f"{method} sip:+15550001111@192.0.2.1:5070 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {PEER[0]}:{PEER[1]};branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:+15557654321@trunk.test>;tag=caller\r\n"
        "To: <sip:+15550001111@192.0.2.1>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 1 {method}\r\n"
        f"Contact: <sip:+15557654321@{PEER[0]}:{PEER[1]}>\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


def test_requests_of_no_call_get_481_options_200_ack_nothing() -> None:
    w = wire()
    w.receive(peer_request("BYE"), PEER)
    w.receive(peer_request("OPTIONS", call_id="o"), PEER)
    w.receive(peer_request("INVITE", call_id="i"), PEER)  # no on_invite: as before
    w.receive(peer_request("ACK", call_id="a"), PEER)
    assert [(r.code, r.cseq.method) for r in w.responses(PEER)] == [
        (481, "BYE"),
        (200, "OPTIONS"),
        (481, "INVITE"),
    ]
    assert w.core.active_calls == 0


class FakeInbound:
    """An inbound call as the core hosts it: it records what reaches it."""

    def __init__(self, invite: Request) -> None:
        self.call_id = "bridge-1"
        self.sip_call_id = invite.call_id
        self.request_uri = str(invite.uri)
        self.invite = invite
        self.received: list[SipMessage] = []
        self.started_at: float | None = None
        self.ended = False
        self.asked: list[tuple[str, float]] = []
        "What the service asked of the call (ring, reject, answer), and when."
        self._out: list[SipMessage] = []
        self._events: deque[CallEvent] = deque()

    def start(self, now: float) -> None:
        self.started_at = now
        self._out.append(make_response(self.invite, 100))

    def receive(self, message: SipMessage, now: float) -> None:
        self.received.append(message)
        if isinstance(message, Request) and message.method == "CANCEL":
            self._out.append(make_response(message, 200, to_tag="uas"))
            self._out.append(make_response(self.invite, 487, to_tag="uas"))
            self._events.append(Ended(errors.CANCELLED, 487, "Request Terminated"))
            self.ended = True

    def hangup(self, cause: str, now: float) -> None:
        pass

    def ring(self, now: float) -> None:
        self.asked.append(("ring", now))
        self._out.append(make_response(self.invite, 180, to_tag="uas"))

    def reject(self, status: int, reason: str, now: float) -> None:
        self.asked.append((f"reject {status} {reason}", now))

    def answer(self, sdp: str, now: float) -> None:
        self.asked.append(("answer", now))

    def handle_timer(self, now: float) -> None:
        pass

    def get_timer(self) -> float | None:
        return None

    def messages_to_send(self) -> list[SipMessage]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> CallEvent | None:
        return self._events.popleft() if self._events else None

    @property
    def finished(self) -> bool:
        return self.ended


def test_an_invite_of_no_call_goes_to_on_invite_and_its_call_is_hosted() -> None:
    offered: list[tuple[str, Addr, str, float]] = []

    def on_invite(request: Request, addr: Addr, transport: str, now: float) -> SipCall:
        offered.append((request.call_id, addr, transport, now))
        return FakeInbound(request)

    w = wire(on_invite)
    w.now = 7.0
    w.receive(peer_request("INVITE"), PEER)
    assert offered == [("in-1", PEER, "udp", 7.0)]
    [hosted] = w.inbound
    call = hosted.call
    assert isinstance(call, FakeInbound) and call.started_at == 7.0
    assert hosted.inbound and hosted.trunk == PEER and hosted.transport == "udp"
    assert [r.code for r in w.responses(PEER)] == [100]
    # Its retransmission reaches the call, not on_invite again.
    w.receive(peer_request("INVITE"), PEER)
    assert len(offered) == 1 and len(call.received) == 1
    assert w.core.hosted("in-1") is hosted


def test_cancel_reaches_the_hosted_inbound_call() -> None:
    w = wire(lambda request, addr, transport, now: FakeInbound(request))
    w.receive(peer_request("INVITE"), PEER)
    [hosted] = w.inbound
    w.receive(peer_request("CANCEL"), PEER)  # same Call-ID and branch as the INVITE
    call = hosted.call
    assert isinstance(call, FakeInbound)
    [cancel] = call.received
    assert isinstance(cancel, Request) and cancel.method == "CANCEL"
    assert [(r.code, r.cseq.method) for r in w.responses(PEER)] == [
        (100, "INVITE"),
        (200, "CANCEL"),
        (487, "INVITE"),
    ]
    assert w.events_of(hosted) == [Ended(errors.CANCELLED, 487, "Request Terminated")]
    assert w.core.active_calls == 0


def test_on_invite_may_answer_alone_and_its_answer_covers_retransmissions() -> None:
    offered: list[str] = []

    def on_invite(request: Request, addr: Addr, transport: str, now: float) -> Response:
        offered.append(request.call_id)
        return make_response(request, 486, to_tag="busy")

    w = wire(on_invite)
    w.receive(peer_request("INVITE"), PEER)
    w.advance(5.0)
    w.receive(peer_request("INVITE"), PEER)  # retransmitted: the same answer
    assert offered == ["in-1"]
    assert [r.code for r in w.responses(PEER)] == [486, 486]
    w.receive(peer_request("INVITE", branch="z9hG4bKin2"), PEER)  # a new transaction
    assert offered == ["in-1", "in-1"] and w.core.active_calls == 0
    # The door logs its refusals within a budget: the answers themselves draw no line.
    assert len(w.quiet) == 3


def test_on_invite_may_drop_and_never_sees_in_dialog_invites() -> None:
    offered: list[str] = []

    def on_invite(request: Request, addr: Addr, transport: str, now: float) -> None:
        offered.append(request.call_id)

    w = wire(on_invite)
    w.receive(peer_request("INVITE"), PEER)
    assert offered == ["in-1"] and w.sent == []
    reinvite = peer_request("INVITE", call_id="gone").replace(
        b"To: <sip:+15550001111@192.0.2.1>", b"To: <sip:+15550001111@192.0.2.1>;tag=x"
    )
    w.receive(reinvite, PEER)
    assert offered == ["in-1"]
    assert [r.code for r in w.responses(PEER)] == [481]


# --- where an inbound call's requests go -------------------------------------------------


def inbound_invite(contact: Addr, *record_routes: str) -> bytes:
    """The trunk's INVITE from ``PEER``, naming ``contact`` as its remote target."""
    sdp = trunk_sdp()
    routes = "".join(f"Record-Route: {route}\r\n" for route in record_routes)
    return (
        "INVITE sip:+15550001111@192.0.2.1:5070 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {PEER[0]}:{PEER[1]};branch=z9hG4bKinv1\r\n"
        f"{routes}"
        "Max-Forwards: 70\r\n"
        "From: <sip:+15557654321@trunk.test>;tag=caller\r\n"
        "To: <sip:+15550001111@192.0.2.1>\r\n"
        "Call-ID: in-route\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:+15557654321@{contact[0]}:{contact[1]}>\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(sdp)}\r\n\r\n{sdp}"
    ).encode()


def answered_inbound(invite: bytes, transport: str = "udp") -> tuple[Wire, HostedCall]:
    """An inbound call answered and ACKed through the core."""

    def on_invite(request: Request, addr: Addr, transport: str, now: float) -> SipCall:
        return InboundCall(
            request,
            call_id="bridge-in",
            contact="<sip:bridge@192.0.2.1:5070>",
            sent_by="192.0.2.1:5070",
            transport=transport,
            t1=T1,
        )

    w = wire(on_invite)
    w.core.receive(invite, PEER, transport, w.now)
    w.pump()
    [hosted] = w.inbound
    call = hosted.call
    assert isinstance(call, InboundCall)
    w.core.drive(hosted, lambda now: call.answer(OUR_OFFER, now), w.now)
    w.pump()
    [ok] = [r for r in w.responses(PEER) if r.code == 200]
    ack = make_request(
        "ACK",
        "sip:bridge@192.0.2.1:5070",
        [
            ("Via", f"SIP/2.0/UDP {PEER[0]}:{PEER[1]};branch=z9hG4bKack1"),
            ("Max-Forwards", "70"),
            ("From", ok.headers["From"]),
            ("To", ok.headers["To"]),
            ("Call-ID", ok.call_id),
            ("CSeq", "1 ACK"),
        ],
    )
    w.core.receive(bytes(ack), PEER, transport, w.now)
    w.pump()
    assert any(isinstance(event, Answered) for event in w.events_of(hosted))
    return w, hosted


def test_an_inbound_calls_bye_goes_to_its_contact_and_responses_to_the_source() -> None:
    contact = (PEER[0], 5080)
    w, hosted = answered_inbound(inbound_invite(contact))
    assert [r.code for r in w.responses(PEER)] == [100, 200]
    w.now = 5.0
    w.core.hangup(hosted, errors.OPERATOR, w.now)
    w.pump()
    [bye] = w.requests("BYE", contact)
    assert w.requests("BYE", PEER) == []
    w.core.receive(bytes(respond(bye, 200)), contact, "udp", w.now)
    w.pump()
    w.advance(w.now + 64 * T1)
    assert len(w.requests("BYE", contact)) == 1  # answered there: not sent again
    assert w.core.active_calls == 0


def test_an_inbound_calls_bye_follows_its_record_route() -> None:
    proxy = ("192.0.2.50", 5070)
    w, hosted = answered_inbound(inbound_invite((PEER[0], 5080), f"<sip:{proxy[0]}:{proxy[1]};lr>"))
    w.core.hangup(hosted, errors.OPERATOR, w.now)
    w.pump()
    [bye] = w.requests("BYE", proxy)
    assert bye.headers["Route"] == f"<sip:{proxy[0]}:{proxy[1]};lr>"
    assert str(bye.uri) == f"sip:+15557654321@{PEER[0]}:5080"


def test_an_inbound_calls_bye_goes_to_the_source_when_its_contact_is_the_source() -> None:
    w, hosted = answered_inbound(inbound_invite(PEER))
    w.core.hangup(hosted, errors.OPERATOR, w.now)
    w.pump()
    assert len(w.requests("BYE", PEER)) == 1


def test_an_inbound_call_over_tls_keeps_its_requests_on_the_trunks_connection() -> None:
    w, hosted = answered_inbound(inbound_invite((PEER[0], 5081)), transport="tls")
    w.core.hangup(hosted, errors.OPERATOR, w.now)
    w.pump()
    assert len(w.requests("BYE", PEER)) == 1
