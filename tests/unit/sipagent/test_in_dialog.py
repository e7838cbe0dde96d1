"""Within a confirmed dialog: the trunk's re-INVITE and UPDATE, our hold, INFO, keep-alive."""

from __future__ import annotations

from sipmessage import Request, Response

from proto import errors
from services.common.sip.message import top_branch
from services.sipagent.call import OutboundCall
from services.sipagent.call_base import CallState
from services.sipagent.events import DtmfIn, Ended, HoldRefused, SessionChanged
from services.sipagent.transfer import TransferringCall
from services.sipagent.trunk_sdp import Audio
from tests.unit.sipagent.peer import (
    OUR_OFFER,
    Peer,
    answered_call,
    methods,
    only_request,
    trunk_sdp,
    with_body,
)
from tests.unit.sipagent.trunk import make_call, respond, trunk_request

HOLD_OFFER = trunk_sdp("sendonly", version=2)


def _sdp(message: Request | Response) -> Audio:
    return Audio.parse(message.body.decode())


def _version(message: Request | Response) -> int:
    origin = next(ln for ln in message.body.decode().splitlines() if ln.startswith("o="))
    return int(origin.split()[2])


def _ack(peer: Peer, reinvite: Request, ok: Response, body: str = "") -> Request:
    return peer.ack(reinvite, body)


def test_trunk_hold_and_resume_are_answered_recvonly_then_sendrecv() -> None:
    peer = answered_call()
    hold = peer.request("INVITE", HOLD_OFFER)
    (ok,) = peer.feed(hold)
    assert isinstance(ok, Response) and ok.code == 200
    answer = _sdp(ok)
    assert answer.direction == "recvonly"
    assert answer.connection == "192.0.2.1" and answer.port == 40000
    assert answer.formats == ["0", "101"]
    assert peer.events[-1] == SessionChanged(HOLD_OFFER, local_hold=False, remote_hold=True)
    assert peer.feed(_ack(peer, hold, ok)) == []

    resume = peer.request("INVITE", trunk_sdp("sendrecv", version=3))
    (ok2,) = peer.feed(resume)
    assert isinstance(ok2, Response) and _sdp(ok2).direction == "sendrecv"
    assert _version(ok2) > _version(ok) > 7
    last = peer.events[-1]
    assert isinstance(last, SessionChanged) and not last.remote_hold


def test_trunk_inactive_and_old_style_hold() -> None:
    peer = answered_call()
    inactive = peer.request("INVITE", trunk_sdp("inactive"))
    (ok,) = peer.feed(inactive)
    assert isinstance(ok, Response) and _sdp(ok).direction == "inactive"
    assert isinstance(peer.events[-1], SessionChanged) and peer.events[-1].remote_hold
    peer.feed(_ack(peer, inactive, ok))
    (ok2,) = peer.feed(peer.request("INVITE", trunk_sdp(address="0.0.0.0")))
    assert isinstance(ok2, Response) and ok2.code == 200
    assert isinstance(peer.events[-1], SessionChanged) and peer.events[-1].remote_hold


def test_new_media_address_is_reported() -> None:
    peer = answered_call()
    moved = trunk_sdp(port=31000, address="203.0.113.9")
    (ok,) = peer.feed(peer.request("INVITE", moved))
    assert isinstance(ok, Response) and ok.code == 200
    assert peer.events[-1] == SessionChanged(moved)


def test_reinvite_without_sdp_gets_our_offer_and_the_answer_comes_in_the_ack() -> None:
    peer = answered_call()
    reinvite = peer.request("INVITE")
    (ok,) = peer.feed(reinvite)
    assert isinstance(ok, Response) and ok.code == 200
    assert _sdp(ok).direction == "sendrecv" and _sdp(ok).formats == ["0", "8", "101"]
    assert not any(isinstance(e, SessionChanged) for e in peer.events)
    answer = trunk_sdp(port=32000)
    peer.feed(_ack(peer, reinvite, ok, answer))
    assert peer.events[-1] == SessionChanged(answer)


