from __future__ import annotations

import pytest
from sipmessage import Request, Response

from proto import errors
from services.common.sip.auth import digest_response
from services.common.sip.message import tag_of, top_branch
from services.sipagent.call import CallState
from services.sipagent.events import Answered, Ended, Progress
from tests.unit.sipagent.trunk import (
    ANSWER,
    PASSWORD,
    USERNAME,
    Harness,
    auth_params,
    make_call,
    respond,
    trunk_request,
)


def _methods(messages: list[Request | Response]) -> list[str]:
    return [m.method if isinstance(m, Request) else str(m.code) for m in messages]


def _answered(h: Harness) -> tuple[Request, Response]:
    invite = h.start()
    h.feed(respond(invite, 180))
    ok = respond(invite, 200, body=ANSWER)
    assert _methods(h.feed(ok)) == ["ACK"]
    return invite, ok


def _check_digest(request: Request, header: str, realm: str, nonce: str) -> None:
    params = auth_params(request, header)
    assert params["username"] == USERNAME
    assert params["uri"] == str(request.uri)
    expected = digest_response(
        algorithm=params.get("algorithm", "MD5"),
        username=USERNAME,
        realm=realm,
        password=PASSWORD,
        method=request.method,
        uri=params["uri"],
        nonce=nonce,
        qop=params.get("qop"),
        nc=params.get("nc", ""),
        cnonce=params.get("cnonce", ""),
    )
    assert params["response"] == expected


def test_invite_shape() -> None:
    h = Harness(make_call())
    invite = h.start()
    assert str(invite.uri) == "sip:+15551234567@trunk.test"
    via = invite.via[0]
    assert "rport" in via.parameters and top_branch(invite).startswith("z9hG4bK")
    assert invite.headers["Max-Forwards"] == "70"
    assert invite.headers["CSeq"] == "1 INVITE"
    assert tag_of(invite.headers["From"])
    assert invite.headers["Contact"] == "<sip:bridge@192.0.2.1:5070;transport=udp>"
    assert invite.headers["Content-Type"] == "application/sdp"
    assert invite.headers.get("User-Agent") and "INVITE" in (invite.headers.get("Allow") or "")
    assert invite.body.startswith(b"v=0")
    assert h.call.state is CallState.CALLING


def test_ringing_answer_and_local_bye() -> None:
    h = Harness(make_call())
    invite = h.start()
    assert h.feed(respond(invite, 100, "Trying")) == []
    h.feed(respond(invite, 180))
    h.feed(respond(invite, 180))  # repeated: reported once
    h.feed(respond(invite, 183, "Session Progress", body=ANSWER))
    ok = respond(invite, 200, body=ANSWER)
    (ack,) = h.feed(ok)
    assert isinstance(ack, Request) and ack.method == "ACK"
    assert ack.headers["CSeq"] == "1 ACK"
    assert top_branch(ack) != top_branch(invite)
    assert str(ack.uri) == "sip:trunk@198.51.100.7:5060"
    assert h.events == [Progress(180), Progress(183, ANSWER), Answered(ANSWER)]

    # A retransmitted 2xx is ACKed again, not reported again.
    assert _methods(h.feed(ok)) == ["ACK"]
    assert len(h.events) == 3

    h.call.hangup(errors.NORMAL, h.now)
    (bye,) = h.pump()
    assert isinstance(bye, Request) and bye.method == "BYE"
    assert bye.headers["CSeq"] == "2 BYE"
    assert tag_of(bye.headers["To"]) == "trunk-tag"
    h.feed(respond(bye, 200))
    assert h.events[-1] == Ended(errors.NORMAL, None, "Hung up")
    assert h.call.state is CallState.ENDED


