"""The INVITE server transaction on a fake clock: Proceeding, Completed, Accepted; UDP and TCP."""

from __future__ import annotations

from sipmessage import Request, Response

from services.common.sip.invite_server import (
    AckReceived,
    AckTimedOut,
    InviteServerTransaction,
    ServerState,
)
from services.common.sip.message import make_request, make_response


def _invite(branch: str = "z9hG4bKinv") -> Request:
    return make_request(
        "INVITE",
        "sip:+15550001111@192.0.2.1",
        [
            ("Via", f"SIP/2.0/UDP 198.51.100.7:5060;branch={branch}"),
            ("Max-Forwards", "70"),
            ("From", "<sip:+15557654321@trunk.test>;tag=caller"),
            ("To", "<sip:+15550001111@192.0.2.1>"),
            ("Call-ID", "in-1"),
            ("CSeq", "1 INVITE"),
        ],
    )


def _ack(to_tag: str, branch: str) -> Request:
    return make_request(
        "ACK",
        "sip:bridge@192.0.2.1",
        [
            ("Via", f"SIP/2.0/UDP 198.51.100.7:5060;branch={branch}"),
            ("From", "<sip:+15557654321@trunk.test>;tag=caller"),
            ("To", f"<sip:+15550001111@192.0.2.1>;tag={to_tag}"),
            ("Call-ID", "in-1"),
            ("CSeq", "1 ACK"),
        ],
    )


def _response(invite: Request, code: int) -> Response:
    return make_response(invite, code, to_tag="ours")


def _codes_sent(tx: InviteServerTransaction, until: float) -> list[tuple[float, int]]:
    """``(when, status)`` of each response sent, running the timers up to ``until``."""
    sent = [(0.0, r.code) for r in tx.messages_to_send()]
    while (deadline := tx.get_timer()) is not None and deadline <= until:
        tx.handle_timer(deadline)
        sent += [(deadline, r.code) for r in tx.messages_to_send()]
    return sent


def test_retransmitted_invite_gets_the_last_provisional_again() -> None:
    invite = _invite()
    tx = InviteServerTransaction(invite)
    assert tx.matches(_invite()) and not tx.matches(_invite("z9hG4bKother"))
    tx.receive(invite, 0.0)
    assert tx.messages_to_send() == []  # nothing sent yet: nothing to repeat
    tx.respond(_response(invite, 100), 0.0)
    tx.respond(_response(invite, 180), 0.1)
    assert [r.code for r in tx.messages_to_send()] == [100, 180]
    tx.receive(invite, 0.5)
    assert [r.code for r in tx.messages_to_send()] == [180]
    assert tx.state is ServerState.PROCEEDING and tx.get_timer() is None


def test_non_2xx_over_udp_timer_g_until_ack_then_timer_i() -> None:
    invite = _invite()
    tx = InviteServerTransaction(invite)
    tx.respond(_response(invite, 486), 0.0)
    assert _codes_sent(tx, 3.6) == [(0.0, 486), (0.5, 486), (1.5, 486), (3.5, 486)]
    tx.receive(invite, 4.0)  # a retransmitted INVITE: the final response again
    assert [r.code for r in tx.messages_to_send()] == [486]
    ack = _ack("ours", "z9hG4bKinv")
    assert tx.matches(ack)
    tx.receive(ack, 4.0)
    assert tx.state is ServerState.CONFIRMED and tx.acknowledged
    assert tx.next_event() is None  # a non-2xx ACK is the transaction's business
    assert tx.get_timer() == 4.0 + 5.0  # Timer I = T4
    tx.handle_timer(9.0)
    assert tx.terminated and tx.messages_to_send() == []