def test_update_with_and_without_sdp() -> None:
    peer = answered_call()
    (ok,) = peer.feed(peer.request("UPDATE", trunk_sdp("sendonly")))
    assert isinstance(ok, Response) and ok.code == 200 and _sdp(ok).direction == "recvonly"
    assert isinstance(peer.events[-1], SessionChanged) and peer.events[-1].remote_hold
    count = len(peer.events)
    (ok2,) = peer.feed(peer.request("UPDATE"))
    assert isinstance(ok2, Response) and ok2.code == 200 and not ok2.body
    assert len(peer.events) == count


def test_no_common_codec_is_488_and_the_session_stays() -> None:
    peer = answered_call()
    (refusal,) = peer.feed(peer.request("INVITE", trunk_sdp(formats="18")))
    assert isinstance(refusal, Response) and refusal.code == 488
    assert not any(isinstance(e, SessionChanged) for e in peer.events)
    assert peer.call.call.state is CallState.CONFIRMED


def test_overlapping_reinvite_gets_500_with_retry_after() -> None:
    peer = answered_call()
    peer.feed(peer.request("INVITE", HOLD_OFFER))
    (busy,) = peer.feed(peer.request("INVITE", trunk_sdp()))
    assert isinstance(busy, Response) and busy.code == 500
    assert busy.headers.get("Retry-After")


def test_our_2xx_is_retransmitted_until_the_ack() -> None:
    peer = answered_call()
    reinvite = peer.request("INVITE", HOLD_OFFER)
    (ok,) = peer.feed(reinvite)
    assert isinstance(ok, Response)
    sent = peer.advance(peer.now + 1.6)  # T1 0.5: at 0.5 and 1.5
    assert methods(sent) == ["200", "200"]
    # A retransmitted re-INVITE gets the same 200, not a new answer.
    assert [bytes(m) for m in peer.feed(reinvite)] == [bytes(ok)]
    peer.feed(_ack(peer, reinvite, ok))
    assert peer.advance(peer.now + 40) == []


def test_no_ack_for_our_2xx_ends_the_call_with_bye() -> None:
    peer = answered_call()
    peer.feed(peer.request("INVITE", HOLD_OFFER))
    sent = peer.advance(peer.now + 32.5)
    assert "BYE" in methods(sent)
    ended = peer.events[-1]
    assert isinstance(ended, Ended) and ended.cause == errors.DEAD_DIALOG


def _answered_over_tcp() -> Peer:
    def place(uri: str, sip_call_id: str = "") -> OutboundCall:
        extra = {"sip_call_id": sip_call_id} if sip_call_id else {}
        return make_call(
            request_uri=uri,
            transport="tcp",
            contact="<sip:alice@192.0.2.1:5070;transport=tcp>",
            offer_sdp=OUR_OFFER,
            keepalive=0.0,
            **extra,
        )

    peer = Peer(TransferringCall(place("sip:+15551234567@trunk.test", "call-1"), place))
    peer.call.start(peer.now)
    (invite,) = peer.pump()
    assert isinstance(invite, Request)
    peer.invite = invite
    peer.ok = respond(invite, 200, body=trunk_sdp())
    assert methods(peer.feed(peer.ok)) == ["ACK"]
    return peer


def test_our_2xx_is_retransmitted_over_tcp_too_and_the_ack_stops_it() -> None:
    """RFC 3261 13.3.1.4: the 2xx retransmission is end to end, whatever the transport."""
    peer = _answered_over_tcp()
    reinvite = peer.request("INVITE", HOLD_OFFER)
    (ok,) = peer.feed(reinvite)
    assert isinstance(ok, Response) and ok.code == 200
    assert methods(peer.advance(peer.now + 1.6)) == ["200", "200"]
    assert peer.feed(_ack(peer, reinvite, ok)) == []
    assert peer.feed(reinvite) == []  # after the ACK a retransmitted re-INVITE is absorbed
    assert peer.advance(peer.now + 40) == []
    assert peer.call.call.state is CallState.CONFIRMED
    # The next re-INVITE is answered as usual: the first one is settled.
    (again,) = peer.feed(peer.request("INVITE", trunk_sdp("sendrecv", version=3)))
    assert isinstance(again, Response) and again.code == 200