def test_remote_bye() -> None:
    h = Harness(make_call())
    invite, ok = _answered(h)
    bye = trunk_request("BYE", invite, ok)
    (reply,) = h.feed(bye)
    assert isinstance(reply, Response) and reply.code == 200
    assert h.events[-1].cause == errors.REMOTE_HANGUP  # type: ignore[union-attr]
    # The retransmitted BYE gets the same 200; a later hangup sends nothing.
    assert _methods(h.feed(bye)) == ["200"]
    h.call.hangup(errors.NORMAL, h.now)
    assert h.pump() == []
    assert sum(isinstance(e, Ended) for e in h.events) == 1


def test_in_dialog_options_and_reinvite() -> None:
    h = Harness(make_call())
    invite, ok = _answered(h)
    assert _methods(h.feed(trunk_request("OPTIONS", invite, ok, 1, "z9hG4bKo"))) == ["200"]
    assert _methods(h.feed(trunk_request("INVITE", invite, ok, 2, "z9hG4bKi"))) == ["488"]
    assert _methods(h.feed(trunk_request("MESSAGE", invite, ok, 3, "z9hG4bKn"))) == ["501"]
    other = respond(invite, 200, to_tag="someone-else")
    assert _methods(h.feed(trunk_request("BYE", invite, other, 4, "z9hG4bKb"))) == ["481"]
    assert h.call.state is CallState.CONFIRMED


@pytest.mark.parametrize(
    ("code", "challenge", "credentials"),
    [
        (401, "WWW-Authenticate", "Authorization"),
        (407, "Proxy-Authenticate", "Proxy-Authorization"),
    ],
)
def test_challenge_answered_once(code: int, challenge: str, credentials: str) -> None:
    h = Harness(make_call())
    invite = h.start()
    value = 'Digest realm="trunk.test", nonce="n0nce", algorithm=MD5, qop="auth"'
    sent = h.feed(respond(invite, code, "Unauthorized", headers=[(challenge, value)]))
    assert _methods(sent) == ["ACK", "INVITE"]
    ack, invite2 = sent
    assert isinstance(ack, Request) and isinstance(invite2, Request)
    assert ack.headers["CSeq"] == "1 ACK"
    assert invite2.headers["CSeq"] == "2 INVITE"
    assert invite2.call_id == invite.call_id
    assert invite2.headers["From"] == invite.headers["From"]
    assert top_branch(invite2) != top_branch(invite)
    _check_digest(invite2, credentials, "trunk.test", "n0nce")
    assert PASSWORD not in bytes(invite2).decode()

    # Refused again without stale=true: the call ends.
    h.feed(respond(invite2, code, "Unauthorized", headers=[(challenge, value)]))
    assert h.events == [Ended(errors.REJECTED, code, "Authentication failed")]


def test_stale_challenge_answered_again_then_answered() -> None:
    h = Harness(make_call())
    invite = h.start()
    first = 'Digest realm="trunk.test", nonce="a"'
    invite2 = h.feed(respond(invite, 401, headers=[("WWW-Authenticate", first)]))[1]
    stale = 'Digest realm="trunk.test", nonce="b", stale=true'
    sent = h.feed(respond(invite2, 401, headers=[("WWW-Authenticate", stale)]))  # type: ignore[arg-type]
    invite3 = sent[1]
    assert isinstance(invite3, Request) and invite3.headers["CSeq"] == "3 INVITE"
    _check_digest(invite3, "Authorization", "trunk.test", "b")
    ok = respond(invite3, 200, body=ANSWER)
    (ack,) = h.feed(ok)
    assert isinstance(ack, Request)
    assert ack.headers["CSeq"] == "3 ACK"
    assert ack.headers.get("Authorization")
    assert h.events == [Answered(ANSWER)]


def test_busy_is_acked_and_ends() -> None:
    h = Harness(make_call())
    invite = h.start()
    sent = h.feed(respond(invite, 486, "Busy Here"))
    assert _methods(sent) == ["ACK"]
    assert h.events == [Ended(errors.REJECTED, 486, "Busy Here")]
    # Retransmitted 486: ACK again (Timer D), then the call is finished.
    assert _methods(h.feed(respond(invite, 486, "Busy Here"))) == ["ACK"]
    assert not h.call.finished
    h.advance(40.0)
    assert h.call.finished


