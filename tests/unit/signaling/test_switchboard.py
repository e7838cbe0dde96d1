"""Switchboard and Ring: who rings, who is told what, on a fake clock."""

from __future__ import annotations

from proto import errors, subjects
from proto.events import (
    AnyEvent,
    CallArrived,
    CallClaimed,
    CallEnded,
    HangupRequested,
    RingingStarted,
    RingingStopped,
)
from services.signaling.actions import Deliver, Publish, Subscribe, Unsubscribe
from services.signaling.ringing import Forward, RingAction
from services.signaling.switchboard import Switchboard

T0 = 1000.0
SIGNALING = subjects.call_events("in1", "signaling")
SIPAGENT = subjects.call_events("in1", "sipagent")


def arrival(users: tuple[str, ...] = ("alice",), ring_timeout: float = 30.0) -> CallArrived:
    return CallArrived(
        call_id="in1",
        sipagent_id="sip-1",
        caller="+15557654321",
        caller_name="Ada",
        called="+15550001111",
        trunk="carrier",
        users=users,
        offer_sdp="v=0 trunk",
        ring_timeout=ring_timeout,
    )


def delivered(actions: list[RingAction]) -> list[tuple[str, dict[str, object]]]:
    return [(a.socket, a.message) for a in actions if isinstance(a, Deliver)]


def published(actions: list[RingAction]) -> list[AnyEvent]:
    return [a.event for a in actions if isinstance(a, Publish)]


def forwarded(actions: list[RingAction]) -> list[tuple[str, AnyEvent]]:
    return [(a.socket, a.event) for a in actions if isinstance(a, Forward)]


def ringing_two() -> Switchboard:
    board = Switchboard("sig-1")
    board.listen("s1", "alice", T0)
    board.listen("s2", "alice", T0)
    board.pop_actions()
    board.receive(arrival(), T0)
    board.pop_actions()
    return board


def test_a_user_subject_is_subscribed_while_someone_listens_as_that_user() -> None:
    board = Switchboard("sig-1")
    board.listen("s1", "alice", T0)
    board.listen("s2", "alice", T0)
    assert board.pop_actions() == [Subscribe(subjects.inbound_calls("alice"))]
    board.listen("s2", "bob", T0)  # tokens off: a page may listen as another user
    assert board.pop_actions() == [Subscribe(subjects.inbound_calls("bob"))]
    board.unlisten("s1", T0)
    assert board.pop_actions() == [Unsubscribe(subjects.inbound_calls("alice"))]
    board.socket_closed("s2", T0)
    assert board.pop_actions() == [Unsubscribe(subjects.inbound_calls("bob"))]


def test_an_arrival_rings_every_listener_once_and_says_so() -> None:
    board = Switchboard("sig-1")
    board.listen("s1", "alice", T0)
    board.listen("s2", "bob", T0)
    board.listen("s3", "carol", T0)
    board.pop_actions()
    board.receive(arrival(("alice", "bob")), T0)
    actions = board.pop_actions()
    assert actions[0] == Subscribe(SIPAGENT)
    incoming = {
        "type": "incoming",
        "call_id": "in1",
        "from": "+15557654321",
        "from_name": "Ada",
        "to": "+15550001111",
    }
    assert delivered(actions) == [("s1", incoming), ("s2", incoming)]
    assert published(actions) == [RingingStarted(call_id="in1", signaling_id="sig-1", listeners=2)]
    # The same call on bob's subject rings nobody again.
    board.receive(arrival(("alice", "bob")), T0)
    assert board.pop_actions() == []


def test_nobody_listening_here_rings_nothing() -> None:
    board = Switchboard("sig-1")
    board.receive(arrival(), T0)
    assert board.pop_actions() == []
    assert board.get_timer() is None


def test_all_decline_then_ringing_stopped_declined() -> None:
    board = ringing_two()
    assert board.reject("s1", "in1", T0 + 1)
    actions = board.pop_actions()
    assert delivered(actions) == [
        (
            "s1",
            {
                "type": "ended",
                "call_id": "in1",
                "status": None,
                "reason": "Declined",
                "cause": "rejected",
            },
        )
    ]
    assert published(actions) == []
    assert not board.reject("s1", "in1", T0 + 1)  # once
    board.socket_closed("s2", T0 + 2)
    actions = board.pop_actions()
    assert published(actions) == [
        RingingStopped(call_id="in1", signaling_id="sig-1", declined=True)
    ]
    assert Unsubscribe(SIPAGENT) in actions
    assert board.ringing("s2", "in1") is None