def test_browser_hold_sends_sendonly_and_resume_sendrecv() -> None:
    peer = answered_call()
    (reinvite,) = peer.do(lambda now: peer.call.hold(True, now))
    assert isinstance(reinvite, Request) and reinvite.method == "INVITE"
    assert _sdp(reinvite).direction == "sendonly" and _version(reinvite) == 8
    assert reinvite.headers["To"] == peer.ok.headers["To"]  # type: ignore[union-attr]
    ok = respond(reinvite, 200, body=trunk_sdp("recvonly"))
    (ack,) = peer.feed(ok)
    assert isinstance(ack, Request) and ack.method == "ACK"
    assert ack.cseq.sequence == reinvite.cseq.sequence
    assert peer.events[-1] == SessionChanged(trunk_sdp("recvonly"), local_hold=True)
    assert methods(peer.feed(ok)) == ["ACK"]  # a retransmitted 2xx is ACKed again

    (resume,) = peer.do(lambda now: peer.call.hold(False, now))
    assert isinstance(resume, Request) and _sdp(resume).direction == "sendrecv"
    peer.feed(respond(resume, 200, body=trunk_sdp()))
    assert peer.events[-1] == SessionChanged(trunk_sdp(), local_hold=False)


def test_while_we_hold_the_trunks_offer_is_answered_sendonly() -> None:
    peer = answered_call()
    reinvite = only_request(peer.do(lambda now: peer.call.hold(True, now)))
    peer.feed(respond(reinvite, 200, body=trunk_sdp("recvonly")))
    (ok,) = peer.feed(peer.request("INVITE", trunk_sdp("sendrecv")))
    assert isinstance(ok, Response) and _sdp(ok).direction == "sendonly"


def test_glare_both_ways() -> None:
    peer = answered_call()
    ours = only_request(peer.do(lambda now: peer.call.hold(True, now)))
    (refusal,) = peer.feed(peer.request("INVITE", trunk_sdp()))
    assert isinstance(refusal, Response) and refusal.code == 491
    # Our re-INVITE refused 491: ACKed, tried again 2.1 to 4 s later.
    assert methods(peer.feed(respond(ours, 491, "Request Pending"))) == ["ACK"]
    assert peer.advance(peer.now + 2.0) == []
    again = next(m for m in peer.advance(peer.now + 2.1) if isinstance(m, Request))
    assert again.method == "INVITE" and again.cseq.sequence > ours.cseq.sequence
    assert _sdp(again).direction == "sendonly"
    peer.feed(respond(again, 200, body=trunk_sdp("recvonly")))
    assert isinstance(peer.events[-1], SessionChanged) and peer.events[-1].local_hold


def test_hold_answers_a_challenge() -> None:
    peer = answered_call()
    ours = only_request(peer.do(lambda now: peer.call.hold(True, now)))
    challenge = 'Digest realm="trunk.test", nonce="abc", algorithm=MD5'
    sent = peer.feed(respond(ours, 401, "Unauthorized", headers=[("WWW-Authenticate", challenge)]))
    assert methods(sent) == ["ACK", "INVITE"]
    again = sent[1]
    assert isinstance(again, Request) and again.headers["Authorization"].startswith("Digest ")
    (ack,) = peer.feed(respond(again, 200, body=trunk_sdp("recvonly")))
    assert isinstance(ack, Request) and ack.headers.get("Authorization")
    assert isinstance(peer.events[-1], SessionChanged) and peer.events[-1].local_hold