def test_cancel_after_ringing() -> None:
    h = Harness(make_call())
    invite = h.start()
    h.feed(respond(invite, 180))
    h.call.hangup(errors.NORMAL, h.now)
    (cancel,) = h.pump()
    assert isinstance(cancel, Request) and cancel.method == "CANCEL"
    assert cancel.headers["CSeq"] == "1 CANCEL"
    assert cancel.headers["Via"] == invite.headers["Via"]
    assert cancel.headers["To"] == invite.headers["To"]
    assert h.feed(respond(cancel, 200)) == []
    assert _methods(h.feed(respond(invite, 487, "Request Terminated"))) == ["ACK"]
    assert h.events[-1] == Ended(errors.CANCELLED, 487, "Request Terminated")


def test_hangup_before_provisional_ends_now_and_cancels_later() -> None:
    h = Harness(make_call())
    invite = h.start()
    h.call.hangup(errors.NORMAL, h.now)
    assert h.pump() == []
    # The caller is told at once; the CANCEL waits for a provisional (RFC 3261 9.1).
    assert h.events == [Ended(errors.CANCELLED, None, "Cancelled")]
    assert not h.call.finished
    assert _methods(h.feed(respond(invite, 100, "Trying"))) == ["CANCEL"]
    assert len(h.events) == 1


def test_late_2xx_after_silent_timeout_gets_ack_and_bye() -> None:
    h = Harness(make_call(invite_timeout=3.0))
    invite = h.start()
    h.advance(3.0)
    assert h.events == [Ended(errors.TIMEOUT, None, "No answer")]
    # The trunk answers after all: no dialog may be left open and billing.
    assert _methods(h.feed(respond(invite, 200, body=ANSWER))) == ["ACK", "BYE"]
    bye = h.sent[-1]
    assert isinstance(bye, Request)
    h.feed(respond(bye, 200))
    assert len(h.events) == 1


def test_hangup_before_provisional_gives_up_on_timer_b() -> None:
    h = Harness(make_call())
    h.start()
    h.call.hangup(errors.BROWSER_GONE, h.now)
    sent = h.advance(40.0)
    assert set(_methods(sent)) == {"INVITE"}
    assert h.events == [Ended(errors.BROWSER_GONE, None, "Cancelled")]


def test_2xx_crossing_cancel_is_acked_then_byed() -> None:
    h = Harness(make_call())
    invite = h.start()
    h.feed(respond(invite, 180))
    h.call.hangup(errors.NORMAL, h.now)
    assert _methods(h.pump()) == ["CANCEL"]
    assert _methods(h.feed(respond(invite, 200, body=ANSWER))) == ["ACK", "BYE"]
    assert h.events == [Progress(180)]
    bye = h.sent[-1]
    assert isinstance(bye, Request)
    h.feed(respond(bye, 200))
    assert h.events[-1].cause == errors.CANCELLED  # type: ignore[union-attr]


def test_timer_b_without_any_response() -> None:
    h = Harness(make_call(invite_timeout=120.0))
    h.start()
    sent = h.advance(32.0)
    assert len(sent) == 6  # retransmissions at 0.5 ... 31.5
    assert h.events == [Ended(errors.TIMEOUT, 408, "No answer")]


def test_invite_timeout_cancels() -> None:
    h = Harness(make_call(invite_timeout=20.0))
    invite = h.start()
    h.feed(respond(invite, 180))
    sent = h.advance(20.0)
    assert _methods(sent) == ["CANCEL"]
    h.feed(respond(sent[0], 200))  # type: ignore[arg-type]
    h.feed(respond(invite, 487, "Request Terminated"))
    assert h.events[-1] == Ended(errors.TIMEOUT, None, "No answer")


