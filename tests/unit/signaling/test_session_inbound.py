"""BrowserSession with calls from the trunk: listen, accept, reject, on a fake clock."""

from __future__ import annotations

import json

from proto import errors, subjects
from proto.events import (
    AcceptRequested,
    AnswerRequested,
    CallAnswered,
    CallClaimed,
    CallEnded,
    CallRequested,
    HangupRequested,
    MediaPrepared,
)
from services.signaling.actions import Admit, Deliver, Publish, Subscribe
from services.signaling.caller import Caller
from services.signaling.ringing import Forward, RingAction
from services.signaling.session import BrowserSession
from services.signaling.states import State
from services.signaling.switchboard import Switchboard
from services.signaling.tokens import Claims

from .harness import OFFER_SDP, SETTINGS, T0, Harness, error_codes, published, sent
from .test_switchboard import arrival

SIGNALING = subjects.call_events("in1", "signaling")
SIPAGENT = subjects.call_events("in1", "sipagent")
MEDIA = subjects.call_events("in1", "media")


def listening(board: Switchboard, caller: Caller | None = None, socket: str = "s1") -> Harness:
    h = Harness(caller=caller)
    h.session = BrowserSession(SETTINGS, caller=caller, desk=board, socket_id=socket)
    return h


def rung(user: str = "alice") -> tuple[Switchboard, Harness]:
    board = Switchboard("sig-1")
    h = listening(board)
    assert sent(h.text({"type": "listen", "user": user})) == [{"type": "listening", "user": user}]
    board.receive(arrival((user,)), T0)
    for action in board.pop_actions():
        if isinstance(action, Deliver):
            h.session.deliver(action.message)
    h.pull()
    return board, h


def accept(h: Harness) -> None:
    h.text({"type": "accept", "call_id": "in1", "sdp": OFFER_SDP})


def test_accepted_call_goes_through_media_to_connected() -> None:
    board, h = rung()
    assert [m["type"] for m in sent(h.actions)] == ["listening", "incoming"]
    actions = h.text({"type": "accept", "call_id": "in1", "sdp": OFFER_SDP}, T0 + 1)
    assert Subscribe(SIPAGENT) in actions
    assert published(actions) == [
        (SIGNALING, AcceptRequested(call_id="in1", signaling_id="sig-1", identity="alice"))
    ]
    assert h.state() == State.ACCEPTING
    assert h.session.get_timer() == T0 + 1 + 5.0

    actions = h.event(CallClaimed(call_id="in1", signaling_id="sig-1"), T0 + 2)
    assert published(actions) == [
        (
            subjects.media_work(),
            CallRequested(
                call_id="in1",
                offer_sdp=OFFER_SDP,
                destination="+15557654321",
                signaling_id="sig-1",
                trunk="carrier",
                direction="inbound",
                trunk_offer_sdp="v=0 trunk",
            ),
        )
    ]
    assert Subscribe(MEDIA) in actions and Subscribe(SIPAGENT) not in actions
    assert board.ringing_calls == 0

    prepared = MediaPrepared(
        call_id="in1",
        media_id="media-1",
        answer_sdp="v=0 browser",
        trunk_offer_sdp="",
        trunk_answer_sdp="v=0 for trunk",
    )
    actions = h.event(prepared, T0 + 3)
    assert sent(actions) == [{"type": "answer", "sdp": "v=0 browser"}]
    assert published(actions) == [
        (
            SIGNALING,
            AnswerRequested(call_id="in1", media_id="media-1", answer_sdp="v=0 for trunk"),
        )
    ]
    assert h.state() == State.ANSWERING
    assert h.session.get_timer() == T0 + 3 + 10.0 + 32.0

    actions = h.event(CallAnswered(call_id="in1", answer_sdp="v=0 trunk"), T0 + 4)
    assert sent(actions) == [{"type": "connected"}]
    assert h.state() == State.CONNECTED
    # In-call messages work as for an outbound call.
    assert error_codes(h.text({"type": "dtmf", "digits": "1"})) == []
    h.text({"type": "hangup"}, T0 + 10)
    assert h.state() == State.HANGING_UP
    actions = h.event(CallEnded(call_id="in1", cause=errors.NORMAL), T0 + 11)
    assert sent(actions)[-1] == {
        "type": "ended",
        "call_id": "in1",
        "status": None,
        "reason": "",
        "cause": "normal",
    }
    assert h.audits[-1]["direction"] == "inbound"
    assert h.audits[-1]["outcome"] == "answered"
    assert h.audits[-1]["caller"] == "+15557654321"