def test_refused_or_unanswered_hold_leaves_the_session() -> None:
    peer = answered_call()
    ours = only_request(peer.do(lambda now: peer.call.hold(True, now)))
    peer.feed(respond(ours, 488, "Not Acceptable Here"))
    assert peer.events[-1] == HoldRefused(True, 488, "Not Acceptable Here")
    ours = only_request(peer.do(lambda now: peer.call.hold(True, now)))
    peer.advance(peer.now + 40)
    assert peer.events[-1] == HoldRefused(True, None, "No answer from the trunk")
    assert peer.call.call.state is CallState.CONFIRMED
    # The trunk's offer is still answered as before the hold was asked.
    (ok,) = peer.feed(peer.request("INVITE", trunk_sdp()))
    assert isinstance(ok, Response) and _sdp(ok).direction == "sendrecv"


def test_hold_before_the_answer_fails_at_once() -> None:
    call = make_call()
    call.start(0.0)
    call.messages_to_send()
    call.hold(True, 0.0)
    assert call.next_event() == HoldRefused(True, None, "The call is not answered")
    assert call.messages_to_send() == []


def test_info_digits_go_one_at_a_time() -> None:
    peer = answered_call(dtmf="info")
    (first,) = peer.do(lambda now: peer.call.send_dtmf("1#", 160, now))
    assert isinstance(first, Request) and first.method == "INFO"
    assert first.headers["Content-Type"] == "application/dtmf-relay"
    assert first.body == b"Signal=1\r\nDuration=160\r\n"
    assert peer.advance(peer.now + 0.1) == []  # the next waits for the final response
    (second,) = peer.feed(respond(first, 200))
    assert isinstance(second, Request) and second.body == b"Signal=#\r\nDuration=160\r\n"
    assert second.cseq.sequence == first.cseq.sequence + 1
    assert peer.feed(respond(second, 200)) == []


def test_digits_go_by_info_when_the_answer_has_no_telephone_event() -> None:
    peer = answered_call(answer=trunk_sdp(formats="0"))
    (info,) = peer.do(lambda now: peer.call.send_dtmf("5", 160, now))
    assert isinstance(info, Request) and info.method == "INFO"
    with_events = answered_call()
    assert with_events.do(lambda now: with_events.call.send_dtmf("5", 160, now)) == []


def test_incoming_info_digits() -> None:
    peer = answered_call()
    relay = peer.request("INFO", "Signal=7\r\nDuration=100\r\n", "application/dtmf-relay")
    assert methods(peer.feed(relay)) == ["200"]
    assert methods(peer.feed(peer.request("INFO", "#", "application/dtmf"))) == ["200"]
    assert methods(peer.feed(peer.request("INFO", "<x/>", "application/xml"))) == ["415"]
    assert methods(peer.feed(peer.request("INFO"))) == ["200"]
    assert [e for e in peer.events if isinstance(e, DtmfIn)] == [DtmfIn("7"), DtmfIn("#")]


def test_keepalive_answered_then_dead() -> None:
    peer = answered_call(keepalive=30.0)
    (options,) = peer.advance(30.0)
    assert isinstance(options, Request) and options.method == "OPTIONS"
    assert options.headers["To"] == peer.ok.headers["To"]  # type: ignore[union-attr]
    assert peer.feed(respond(options, 200)) == []
    options2 = only_request(peer.advance(60.0))
    sent = peer.feed(respond(options2, 481, "Call/Transaction Does Not Exist"))
    assert methods(sent) == ["BYE"]
    assert peer.events[-1] == Ended(errors.DEAD_DIALOG, None, "The trunk stopped answering")


def test_keepalive_unanswered_ends_the_call() -> None:
    peer = answered_call(keepalive=30.0)
    sent = peer.advance(30.0 + 32.0)
    assert methods(sent).count("OPTIONS") > 1 and "BYE" in methods(sent)
    ended = peer.events[-1]
    assert isinstance(ended, Ended) and ended.cause == errors.DEAD_DIALOG
    # Told at once; the BYE goes on absorbing its own timers after.
    peer.advance(peer.now + 40)
    assert peer.call.finished