def test_cancel_never_answered_still_ends() -> None:
    h = Harness(make_call(invite_timeout=5.0))
    invite = h.start()
    h.feed(respond(invite, 183, "Session Progress"))
    h.advance(5.0 + 32.0)
    assert h.events[-1] == Ended(errors.TIMEOUT, None, "No answer")


def test_bye_timeout_still_ends() -> None:
    h = Harness(make_call())
    _answered(h)
    h.call.hangup(errors.MEDIA_FAILED, h.now)
    h.pump()
    h.advance(h.now + 33.0)
    assert h.events[-1] == Ended(errors.MEDIA_FAILED, None, "Hung up")


def test_tcp_sends_no_retransmission() -> None:
    h = Harness(make_call(transport="tcp", contact="<sip:bridge@192.0.2.1:5070;transport=tcp>"))
    invite = h.start()
    assert invite.via[0].transport == "TCP"
    assert h.advance(31.9) == []
    h.advance(32.0)
    assert h.events == [Ended(errors.TIMEOUT, 408, "No answer")]


def test_every_state_has_a_timer() -> None:
    h = Harness(make_call())
    invite = h.start()
    assert h.call.get_timer() is not None
    h.feed(respond(invite, 180))
    assert h.call.get_timer() is not None  # INVITE_TIMEOUT
    h.call.hangup(errors.NORMAL, h.now)
    h.pump()
    assert h.call.get_timer() is not None  # CANCEL window


def test_2xx_from_another_fork_after_answer_is_acked_then_byed() -> None:
    h = Harness(make_call())
    invite, _ = _answered(h)
    events = list(h.events)
    fork = respond(invite, 200, to_tag="fork-tag", body=ANSWER)
    sent = h.feed(fork)
    assert _methods(sent) == ["ACK", "BYE"]
    ack, bye = sent
    assert isinstance(ack, Request) and isinstance(bye, Request)
    assert ack.headers["CSeq"] == "1 ACK"
    assert tag_of(ack.headers["To"]) == tag_of(bye.headers["To"]) == "fork-tag"
    assert bye.headers["CSeq"] == "2 BYE"
    # The call goes on with its first dialog; nothing is reported.
    assert h.events == events
    assert h.call.state is CallState.CONFIRMED
    # A retransmission of the fork's 2xx is ACKed again, not BYEd again.
    assert _methods(h.feed(fork)) == ["ACK"]
    h.feed(respond(bye, 200, to_tag=None))
    assert h.events == events and h.call.state is CallState.CONFIRMED
    # Our own hang-up still goes to the first dialog.
    h.call.hangup(errors.NORMAL, h.now)
    (own_bye,) = h.pump()
    assert isinstance(own_bye, Request) and tag_of(own_bye.headers["To"]) == "trunk-tag"


def test_2xx_from_another_fork_while_cancelling_is_acked_then_byed() -> None:
    h = Harness(make_call())
    invite = h.start()
    h.feed(respond(invite, 180))
    h.call.hangup(errors.NORMAL, h.now)
    assert _methods(h.pump()) == ["CANCEL"]
    assert _methods(h.feed(respond(invite, 200, body=ANSWER))) == ["ACK", "BYE"]
    first_bye = h.sent[-1]
    sent = h.feed(respond(invite, 200, to_tag="fork-tag", body=ANSWER))
    assert _methods(sent) == ["ACK", "BYE"]
    fork_bye = sent[1]
    assert isinstance(first_bye, Request) and isinstance(fork_bye, Request)
    assert tag_of(fork_bye.headers["To"]) == "fork-tag"
    assert h.events == [Progress(180)]
    h.feed(respond(fork_bye, 200, to_tag=None))
    assert h.events == [Progress(180)]
    h.feed(respond(first_bye, 200, to_tag=None))
    assert h.events == [Progress(180), Ended(errors.CANCELLED, None, "Cancelled")]
    h.advance(h.now + 64.0)
    assert h.call.finished
