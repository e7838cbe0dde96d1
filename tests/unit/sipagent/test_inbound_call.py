"""A call from the trunk, on a fake clock: ring, reject, answer, ACK or none, CANCEL, BYE, hold."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from sipmessage import URI, Request, Response

from proto import errors
from services.common.sip.message import make_request, parse_message, tag_of
from services.sipagent.call_base import CallState
from services.sipagent.events import Answered, CallEvent, Ended, SessionChanged
from services.sipagent.inbound_call import MAX_UNANSWERED, InboundCall
from tests.unit.sipagent.peer import OUR_OFFER, trunk_sdp, with_body
from tests.unit.sipagent.trunk import respond

OFFER = trunk_sdp()
CONTACT = "<sip:bridge@192.0.2.1:5070;transport=udp>"


def _invite(branch: str = "z9hG4bKin1", body: str = OFFER, **extra: str) -> Request:
    invite = make_request(
        "INVITE",
        "sip:+15550001111@192.0.2.1:5070",
        [
            ("Via", f"SIP/2.0/UDP 198.51.100.7:5060;branch={branch}"),
            ("Record-Route", "<sip:proxy.trunk.test;lr>"),
            ("Max-Forwards", "70"),
            ("From", '"Caller" <sip:+15557654321@trunk.test>;tag=caller'),
            ("To", "<sip:+15550001111@192.0.2.1>"),
            ("Call-ID", "in-1@trunk.test"),
            ("CSeq", "10 INVITE"),
            ("Contact", "<sip:+15557654321@198.51.100.7:5060>"),
            ("Allow", "INVITE, ACK, BYE, CANCEL, UPDATE"),
            *extra.items(),
        ],
    )
    return with_body(invite, body) if body else invite


@dataclass
class Trunk:
    """The trunk's side of one inbound call, through the wire, on a fake clock."""

    call: InboundCall
    invite: Request
    now: float = 0.0
    events: list[CallEvent] = field(default_factory=list)
    cseq: int = 10

    def pump(self) -> list[Request | Response]:
        out = [parse_message(bytes(m)) for m in self.call.messages_to_send()]
        while (event := self.call.next_event()) is not None:
            self.events.append(event)
        return out

    def feed(self, message: Request | Response) -> list[Request | Response]:
        self.call.receive(parse_message(bytes(message)), self.now)
        return self.pump()

    def do(self, action: object) -> list[Request | Response]:
        action(self.now)  # type: ignore[operator]
        return self.pump()

    def advance(self, to: float) -> list[Request | Response]:
        out: list[Request | Response] = []
        while (deadline := self.call.get_timer()) is not None and deadline <= to:
            self.now = max(self.now, deadline)
            self.call.handle_timer(self.now)
            out += self.pump()
        self.now = to
        return out

    def request(self, method: str, ok: Response, cseq: int | None = None) -> Request:
        """A request of the trunk in the dialog our ``ok`` made."""
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        request = make_request(
            method,
            "sip:bridge@192.0.2.1:5070",
            [
                ("Via", f"SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKt{method}{cseq}"),
                ("Max-Forwards", "70"),
                ("From", self.invite.headers["From"]),
                ("To", ok.headers["To"]),
                ("Call-ID", self.invite.call_id),
                ("CSeq", f"{cseq} {method}"),
                ("Contact", "<sip:+15557654321@198.51.100.7:5060>"),
            ],
        )
        return request

    def ack(self, ok: Response) -> Request:
        return self.request("ACK", ok, cseq=self.invite.cseq.sequence)


def _trunk(invite: Request | None = None, transport: str = "udp") -> Trunk:
    invite = invite or _invite()
    call = InboundCall(
        invite,
        call_id="in-abc",
        contact=CONTACT,
        sent_by="192.0.2.1:5070",
        transport=transport,
        rng=random.Random(3),
    )
    trunk = Trunk(call, invite)
    (trying,) = trunk.do(call.start)
    assert isinstance(trying, Response) and trying.code == 100
    assert not tag_of(trying.headers["To"])
    return trunk