def test_all_leave_without_declining() -> None:
    board = ringing_two()
    board.socket_closed("s1", T0)
    board.socket_closed("s2", T0)
    assert published(board.pop_actions()) == [
        RingingStopped(call_id="in1", signaling_id="sig-1", declined=False)
    ]


def test_claim_for_us_ends_the_others_answered_elsewhere() -> None:
    board = ringing_two()
    assert board.accept("s1", "in1", T0 + 1)
    assert board.pop_actions() == []  # the accepting session publishes AcceptRequested
    assert board.get_timer() == T0 + 1 + 5.0
    board.claimed("s1", "in1", T0 + 2)
    actions = board.pop_actions()
    assert [(s, m["cause"]) for s, m in delivered(actions)] == [("s2", "answered_elsewhere")]
    assert actions[-1] == Unsubscribe(SIPAGENT)
    assert board.ringing_calls == 0


def test_a_second_accept_here_loses_at_once() -> None:
    board = ringing_two()
    assert board.accept("s1", "in1", T0)
    assert not board.accept("s2", "in1", T0)
    assert [(s, m["cause"]) for s, m in delivered(board.pop_actions())] == [
        ("s2", "answered_elsewhere")
    ]


def test_claim_for_another_instance() -> None:
    board = ringing_two()
    board.receive(CallClaimed(call_id="in1", signaling_id="sig-2"), T0 + 1)
    actions = board.pop_actions()
    assert sorted(s for s, m in delivered(actions) if m["cause"] == "answered_elsewhere") == [
        "s1",
        "s2",
    ]
    assert published(actions) == []


def test_cancel_from_the_trunk_ends_every_ring_with_its_cause() -> None:
    board = ringing_two()
    ended = CallEnded(call_id="in1", cause=errors.CANCELLED, status=487, reason="Cancelled")
    board.receive(ended, T0 + 1)
    messages = delivered(board.pop_actions())
    assert [(s, m["cause"], m["status"]) for s, m in messages] == [
        ("s1", "cancelled", 487),
        ("s2", "cancelled", 487),
    ]


def test_a_silent_sip_agent_still_ends_the_ring() -> None:
    board = Switchboard("sig-1")
    board.listen("s1", "alice", T0)
    board.pop_actions()
    board.receive(arrival(ring_timeout=30.0), T0)
    board.pop_actions()
    assert board.get_timer() == T0 + 35.0
    board.handle_timer(T0 + 34.9)
    assert board.pop_actions() == []
    board.handle_timer(T0 + 35.0)
    actions = board.pop_actions()
    assert [m["cause"] for _, m in delivered(actions)] == ["no_answer"]
    assert published(actions) == [
        RingingStopped(call_id="in1", signaling_id="sig-1", declined=False)
    ]
    assert board.get_timer() is None


def test_no_claim_after_accept_stops_the_ring() -> None:
    board = ringing_two()
    board.accept("s1", "in1", T0)
    board.handle_timer(T0 + 5.0)
    actions = board.pop_actions()
    assert [(s, m["cause"]) for s, m in delivered(actions)] == [("s2", "setup_failed")]
    assert published(actions) == [
        RingingStopped(call_id="in1", signaling_id="sig-1", declined=False)
    ]
    # A claim that comes after all is handed back.
    board.withdraw("s1", "in1", T0 + 5.0)
    board.receive(CallClaimed(call_id="in1", signaling_id="sig-1"), T0 + 6)
    assert published(board.pop_actions()) == [HangupRequested(call_id="in1", cause="setup_failed")]
    assert board.ringing_calls == 0


def test_claim_for_a_browser_that_left_is_hung_up_and_nobody_answered() -> None:
    board = ringing_two()
    board.accept("s1", "in1", T0)
    board.socket_closed("s1", T0 + 1)
    assert board.pop_actions() == []  # s2 still rings, until the claim says how it ended
    assert board.ringing("s2", "in1") is not None
    board.receive(CallClaimed(call_id="in1", signaling_id="sig-1"), T0 + 2)
    actions = board.pop_actions()
    assert published(actions) == [HangupRequested(call_id="in1", cause="browser_gone")]
    assert [(s, m["cause"]) for s, m in delivered(actions)] == [("s2", "setup_failed")]
    assert forwarded(actions) == []
    assert board.ringing_calls == 0