def test_non_2xx_timer_g_caps_at_t2_and_timer_h_gives_up() -> None:
    invite = _invite()
    tx = InviteServerTransaction(invite)
    tx.respond(_response(invite, 603), 0.0)
    times = [when for when, _ in _codes_sent(tx, 31.9)]
    assert times == [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    tx.handle_timer(32.0)
    assert tx.next_event() == AckTimedOut(603)
    assert tx.terminated


def test_non_2xx_over_tcp_is_sent_once_and_the_ack_ends_it_at_once() -> None:
    invite = _invite()
    tx = InviteServerTransaction(invite, reliable=True)
    tx.respond(_response(invite, 480), 0.0)
    assert _codes_sent(tx, 31.9) == [(0.0, 480)]
    tx.receive(_ack("ours", "z9hG4bKinv"), 2.0)
    assert tx.get_timer() == 2.0  # Timer I is zero
    tx.handle_timer(2.0)
    assert tx.terminated


def test_non_2xx_over_tcp_without_ack_times_out() -> None:
    invite = _invite()
    tx = InviteServerTransaction(invite, reliable=True)
    tx.respond(_response(invite, 480), 0.0)
    assert tx.get_timer() == 32.0
    tx.handle_timer(32.0)
    assert tx.next_event() == AckTimedOut(480)


def test_2xx_is_retransmitted_until_its_ack_then_absorbs_until_timer_l() -> None:
    invite = _invite()
    tx = InviteServerTransaction(invite)
    tx.respond(_response(invite, 180), 0.0)
    tx.respond(_response(invite, 200), 1.0)
    sent = _codes_sent(tx, 8.0)
    assert sent == [(0.0, 180), (0.0, 200), (1.5, 200), (2.5, 200), (4.5, 200)]
    tx.receive(invite, 5.0)  # RFC 6026: absorbed in Accepted
    assert tx.messages_to_send() == []
    ack = _ack("ours", "z9hG4bKack")  # the 2xx's ACK: a new branch
    assert tx.matches(ack) and not tx.matches(_ack("someone-else", "z9hG4bKack"))
    tx.receive(ack, 6.0)
    assert tx.next_event() == AckReceived(ack)
    tx.receive(ack, 6.5)  # a retransmitted ACK: absorbed, no second event
    assert tx.next_event() is None
    assert _codes_sent(tx, 32.9) == []
    assert tx.state is ServerState.ACCEPTED
    tx.handle_timer(33.0)  # Timer L
    assert tx.terminated and tx.next_event() is None


def test_2xx_without_ack_ends_with_no_ack_at_timer_l() -> None:
    invite = _invite()
    tx = InviteServerTransaction(invite)
    tx.respond(_response(invite, 200), 0.0)
    times = [when for when, _ in _codes_sent(tx, 31.9)]
    assert times == [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    tx.handle_timer(32.0)
    assert tx.next_event() == AckTimedOut(200)
    assert tx.terminated


def test_2xx_over_tcp_is_retransmitted_too() -> None:
    """RFC 3261 13.3.1.4: the 2xx retransmission is end to end, whatever the transport."""
    invite = _invite()
    tx = InviteServerTransaction(invite, reliable=True)
    tx.respond(_response(invite, 200), 0.0)
    assert [when for when, _ in _codes_sent(tx, 2.0)] == [0, 0.5, 1.5]
    tx.receive(_ack("ours", "z9hG4bKack"), 2.0)
    assert isinstance(tx.next_event(), AckReceived)
    assert _codes_sent(tx, 31.0) == []


def test_no_second_final_response() -> None:
    invite = _invite()
    tx = InviteServerTransaction(invite)
    tx.respond(_response(invite, 200), 0.0)
    tx.respond(_response(invite, 487), 0.1)
    assert [r.code for r in tx.messages_to_send()] == [200]
    assert tx.final is not None and tx.final.code == 200


def test_resend_2xx_answers_a_retransmitted_invite_until_the_ack() -> None:
    invite = _invite()
    tx = InviteServerTransaction(invite, resend_2xx=True)
    tx.respond(_response(invite, 200), 0.0)
    (ok,) = tx.messages_to_send()
    tx.receive(invite, 0.2)  # before the next retransmission: the same 2xx at once
    assert tx.messages_to_send() == [ok]
    assert tx.get_timer() == 0.5  # the retransmission schedule is unchanged
    tx.receive(_ack("ours", "z9hG4bKack"), 0.3)
    tx.receive(invite, 0.4)  # acknowledged: absorbed as RFC 6026 says
    assert tx.messages_to_send() == []