def test_keepalive_off() -> None:
    peer = answered_call(keepalive=0.0)
    assert peer.advance(300.0) == []


def test_retransmitted_request_is_answered_the_same() -> None:
    peer = answered_call()
    info = peer.request("INFO", "Signal=1\r\n", "application/dtmf-relay")
    (first,) = peer.feed(info)
    (again,) = peer.feed(with_body(info, "Signal=1\r\n", "application/dtmf-relay"))
    assert top_branch(first) == top_branch(again) and bytes(first) == bytes(again)
    assert sum(isinstance(e, DtmfIn) for e in peer.events) == 1


def test_cancel_of_the_trunks_reinvite_gets_200_and_a_stray_one_481() -> None:
    peer = answered_call()
    reinvite = peer.request("INVITE", HOLD_OFFER)
    (ok,) = peer.feed(reinvite)
    assert isinstance(ok, Response) and ok.code == 200
    assert peer.invite is not None and peer.ok is not None
    cancel = trunk_request(
        "CANCEL", peer.invite, peer.ok, reinvite.cseq.sequence, top_branch(reinvite)
    )
    (cancelled,) = peer.feed(cancel)
    assert isinstance(cancelled, Response) and cancelled.code == 200
    assert cancelled.headers["CSeq"].endswith("CANCEL")
    assert peer.feed(peer.ack(reinvite)) == []
    assert peer.call.call.state is CallState.CONFIRMED
    stray = trunk_request("CANCEL", peer.invite, peer.ok, 40, "z9hG4bKnothing")
    (unknown,) = peer.feed(stray)
    assert isinstance(unknown, Response) and unknown.code == 481


def test_session_change_carries_only_the_formats_we_answered() -> None:
    peer = answered_call()
    offer = trunk_sdp(formats="18 0 101", version=2)  # G729 first: not in our offer
    (ok,) = peer.feed(peer.request("INVITE", offer))
    assert isinstance(ok, Response) and _sdp(ok).formats == ["0", "101"]
    changed = peer.events[-1]
    assert isinstance(changed, SessionChanged)
    remote = Audio.parse(changed.remote_sdp)
    assert remote.formats == ["0", "101"] and "G729" not in changed.remote_sdp
    assert remote.port == 30000 and remote.connection == "198.51.100.7"


def test_hold_left_ringing_is_cancelled_and_refused_then_the_next_hold_goes() -> None:
    peer = answered_call()
    ours = only_request(peer.do(lambda now: peer.call.hold(True, now)))
    assert peer.feed(respond(ours, 180, "Ringing")) == []
    sent = peer.advance(peer.now + 32.5)  # 64*T1 after the provisional
    cancel = next(m for m in sent if isinstance(m, Request) and m.method == "CANCEL")
    assert cancel.cseq.sequence == ours.cseq.sequence and top_branch(cancel) == top_branch(ours)
    assert peer.events[-1] == HoldRefused(True, None, "No answer from the trunk")
    peer.feed(respond(cancel, 200))
    assert methods(peer.feed(respond(ours, 487, "Request Terminated"))) == ["ACK"]
    again = only_request(peer.do(lambda now: peer.call.hold(True, now)))
    assert again.method == "INVITE" and again.cseq.sequence > ours.cseq.sequence


def test_refresh_left_ringing_is_a_failed_refresh() -> None:
    peer = answered_call(
        answer_headers=[("Session-Expires", "120;refresher=uac"), ("Allow", "INVITE, BYE")]
    )
    refresh = only_request(peer.advance(60.0))
    assert refresh.method == "INVITE"
    peer.feed(respond(refresh, 183, "Session Progress"))
    sent = peer.advance(peer.now + 32.5)
    assert "CANCEL" in methods(sent) and "BYE" in methods(sent)
    assert isinstance(peer.events[-1], Ended) and peer.events[-1].cause == errors.DEAD_DIALOG