def _state(call: InboundCall) -> CallState:
    return call.state


def _codes(messages: list[Request | Response]) -> list[int | str]:
    return [m.code if isinstance(m, Response) else m.method for m in messages]


def _answered(transport: str = "udp") -> tuple[Trunk, Response]:
    trunk = _trunk(transport=transport)
    (ok,) = trunk.do(lambda now: trunk.call.answer(OUR_OFFER, now))
    assert isinstance(ok, Response)
    assert trunk.feed(trunk.ack(ok)) == []
    return trunk, ok


def test_ring_says_180_once_with_our_tag_and_the_record_route() -> None:
    trunk = _trunk()
    (ringing,) = trunk.do(trunk.call.ring)
    assert isinstance(ringing, Response) and ringing.code == 180
    assert tag_of(ringing.headers["To"])
    assert ringing.headers["Record-Route"] == "<sip:proxy.trunk.test;lr>"
    assert ringing.headers["Contact"] == CONTACT
    assert trunk.call.ringing
    assert trunk.do(trunk.call.ring) == []
    assert trunk.events == []


def test_invite_retransmitted_while_ringing_gets_the_180_again() -> None:
    trunk = _trunk()
    trunk.do(trunk.call.ring)
    assert _codes(trunk.feed(trunk.invite)) == [180]
    # Proceeding waits on the host; only the backstop is on the clock.
    assert trunk.call.get_timer() == MAX_UNANSWERED


def test_a_call_the_host_never_decides_ends_itself_with_480() -> None:
    trunk = _trunk()
    trunk.do(trunk.call.ring)
    assert trunk.advance(MAX_UNANSWERED - 0.1) == []
    (final,) = trunk.advance(MAX_UNANSWERED)
    assert isinstance(final, Response) and final.code == 480
    assert trunk.events == [Ended(errors.NO_ANSWER, 480, "Temporarily Unavailable")]
    assert not trunk.call.unanswered


def test_the_backstop_is_the_one_the_door_gives() -> None:
    invite = _invite()
    call = InboundCall(
        invite, call_id="in-abc", contact=CONTACT, sent_by="192.0.2.1:5070", max_unanswered=85.0
    )
    trunk = Trunk(call, invite, now=5.0)
    trunk.do(call.start)
    assert call.unanswered and call.get_timer() == 90.0


def test_reject_486_and_603_end_the_call_and_wait_for_the_ack() -> None:
    for status, reason in ((486, "Busy Here"), (603, "Decline")):
        trunk = _trunk()
        trunk.do(trunk.call.ring)
        call = trunk.call
        (final,) = trunk.do(lambda now, s=status, r=reason, c=call: c.reject(s, r, now))
        assert isinstance(final, Response) and final.code == status
        assert trunk.events == [Ended(errors.REJECTED, status, reason)]
        assert not trunk.call.finished
        assert _codes(trunk.advance(0.5)) == [status]  # Timer G until the ACK
        ack = make_request(
            "ACK",
            "sip:+15550001111@192.0.2.1:5070",
            [
                ("Via", trunk.invite.headers["Via"]),
                ("From", trunk.invite.headers["From"]),
                ("To", final.headers["To"]),
                ("Call-ID", trunk.invite.call_id),
                ("CSeq", "10 ACK"),
            ],
        )
        assert trunk.feed(ack) == []
        assert trunk.advance(10.0) == []
        assert trunk.call.finished


def test_answer_then_ack_is_answered_with_the_trunks_offer() -> None:
    trunk = _trunk()
    trunk.do(trunk.call.ring)
    (ok,) = trunk.do(lambda now: trunk.call.answer(OUR_OFFER, now))
    assert isinstance(ok, Response) and ok.code == 200
    assert ok.body.decode() == OUR_OFFER
    assert ok.headers["Contact"] == CONTACT
    assert "UPDATE" in ok.headers["Allow"] and ok.headers["Supported"] == "timer"
    assert trunk.call.state is CallState.ACCEPTED and trunk.events == []
    assert _codes(trunk.advance(1.6)) == [200, 200]  # re-sent until the ACK
    assert trunk.feed(trunk.ack(ok)) == []
    assert trunk.events == [Answered(OFFER)]
    assert _state(trunk.call) is CallState.CONFIRMED
    assert trunk.call.dialog is not None
    assert trunk.advance(40.0) == []  # no more 200s once ACKed


