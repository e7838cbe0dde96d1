"""RFC 4028 session timers: our INVITE asks, the 2xx decides who refreshes."""

from __future__ import annotations

from sipmessage import Request, Response

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
    assert peer.feed(respond(update, 200, headers=[("Session-Expires", "120;refresher=uac")])) == []
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
    reinvite.headers.add("Session-Expires", "120;refresher=uac")
    reinvite.headers.add("Supported", "timer")
    (ok,) = peer.feed(reinvite)
    assert ok.headers.get("Session-Expires") == "120;refresher=uac"
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
    update.headers.add("Supported", "timer")
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


def _trunk_refresh(peer: Peer, value: str | None, *, supported: bool = True) -> Response:
    update = peer.request("UPDATE")
    if value is not None:
        update.headers.add("Session-Expires", value)
    if supported:
        update.headers.add("Supported", "timer")
    (ok,) = peer.feed(update)
    assert isinstance(ok, Response) and ok.code == 200
    return ok


def test_trunk_refresh_handing_us_the_refresher_role_is_followed() -> None:
    peer = _timed_call("120;refresher=uas")
    ok = _trunk_refresh(peer, "300;refresher=uas")
    assert (
        ok.headers["Session-Expires"] == "300;refresher=uas" and ok.headers.get("Require") is None
    )
    # We refresh now, every 150 s; the call is not ended at the old 88 s deadline.
    sent = peer.advance(149.0)
    assert sent == [] and not any(isinstance(e, Ended) for e in peer.events)
    update = only_request(peer.advance(150.0))
    assert update.method == "UPDATE" and update.headers["Session-Expires"] == "300;refresher=uac"


def test_trunk_refresh_with_a_longer_interval_moves_the_deadline() -> None:
    peer = _timed_call("120;refresher=uas")
    ok = _trunk_refresh(peer, "600;refresher=uac")
    assert ok.headers["Require"] == "timer"
    assert peer.advance(600 - 32 - 0.1) == []
    assert "BYE" in methods(peer.advance(600 - 32))


def test_refresher_default_and_require() -> None:
    peer = _timed_call("120;refresher=uas")
    # No refresher named, timers supported: the trunk keeps refreshing.
    ok = _trunk_refresh(peer, "120")
    assert ok.headers["Session-Expires"] == "120;refresher=uac"
    assert ok.headers["Require"] == "timer"
    # No timer support: we refresh, and require nothing of the trunk.
    ok = _trunk_refresh(peer, "120", supported=False)
    assert (
        ok.headers["Session-Expires"] == "120;refresher=uas" and ok.headers.get("Require") is None
    )
    assert only_request(peer.advance(60.0)).method == "UPDATE"


def test_trunk_refresh_without_session_expires_keeps_the_timer() -> None:
    peer = _timed_call("120;refresher=uac")
    ok = _trunk_refresh(peer, None, supported=False)
    assert ok.headers["Session-Expires"] == "120;refresher=uas"
    assert only_request(peer.advance(60.0)).method == "UPDATE"


def test_our_hold_keeps_the_timer_and_its_2xx_renegotiates() -> None:
    peer = _timed_call("120;refresher=uac")
    hold = only_request(peer.do(lambda now: peer.call.hold(True, now)))
    assert hold.headers["Session-Expires"] == "120;refresher=uac"
    assert hold.headers["Supported"] == "timer"
    peer.feed(respond(hold, 200, body=trunk_sdp("recvonly")))
    # The 2xx named no Session-Expires: no session timer any more (RFC 4028 7.2).
    assert peer.advance(4000.0) == []


def test_our_hold_2xx_can_hand_the_refresher_role_over() -> None:
    peer = _timed_call("120;refresher=uac")
    hold = only_request(peer.do(lambda now: peer.call.hold(True, now)))
    headers = [("Session-Expires", "100;refresher=uas"), ("Require", "timer")]
    peer.feed(respond(hold, 200, body=trunk_sdp("recvonly"), headers=headers))
    sent = peer.advance(100 - 32)
    assert "UPDATE" not in methods(sent) and "BYE" in methods(sent)


def test_update_refresh_answers_a_challenge_once() -> None:
    peer = _timed_call("120;refresher=uac")
    update = only_request(peer.advance(60.0))
    challenge = 'Digest realm="trunk.test", nonce="abc", algorithm=MD5'
    refusal = respond(update, 407, "Proxy Authentication Required")
    refusal.headers.add("Proxy-Authenticate", challenge)
    again = only_request(peer.feed(refusal))
    assert again.method == "UPDATE" and again.headers["Proxy-Authorization"].startswith("Digest ")
    refusal = respond(again, 407, "Proxy Authentication Required")
    refusal.headers.add("Proxy-Authenticate", challenge)
    assert peer.feed(refusal) == []  # not a second time


def test_update_refresh_refused_405_falls_back_to_reinvite() -> None:
    peer = _timed_call("120;refresher=uac")
    update = only_request(peer.advance(60.0))
    reinvite = only_request(peer.feed(respond(update, 405, "Method Not Allowed")))
    assert reinvite.method == "INVITE" and reinvite.headers["Session-Expires"].startswith("120")
    ok = respond(
        reinvite, 200, body=trunk_sdp(), headers=[("Session-Expires", "120;refresher=uac")]
    )
    peer.feed(ok)
    assert only_request(peer.advance(120.0)).method == "INVITE"


def test_update_refresh_422_takes_the_min_se() -> None:
    peer = _timed_call("120;refresher=uac")
    update = only_request(peer.advance(60.0))
    refusal = respond(update, 422, "Session Interval Too Small", headers=[("Min-SE", "300")])
    again = only_request(peer.feed(refusal))
    assert again.method == "UPDATE" and again.headers["Session-Expires"] == "300;refresher=uac"