def test_accepter_left_then_another_instance_got_the_call() -> None:
    board = ringing_two()
    board.accept("s1", "in1", T0)
    board.withdraw("s1", "in1", T0 + 1)
    board.receive(CallClaimed(call_id="in1", signaling_id="sig-2"), T0 + 2)
    actions = board.pop_actions()
    assert published(actions) == []
    assert [(s, m["cause"]) for s, m in delivered(actions)] == [("s2", "answered_elsewhere")]


def test_accepter_left_then_the_trunk_cancelled() -> None:
    board = ringing_two()
    board.accept("s1", "in1", T0)
    board.withdraw("s1", "in1", T0 + 1)
    ended = CallEnded(call_id="in1", cause=errors.CANCELLED, status=487, reason="Cancelled")
    board.receive(ended, T0 + 2)
    actions = board.pop_actions()
    assert [(s, m["cause"]) for s, m in delivered(actions)] == [("s2", "cancelled")]
    assert published(actions) == []


def test_an_accept_after_the_accepter_left_fails_at_once() -> None:
    board = ringing_two()
    board.accept("s1", "in1", T0)
    board.withdraw("s1", "in1", T0 + 1)
    assert not board.accept("s2", "in1", T0 + 1)
    assert [(s, m["cause"]) for s, m in delivered(board.pop_actions())] == [("s2", "setup_failed")]


def test_accepter_left_and_no_claim_came() -> None:
    board = ringing_two()
    board.accept("s1", "in1", T0)
    board.withdraw("s1", "in1", T0 + 1)
    board.handle_timer(T0 + 5.0)
    actions = board.pop_actions()
    assert [(s, m["cause"]) for s, m in delivered(actions)] == [("s2", "setup_failed")]
    assert published(actions) == [
        RingingStopped(call_id="in1", signaling_id="sig-1", declined=False)
    ]


def test_cancel_while_claiming_is_handed_to_the_accepting_socket() -> None:
    board = ringing_two()
    assert board.accept("s1", "in1", T0)
    ended = CallEnded(call_id="in1", cause=errors.CANCELLED, status=487, reason="Cancelled")
    board.receive(ended, T0 + 1)
    actions = board.pop_actions()
    assert forwarded(actions) == [("s1", ended)]
    assert [(s, m["cause"]) for s, m in delivered(actions)] == [("s2", "cancelled")]
    assert actions[-1] == Unsubscribe(SIPAGENT)


def test_claim_is_handed_to_the_accepting_socket() -> None:
    board = ringing_two()
    assert board.accept("s1", "in1", T0)
    claimed = CallClaimed(call_id="in1", signaling_id="sig-1")
    board.receive(claimed, T0 + 1)
    actions = board.pop_actions()
    assert forwarded(actions) == [("s1", claimed)]
    assert published(actions) == []  # not hung up: its browser is there
    assert [(s, m["cause"]) for s, m in delivered(actions)] == [("s2", "answered_elsewhere")]


def test_nothing_is_handed_on_before_an_accept_or_after_the_ring() -> None:
    board = ringing_two()
    ended = CallEnded(call_id="in1", cause=errors.CANCELLED, status=487)
    board.receive(ended, T0 + 1)
    assert forwarded(board.pop_actions()) == []
    board.receive(ended, T0 + 2)  # the ring is over
    assert board.pop_actions() == []


def test_every_ended_of_a_ring_names_its_call() -> None:
    outcomes = []
    board = ringing_two()
    board.reject("s1", "in1", T0)
    board.handle_timer(T0 + 60)
    outcomes.append(board.pop_actions())
    board = ringing_two()
    board.accept("s1", "in1", T0)
    board.handle_timer(T0 + 5)
    outcomes.append(board.pop_actions())
    board = ringing_two()
    board.accept("s1", "in1", T0)
    board.withdraw("s1", "in1", T0)
    board.receive(CallClaimed(call_id="in1", signaling_id="sig-1"), T0 + 1)
    outcomes.append(board.pop_actions())
    board = ringing_two()
    board.receive(CallEnded(call_id="in1", cause=errors.NO_ANSWER, status=480), T0 + 1)
    outcomes.append(board.pop_actions())
    messages = [m for actions in outcomes for _, m in delivered(actions)]
    assert len(messages) == 6
    assert all(m["type"] == "ended" and m["call_id"] == "in1" for m in messages)


def test_draining_rings_nobody() -> None:
    board = Switchboard("sig-1")
    board.listen("s1", "alice", T0)
    board.pop_actions()
    board.drain()
    board.receive(arrival(), T0)
    assert board.pop_actions() == []