def test_answer_over_tcp_is_answered_too() -> None:
    trunk, _ = _answered("tcp")
    assert trunk.events == [Answered(OFFER)]


def test_answer_without_ack_sends_bye_and_ends_timeout() -> None:
    trunk = _trunk()
    trunk.do(lambda now: trunk.call.answer(OUR_OFFER, now))
    sent = trunk.advance(32.0)
    assert _codes(sent)[:-1] == [200] * 10
    bye = sent[-1]
    assert isinstance(bye, Request) and bye.method == "BYE"
    # In the dialog: to the INVITE's Contact, through its Record-Route.
    assert bye.uri == URI.parse("sip:+15557654321@198.51.100.7:5060")
    assert bye.headers["Route"] == "<sip:proxy.trunk.test;lr>"
    assert tag_of(bye.headers["To"]) == "caller"
    assert trunk.events == [Ended(errors.TIMEOUT, None, "No ACK from the trunk")]
    trunk.feed(respond(bye, 200, to_tag=None))
    assert trunk.call.state is CallState.ENDED
    trunk.advance(100.0)
    assert trunk.call.finished
    assert len([e for e in trunk.events if isinstance(e, Ended)]) == 1


def test_cancel_while_ringing_gets_200_and_the_invite_487() -> None:
    trunk = _trunk()
    trunk.do(trunk.call.ring)
    cancel = make_request(
        "CANCEL",
        trunk.invite.uri,
        [
            ("Via", trunk.invite.headers["Via"]),
            ("Max-Forwards", "70"),
            ("From", trunk.invite.headers["From"]),
            ("To", trunk.invite.headers["To"]),
            ("Call-ID", trunk.invite.call_id),
            ("CSeq", "10 CANCEL"),
        ],
    )
    sent = trunk.feed(cancel)
    assert [(m.code, m.cseq.method) for m in sent if isinstance(m, Response)] == [
        (200, "CANCEL"),
        (487, "INVITE"),
    ]
    assert trunk.events == [Ended(errors.CANCELLED, 487, "Cancelled by the caller")]
    # A late answer changes nothing.
    assert trunk.do(lambda now: trunk.call.answer(OUR_OFFER, now)) == []


def test_bye_from_the_trunk_after_the_answer() -> None:
    trunk, ok = _answered()
    (reply,) = trunk.feed(trunk.request("BYE", ok))
    assert isinstance(reply, Response) and reply.code == 200
    assert trunk.events[-1] == Ended(errors.REMOTE_HANGUP, None, "Remote party hung up")
    assert trunk.call.state is CallState.ENDED


def test_our_hangup_after_the_answer_sends_bye() -> None:
    trunk, ok = _answered()
    (bye,) = trunk.do(lambda now: trunk.call.hangup(errors.NORMAL, now))
    assert isinstance(bye, Request) and bye.method == "BYE"
    assert tag_of(bye.headers["From"]) == tag_of(ok.headers["To"])
    assert bye.headers["To"] == trunk.invite.headers["From"]
    trunk.feed(respond(bye, 200, to_tag=None))
    assert trunk.events[-1] == Ended(errors.NORMAL, None, "Hung up")
    assert trunk.call.state is CallState.ENDED


