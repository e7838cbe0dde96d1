"""REFER from the trunk: follow (NOTIFYs, new INVITE, old BYE) or decline."""

from __future__ import annotations

import pytest
from sipmessage import Request, Response

from proto import errors
from services.sipagent.call_base import CallState
from services.sipagent.events import Ended, SessionChanged
from services.sipagent.referral import refer_target
from tests.unit.sipagent.peer import OUR_OFFER, Peer, answered_call, methods, trunk_sdp
from tests.unit.sipagent.trunk import respond

TARGET = "sip:bob@203.0.113.5:5080"


def _refer(peer: Peer, refer_to: str = f"<{TARGET}>") -> list[Request | Response]:
    refer = peer.request("REFER")
    refer.headers.add("Refer-To", refer_to)
    return peer.feed(refer)


def _by_method(messages: list[Request | Response], method: str) -> Request:
    return next(m for m in messages if isinstance(m, Request) and m.method == method)


def _frag(notify: Request) -> str:
    assert notify.headers["Event"] == "refer"
    assert notify.headers["Content-Type"].startswith("message/sipfrag")
    return notify.body.decode().strip()


def test_refer_followed_to_a_new_call_then_the_old_dialog_is_ended() -> None:
    peer = answered_call()
    sent = _refer(peer, f"<{TARGET}?Replaces=abc%40host>")
    assert methods(sent) == ["202", "NOTIFY", "INVITE"]
    notify = _by_method(sent, "NOTIFY")
    assert _frag(notify) == "SIP/2.0 100 Trying"
    assert notify.headers["Subscription-State"].startswith("active")
    assert notify.call_id == peer.invite.call_id  # type: ignore[union-attr]
    invite = _by_method(sent, "INVITE")
    assert str(invite.uri) == TARGET and invite.call_id != peer.invite.call_id  # type: ignore[union-attr]
    assert invite.body.decode() == OUR_OFFER
    assert "Replaces" not in bytes(invite).decode()

    assert peer.feed(respond(notify, 200)) == []
    new_answer = trunk_sdp(port=34000, address="203.0.113.5")
    sent = peer.feed(respond(invite, 200, body=new_answer))
    assert methods(sent) == ["ACK", "NOTIFY", "BYE"]
    final = _by_method(sent, "NOTIFY")
    assert _frag(final) == "SIP/2.0 200 OK"
    assert final.headers["Subscription-State"].startswith("terminated")
    bye = _by_method(sent, "BYE")
    assert bye.call_id == peer.invite.call_id  # type: ignore[union-attr]
    assert peer.events[-1] == SessionChanged(new_answer, transferred_to=TARGET)
    assert peer.call.dialog is not None and peer.call.dialog.call_id == invite.call_id

    # The old dialog's end is not the call's end; the new dialog is the call now.
    peer.feed(respond(bye, 200))
    assert not any(isinstance(e, Ended) for e in peer.events)
    (hold,) = peer.do(lambda now: peer.call.hold(True, now))
    assert isinstance(hold, Request) and hold.call_id == invite.call_id
    peer.feed(respond(hold, 200, body=trunk_sdp("recvonly")))
    peer.call.hangup(errors.NORMAL, peer.now)
    (bye2,) = peer.pump()
    assert isinstance(bye2, Request) and bye2.call_id == invite.call_id
    peer.feed(respond(bye2, 200))
    assert peer.events[-1:] == [Ended(errors.NORMAL, None, "Hung up")]


def test_referrer_hanging_up_first_is_not_the_end_when_the_transfer_connects() -> None:
    peer = answered_call()
    invite = _by_method(_refer(peer), "INVITE")
    assert methods(peer.feed(peer.request("BYE"))) == ["200"]
    assert not any(isinstance(e, Ended) for e in peer.events)
    sent = peer.feed(respond(invite, 200, body=trunk_sdp()))
    assert methods(sent) == ["ACK"]  # no NOTIFY or BYE in a dialog that is gone
    assert isinstance(peer.events[-1], SessionChanged) and peer.events[-1].transferred_to


def test_failed_transfer_is_notified_and_the_call_goes_on() -> None:
    peer = answered_call()
    invite = _by_method(_refer(peer), "INVITE")
    sent = peer.feed(respond(invite, 486, "Busy Here"))
    assert sorted(methods(sent)) == ["ACK", "NOTIFY"]
    assert _frag(_by_method(sent, "NOTIFY")) == "SIP/2.0 486 Busy Here"
    assert peer.call.call.state is CallState.CONFIRMED
    assert not any(isinstance(e, Ended | SessionChanged) for e in peer.events)


def test_failed_transfer_after_the_referrer_hung_up_ends_the_call() -> None:
    peer = answered_call()
    invite = _by_method(_refer(peer), "INVITE")
    peer.feed(peer.request("BYE"))
    peer.feed(respond(invite, 404, "Not Found"))
    assert isinstance(peer.events[-1], Ended) and peer.events[-1].cause == errors.REMOTE_HANGUP


def test_refer_declined() -> None:
    peer = answered_call(transfer="decline")
    assert methods(_refer(peer)) == ["603"]


def test_bad_refer_to_is_400() -> None:
    peer = answered_call()
    assert methods(_refer(peer, "<tel:+15551234567>")) == ["400"]


@pytest.mark.parametrize(
    ("value", "target"),
    [
        ("<sip:bob:secret@203.0.113.5;transport=udp?X-A=1>", "sip:bob@203.0.113.5;transport=udp"),
        ("sip:carol@example.com", "sip:carol@example.com"),
        ('"Carol" <sips:carol@example.com>;x=1', "sips:carol@example.com"),
    ],
)
def test_refer_target_drops_headers_and_password(value: str, target: str) -> None:
    assert refer_target(value) == target


def test_second_refer_notifies_with_its_cseq_as_the_event_id() -> None:
    peer = answered_call()
    first = _refer(peer)
    assert _by_method(first, "NOTIFY").headers["Event"] == "refer"
    sent = peer.feed(respond(_by_method(first, "INVITE"), 486, "Busy Here"))
    assert _by_method(sent, "NOTIFY").headers["Event"] == "refer"
    second = _refer(peer, "<sip:carol@203.0.113.6>")
    assert methods(second) == ["202", "NOTIFY", "INVITE"]
    assert _by_method(second, "NOTIFY").headers["Event"] == f"refer;id={peer.cseq}"
    sent = peer.feed(respond(_by_method(second, "INVITE"), 404, "Not Found"))
    assert _by_method(sent, "NOTIFY").headers["Event"] == f"refer;id={peer.cseq}"


def test_sips_refer_to_over_plain_transport_is_refused() -> None:
    peer = answered_call()
    assert methods(_refer(peer, "<sips:carol@example.com>")) == ["403"]
    assert peer.call.call.state is CallState.CONFIRMED