def test_claimed_by_another_instance() -> None:
    _board, h = rung()
    accept(h)
    actions = h.event(CallClaimed(call_id="in1", signaling_id="sig-2"), T0 + 1)
    assert sent(actions)[-1]["cause"] == "answered_elsewhere"
    assert h.state() == State.IDLE


def test_no_claim_in_time_ends_with_setup_failed() -> None:
    board, h = rung()
    accept(h)
    actions = h.timer(T0 + 5.0)
    assert sent(actions)[-1]["cause"] == "setup_failed"
    assert h.state() == State.IDLE
    assert board.ringing_calls == 1  # it waits for a late claim, to hand it back
    board.handle_timer(T0 + 5.0)
    events = [a.event for a in board.pop_actions() if isinstance(a, Publish)]
    assert [type(e).__name__ for e in events] == ["RingingStopped"]


def test_cancel_while_accepting() -> None:
    _board, h = rung()
    accept(h)
    ended = CallEnded(call_id="in1", cause=errors.CANCELLED, status=487, reason="Cancelled")
    actions = h.event(ended, T0 + 1)
    assert sent(actions)[-1]["cause"] == "cancelled"
    assert h.state() == State.IDLE


def test_listen_rules_with_tokens() -> None:
    board = Switchboard("sig-1")
    claims = Claims(sub="alice", expires_at=T0 + 3600)
    h = listening(board, Caller(claims=claims))
    assert sent(h.text({"type": "listen"})) == [{"type": "listening", "user": "alice"}]
    assert sent(h.text({"type": "listen", "user": "alice"}))[0]["user"] == "alice"
    assert error_codes(h.text({"type": "listen", "user": "bob"})) == ["forbidden"]


def test_listen_rules_without_tokens() -> None:
    h = listening(Switchboard("sig-1"))
    assert error_codes(h.text({"type": "listen"})) == ["bad_user"]
    assert error_codes(h.text({"type": "listen", "user": "a b"})) == ["bad_user"]
    assert error_codes(h.text({"type": "listen", "user": "x" * 65})) == ["bad_user"]
    assert sent(h.text({"type": "unlisten"})) == [{"type": "listening", "user": None}]


def test_bad_accepts_and_rejects() -> None:
    board, h = rung()
    assert error_codes(h.text({"type": "accept", "call_id": "nope", "sdp": "v=0"})) == ["no_call"]
    assert error_codes(h.text({"type": "accept", "call_id": "in1"})) == ["bad_message"]
    assert error_codes(h.text({"type": "reject", "call_id": "a.b"})) == ["no_call"]
    assert error_codes(h.text({"type": "reject"})) == ["bad_message"]
    h.offer()
    assert h.state() == State.WAITING_MEDIA  # a listening socket still calls out
    assert error_codes(h.text({"type": "accept", "call_id": "in1", "sdp": "v=0"})) == [
        "call_in_progress"
    ]
    assert h.text({"type": "reject", "call_id": "in1"}) == []
    assert board.ringing_calls == 0  # the only browser declined: RingingStopped went out
    assert board.ringing("s1", "in1") is None


def test_limits_refuse_an_accept_and_the_call_keeps_ringing() -> None:
    board, h = rung()
    h.refusal = errors.TOO_MANY_CALLS
    assert error_codes(h.text({"type": "accept", "call_id": "in1", "sdp": OFFER_SDP})) == [
        "too_many_calls"
    ]
    assert h.state() == State.IDLE
    assert board.ringing("s1", "in1") is not None


def test_socket_closing_after_a_claim_hangs_up() -> None:
    _board, h = rung()
    accept(h)
    h.event(CallClaimed(call_id="in1", signaling_id="sig-1"), T0 + 1)
    h.session.socket_closed(T0 + 2)
    assert published(h.pull())[-1] == (
        SIGNALING,
        HangupRequested(call_id="in1", cause="browser_gone"),
    )


def test_media_failure_of_an_accepted_call_hangs_it_up() -> None:
    _board, h = rung()
    accept(h)
    h.event(CallClaimed(call_id="in1", signaling_id="sig-1"), T0 + 1)
    actions = h.timer(T0 + 1 + 10.0)
    assert error_codes(actions) == ["no_media_worker"]
    assert published(actions) == [(SIGNALING, HangupRequested(call_id="in1", cause="setup_failed"))]