def test_hangup_before_the_answer_says_why_and_487_only_for_a_cancel() -> None:
    unavailable = (
        errors.NO_ANSWER,
        errors.NOT_LISTENING,
        errors.BROWSER_GONE,
        errors.SETUP_FAILED,
        errors.MEDIA_FAILED,
        errors.OPERATOR,
    )
    for cause in unavailable:
        trunk = _trunk()
        call = trunk.call
        (final,) = trunk.do(lambda now, call=call, cause=cause: call.hangup(cause, now))
        assert isinstance(final, Response) and final.code == 480, cause
        assert trunk.events == [Ended(cause, 480, "Temporarily Unavailable")]
    trunk = _trunk()
    (final,) = trunk.do(lambda now: trunk.call.hangup(errors.INTERNAL, now))
    assert isinstance(final, Response) and final.code == 500
    assert trunk.events == [Ended(errors.INTERNAL, 500, "Server Internal Error")]


def test_hangup_as_the_agent_stops_says_503_with_retry_after() -> None:
    for cause in (errors.NORMAL, errors.DRAINING):  # shutdown hangs every call up "normal"
        trunk = _trunk()
        call = trunk.call
        (final,) = trunk.do(lambda now, call=call, cause=cause: call.hangup(cause, now))
        assert isinstance(final, Response) and final.code == 503
        assert final.headers.get("Retry-After") == "5"
        assert trunk.events == [Ended(cause, 503, "Service Unavailable")]


def test_hangup_while_the_200_awaits_its_ack_byes_after_the_ack() -> None:
    trunk = _trunk()
    (ok,) = trunk.do(lambda now: trunk.call.answer(OUR_OFFER, now))
    assert isinstance(ok, Response)
    assert trunk.do(lambda now: trunk.call.hangup(errors.BROWSER_GONE, now)) == []
    assert trunk.events == [Ended(errors.BROWSER_GONE, None, "Hung up")]
    (bye,) = trunk.feed(trunk.ack(ok))
    assert isinstance(bye, Request) and bye.method == "BYE"
    assert not any(isinstance(e, Answered) for e in trunk.events)


def test_hold_after_the_answer_sends_a_sendonly_reinvite() -> None:
    trunk, _ = _answered()
    (reinvite,) = trunk.do(lambda now: trunk.call.hold(True, now))
    assert isinstance(reinvite, Request) and reinvite.method == "INVITE"
    assert "a=sendonly" in reinvite.body.decode()
    assert reinvite.headers["Route"] == "<sip:proxy.trunk.test;lr>"
    answer = trunk_sdp("recvonly", version=2)
    sent = trunk.feed(respond(reinvite, 200, to_tag=None, body=answer))
    assert _codes(sent) == ["ACK"]
    assert trunk.events[-1] == SessionChanged(answer, local_hold=True, remote_hold=False)


def test_reinvite_from_the_trunk_after_the_answer() -> None:
    trunk, ok = _answered()
    moved = trunk_sdp(port=31000, version=2)
    (reply,) = trunk.feed(with_body(trunk.request("INVITE", ok), moved))
    assert isinstance(reply, Response) and reply.code == 200
    assert trunk.events[-1] == SessionChanged(moved)


def test_refusal_says_what_is_wrong_with_an_invite() -> None:
    assert InboundCall.refusal(_invite()) is None
    no_offer = InboundCall.refusal(_invite(body=""))
    assert no_offer is not None and no_offer.status == 488
    text = with_body(_invite(body=""), "hello", "text/plain")
    refusal = InboundCall.refusal(text)
    assert refusal is not None and refusal.status == 415
    required = InboundCall.refusal(_invite(Require="100rel"))
    assert required is not None and required.status == 420
    brief = InboundCall.refusal(_invite(**{"Session-Expires": "30"}))
    assert brief is not None and brief.status == 422


def test_session_timer_the_trunk_asks_us_to_refresh() -> None:
    invite = _invite(**{"Session-Expires": "90;refresher=uas", "Supported": "timer"})
    trunk = _trunk(invite)
    (ok,) = trunk.do(lambda now: trunk.call.answer(OUR_OFFER, now))
    assert isinstance(ok, Response) and ok.headers["Session-Expires"] == "90;refresher=uas"
    trunk.feed(trunk.ack(ok))
    (update,) = trunk.advance(45.0)
    assert isinstance(update, Request) and update.method == "UPDATE"  # the trunk allows UPDATE
