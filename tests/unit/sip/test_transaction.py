from __future__ import annotations

from sipmessage import Request

from services.common.sip.message import make_request
from services.common.sip.transaction import (
    InviteClientTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    ResponseReceived,
    State,
    TransactionTimedOut,
)
from tests.unit.sipagent.trunk import parse_response, respond


def _request(method: str = "INVITE") -> Request:
    return make_request(
        method,
        "sip:1@trunk.test",
        [
            ("Via", "SIP/2.0/UDP 192.0.2.1:5070;rport;branch=z9hG4bKabc"),
            ("Max-Forwards", "70"),
            ("From", "<sip:bridge@trunk.test>;tag=t1"),
            ("To", "<sip:1@trunk.test>"),
            ("Call-ID", "cid"),
            ("CSeq", f"1 {method}"),
        ],
    )


def _send_times(
    tx: InviteClientTransaction | NonInviteClientTransaction, until: float
) -> list[float]:
    """When the transaction sent something, running its timers up to ``until``."""
    times = [0.0] * len(tx.messages_to_send())
    while (deadline := tx.get_timer()) is not None and deadline <= until:
        tx.handle_timer(deadline)
        times += [deadline] * len(tx.messages_to_send())
    return times


def test_invite_udp_retransmits_then_timer_b() -> None:
    tx = InviteClientTransaction(_request())
    tx.start(0.0)
    assert _send_times(tx, 31.9) == [0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert tx.next_event() is None
    tx.handle_timer(32.0)
    assert isinstance(tx.next_event(), TransactionTimedOut)
    assert tx.terminated
    assert tx.get_timer() is None


def test_invite_tcp_no_retransmission() -> None:
    tx = InviteClientTransaction(_request(), reliable=True)
    tx.start(0.0)
    assert _send_times(tx, 31.9) == [0]
    assert tx.get_timer() == 32.0


def test_invite_provisional_stops_retransmissions() -> None:
    request = _request()
    tx = InviteClientTransaction(request)
    tx.start(0.0)
    tx.messages_to_send()
    tx.receive(parse_response(bytes(respond(request, 180))), 0.2)
    assert tx.state is State.PROCEEDING
    assert tx.get_timer() is None
    event = tx.next_event()
    assert isinstance(event, ResponseReceived) and event.response.code == 180


def test_invite_non_2xx_is_acked_and_absorbed() -> None:
    request = _request()
    tx = InviteClientTransaction(request)
    tx.start(0.0)
    tx.messages_to_send()
    busy = parse_response(bytes(respond(request, 486, "Busy Here")))
    tx.receive(busy, 1.0)
    (ack,) = tx.messages_to_send()
    assert isinstance(ack, Request) and ack.method == "ACK"
    assert ack.headers["CSeq"] == "1 ACK"
    assert ack.headers["Via"] == request.headers["Via"]
    assert ack.headers["To"].endswith(";tag=trunk-tag")
    assert str(ack.uri) == str(request.uri)
    assert isinstance(tx.next_event(), ResponseReceived)
    # A retransmitted 486 gets the same ACK again but is not reported twice.
    tx.receive(busy, 2.0)
    assert [m.method for m in tx.messages_to_send() if isinstance(m, Request)] == ["ACK"]
    assert tx.next_event() is None
    assert tx.get_timer() == 33.0  # Timer D
    tx.handle_timer(33.0)
    assert tx.terminated


def test_invite_2xx_retransmissions_reach_the_user() -> None:
    request = _request()
    tx = InviteClientTransaction(request)
    tx.start(0.0)
    ok = parse_response(bytes(respond(request, 200)))
    tx.receive(ok, 0.1)
    tx.receive(ok, 0.6)
    assert isinstance(tx.next_event(), ResponseReceived)
    assert isinstance(tx.next_event(), ResponseReceived)
    assert tx.state is State.ACCEPTED


def test_non_invite_timer_e_capped_at_t2_then_timer_f() -> None:
    tx = NonInviteClientTransaction(_request("BYE"))
    tx.start(0.0)
    assert _send_times(tx, 31.9) == [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    tx.handle_timer(32.0)
    assert isinstance(tx.next_event(), TransactionTimedOut)
    assert tx.terminated


def test_non_invite_proceeding_retransmits_every_t2() -> None:
    request = _request("BYE")
    tx = NonInviteClientTransaction(request)
    tx.start(0.0)
    tx.messages_to_send()
    tx.receive(parse_response(bytes(respond(request, 100, "Trying"))), 0.1)
    assert _send_times(tx, 9.0) == [0.5, 4.5, 8.5]


def test_non_invite_final_then_timer_k() -> None:
    request = _request("BYE")
    tx = NonInviteClientTransaction(request)
    tx.start(0.0)
    tx.receive(parse_response(bytes(respond(request, 200))), 0.1)
    assert tx.state is State.COMPLETED
    assert tx.get_timer() == 5.1
    tx.handle_timer(5.1)
    assert tx.terminated


def test_non_invite_tcp() -> None:
    request = _request("BYE")
    tx = NonInviteClientTransaction(request, reliable=True)
    tx.start(0.0)
    assert _send_times(tx, 31.0) == [0]
    tx.receive(parse_response(bytes(respond(request, 200))), 1.0)
    tx.handle_timer(1.0)
    assert tx.terminated


def test_server_transaction_repeats_its_response() -> None:
    request = _request("BYE")
    tx = NonInviteServerTransaction(request)
    tx.respond(respond(request, 200), 0.0)
    assert len(tx.messages_to_send()) == 1
    assert tx.matches(request)
    tx.receive(request, 1.0)
    assert len(tx.messages_to_send()) == 1
    tx.handle_timer(32.0)
    assert tx.terminated