def route(board: Switchboard, *harnesses: Harness) -> list[RingAction]:
    """Carry the switchboard's messages and forwarded events to the sessions, as the link does."""
    sessions = {h.session.socket_id: h for h in harnesses}
    actions = board.pop_actions()
    rest: list[RingAction] = []
    for action in actions:
        if isinstance(action, Deliver) and action.socket in sessions:
            sessions[action.socket].session.deliver(action.message)
            sessions[action.socket].pull()
        elif isinstance(action, Forward) and action.socket in sessions:
            h = sessions[action.socket]
            h.session.handle_event(action.event, h.now)
            h.pull()
        elif not isinstance(action, Deliver | Forward):
            rest.append(action)
    return rest


CANCELLED = CallEnded(call_id="in1", cause=errors.CANCELLED, status=487, reason="Cancelled")


def test_cancel_that_crosses_the_accept_ends_it_cancelled_at_once() -> None:
    board, h = rung()
    accept(h)
    assert h.state() == State.ACCEPTING
    # The trunk's CANCEL was published before the session's subscription took
    # hold: only the ring hears it.
    board.receive(CANCELLED, T0 + 1)
    route(board, h)
    assert sent(h.actions)[-1] == {
        "type": "ended",
        "call_id": "in1",
        "status": 487,
        "reason": "Cancelled",
        "cause": "cancelled",
    }
    assert h.state() == State.IDLE
    assert h.session.get_timer() is None
    assert h.audits[-1]["cause"] == "cancelled"
    assert board.ringing_calls == 0
    # The same CallEnded on the session's own subscription changes nothing.
    assert h.event(CANCELLED, T0 + 1) == []
    assert [m["type"] for m in sent(h.actions)].count("ended") == 1


def test_cancel_heard_on_both_subscriptions_is_told_once() -> None:
    board, h = rung()
    accept(h)
    h.event(CANCELLED, T0 + 1)  # the session's own subscription first
    board.receive(CANCELLED, T0 + 1)
    route(board, h)
    endings = [m for m in sent(h.actions) if m["type"] == "ended"]
    assert [(m["call_id"], m["cause"]) for m in endings] == [("in1", "cancelled")]


def test_cancel_while_the_limits_are_asked_ends_the_ring_cancelled() -> None:
    board, h = rung()
    h.session.receive_text(json.dumps({"type": "accept", "call_id": "in1", "sdp": OFFER_SDP}), T0)
    admit = [a for a in h.session.pop_actions() if isinstance(a, Admit)]
    assert h.state() == State.ADMITTING
    board.receive(CANCELLED, T0 + 1)
    route(board, h)
    h.session.admitted(admit[0].call_id, None, T0 + 2)  # the limits answer late
    h.pull()
    endings = [m for m in sent(h.actions) if m["type"] == "ended"]
    assert [(m["call_id"], m["cause"]) for m in endings] == [("in1", "cancelled")]
    assert published(h.actions) == []  # no AcceptRequested for a call that is gone
    assert h.state() == State.IDLE


def test_claim_heard_only_by_the_ring_still_sets_the_call_up() -> None:
    board, h = rung()
    accept(h)
    board.receive(CallClaimed(call_id="in1", signaling_id="sig-1"), T0 + 1)
    route(board, h)
    assert h.state() == State.WAITING_MEDIA
    assert [type(e).__name__ for _, e in published(h.actions)][-1] == "CallRequested"


def test_accepter_leaving_lets_the_others_hear_how_it_ended() -> None:
    board = Switchboard("sig-1")
    a, b = listening(board, socket="s1"), listening(board, socket="s2")
    a.text({"type": "listen", "user": "alice"})
    b.text({"type": "listen", "user": "alice"})
    board.receive(arrival(("alice",)), T0)
    route(board, a, b)
    accept(a)
    route(board, a, b)
    a.session.socket_closed(T0 + 1)
    a.pull()
    assert route(board, a, b) == []
    assert [m["type"] for m in sent(b.actions)] == ["listening", "incoming"]  # b rings on
    board.receive(CallClaimed(call_id="in1", signaling_id="sig-1"), T0 + 2)
    rest = route(board, a, b)
    assert [action.event for action in rest if isinstance(action, Publish)] == [
        HangupRequested(call_id="in1", cause="browser_gone")
    ]
    assert sent(b.actions)[-1] == {
        "type": "ended",
        "call_id": "in1",
        "status": None,
        "reason": "Call set-up failed",
        "cause": "setup_failed",
    }
