"""RFC 4028 session timers: our INVITE asks, the 2xx decides who refreshes."""

from __future__ import annotations

from sipmessage import Request

from proto import errors
from services.sipagent.events import Ended, SessionChanged
from services.sipagent.session_timer import session_expires
from tests.unit.sipagent.peer import Peer, answered_call, methods, only_request, trunk_sdp
from tests.unit.sipagent.trunk import make_call, respond


def _timed_call(session_expires: str, allow: str = "INVITE, ACK, BYE, UPDATE") -> Peer:
    return answered_call(answer_headers=[("Session-Expires", session_expires), ("Allow", allow)])


def test_invite_offers_a_session_timer_and_a_422_raises_it() -> None:
    call = make_call()
    call.start(0.0)
    (invite,) = call.messages_to_send()
    assert isinstance(invite, Request)
    assert invite.headers["Supported"] == "timer" and invite.headers["Session-Expires"] == "1800"
    call.receive(
        respond(invite, 422, "Session Interval Too Small", headers=[("Min-SE", "3600")]), 0
    )
    again = [m for m in call.messages_to_send() if isinstance(m, Request) and m.method == "INVITE"]
    assert again[0].headers["Session-Expires"] == "3600" and again[0].headers["Min-SE"] == "3600"
    assert again[0].cseq.sequence == 2


def test_we_refresh_by_update_at_half_the_interval() -> None:
    peer = _timed_call("120;refresher=uac")
    update = only_request(peer.advance(60.0))
    assert update.method == "UPDATE" and update.headers["Session-Expires"].startswith("120")
    assert peer.feed(respond(update, 200)) == []
    again = only_request(peer.advance(120.0))
    assert again.method == "UPDATE"
    # A refresh answered 481: the trunk forgot the dialog.
    assert methods(peer.feed(respond(again, 481, "Call/Transaction Does Not Exist"))) == ["BYE"]
    assert isinstance(peer.events[-1], Ended) and peer.events[-1].cause == errors.DEAD_DIALOG


def test_we_refresh_by_reinvite_when_update_is_not_allowed() -> None:
    peer = _timed_call("120;refresher=uac", allow="INVITE, ACK, BYE")
    count = len(peer.events)
    reinvite = only_request(peer.advance(60.0))
    assert reinvite.method == "INVITE" and b"a=sendrecv" in reinvite.body
    assert methods(peer.feed(respond(reinvite, 200, body=trunk_sdp()))) == ["ACK"]
    assert len(peer.events) == count  # a refresh is not news for the browser


def test_trunk_refresher_that_stops_refreshing_ends_the_call() -> None:
    peer = _timed_call("120;refresher=uas")
    assert peer.advance(50.0) == []
    # A re-INVITE from the trunk is a refresh: the deadline moves.
    reinvite = peer.request("INVITE", trunk_sdp())
    (ok,) = peer.feed(reinvite)
    assert ok.headers.get("Session-Expires") is None  # it asked for none
    peer.feed(peer.ack(reinvite))
    sent = peer.advance(50.0 + 120 - 32 - 0.1)
    assert "BYE" not in methods(sent)
    sent = peer.advance(50.0 + 120 - 32)
    assert "BYE" in methods(sent)
    assert isinstance(peer.events[-1], Ended) and peer.events[-1].cause == errors.DEAD_DIALOG
    assert any(isinstance(e, SessionChanged) for e in peer.events)


def test_refresh_request_is_echoed() -> None:
    peer = _timed_call("120;refresher=uas")
    update = peer.request("UPDATE")
    update.headers.add("Session-Expires", "120;refresher=uac")
    (ok,) = peer.feed(update)
    assert ok.headers["Session-Expires"] == "120;refresher=uac"
    assert ok.headers["Require"] == "timer"


def test_no_session_expires_no_timer() -> None:
    peer = answered_call()
    assert peer.advance(4000.0) == []


def test_session_expires_parsing() -> None:
    assert session_expires("1800;refresher=uas") == (1800, "uas")
    assert session_expires("90") == (90, "uac")
    assert session_expires(" 600 ; refresher = UAC ") == (600, "uac")
    assert session_expires("soon") is None and session_expires(None) is None
