"""The ring of one inbound call, on a fake clock: what the trunk hears and the bus is told."""

from __future__ import annotations

from proto import errors, subjects
from proto.events import (
    AcceptRequested,
    AnswerRequested,
    CallClaimed,
    CallEnded,
    HangupRequested,
    MediaFailed,
    RingingStarted,
    RingingStopped,
)
from services.sipagent.events import Ended, Progress
from services.sipagent.ringing import (
    ANSWER_WAIT,
    LISTEN_WAIT,
    Action,
    Answer,
    Publish,
    Reject,
    Ring,
    Ringing,
    answer_wait_for,
    late_claim,
)

CALL = "c1"
SUBJECT = subjects.call_events(CALL, "sipagent")


def actions(core: Ringing) -> list[Action]:
    out = []
    while (action := core.next_action()) is not None:
        out.append(action)
    return out


def run_until(core: Ringing, until: float) -> None:
    """Fire the core's timers up to ``until``, as the adapter would."""
    while (when := core.get_timer()) is not None and when <= until:
        core.handle_timer(when)


def started(instance: str, listeners: int = 1) -> RingingStarted:
    return RingingStarted(call_id=CALL, signaling_id=instance, listeners=listeners)


def stopped(instance: str, declined: bool) -> RingingStopped:
    return RingingStopped(call_id=CALL, signaling_id=instance, declined=declined)


def accept(instance: str) -> AcceptRequested:
    return AcceptRequested(call_id=CALL, signaling_id=instance, identity="alice")


def core(ring_timeout: float = 30.0, reject_status: int = 486) -> Ringing:
    return Ringing(CALL, 100.0, ring_timeout=ring_timeout, reject_status=reject_status)


def test_nobody_listening_gets_480_after_the_listen_wait() -> None:
    ring = core()
    assert ring.get_timer() == 100.0 + LISTEN_WAIT
    run_until(ring, 100.0 + LISTEN_WAIT - 0.01)
    assert actions(ring) == []
    run_until(ring, 100.0 + LISTEN_WAIT)
    out = actions(ring)
    assert out[0] == Reject(480, "Temporarily Unavailable")
    assert isinstance(out[1], Publish) and out[1].subject == SUBJECT
    assert out[1].event == CallEnded(
        call_id=CALL, cause=errors.NOT_LISTENING, status=480, reason="Temporarily Unavailable"
    )
    assert ring.finished and ring.get_timer() is None


def test_first_ringing_started_sends_180_once() -> None:
    ring = core()
    ring.receive(started("s1"), 100.5)
    ring.receive(started("s2"), 100.6)
    assert actions(ring) == [Ring()]
    run_until(ring, 100.0 + LISTEN_WAIT + 1)
    assert actions(ring) == []  # someone rings: the listen wait is over


def test_every_listener_declining_gets_486() -> None:
    ring = core()
    ring.receive(started("s1"), 100.1)
    ring.receive(started("s2"), 100.2)
    actions(ring)
    ring.receive(stopped("s1", declined=True), 103.0)
    assert actions(ring) == []  # s2 still rings
    ring.receive(stopped("s2", declined=False), 104.0)
    out = actions(ring)
    assert out[0] == Reject(486, "Busy Here")
    assert isinstance(out[1], Publish)
    assert out[1].event == CallEnded(
        call_id=CALL, cause=errors.REJECTED, status=486, reason="Busy Here"
    )


def test_the_entry_may_reject_with_603() -> None:
    ring = core(reject_status=603)
    ring.receive(started("s1"), 100.1)
    ring.receive(stopped("s1", declined=True), 103.0)
    assert [a for a in actions(ring) if isinstance(a, Reject)] == [Reject(603, "Decline")]


def test_every_listener_gone_gets_480_no_answer() -> None:
    ring = core()
    ring.receive(started("s1"), 100.1)
    ring.receive(stopped("s1", declined=False), 105.0)
    out = actions(ring)
    assert Reject(480, "Temporarily Unavailable") in out
    assert ended_of(out).cause == errors.NO_ANSWER


def ended_of(out: list[Action]) -> CallEnded:
    events = [a.event for a in out if isinstance(a, Publish) and isinstance(a.event, CallEnded)]
    assert len(events) == 1
    return events[0]


def test_an_early_decline_waits_for_slower_instances() -> None:
    ring = core()
    ring.receive(started("s1"), 100.1)
    ring.receive(stopped("s1", declined=True), 100.5)
    assert actions(ring) == [Ring()]  # not decided yet: another instance may ring
    assert ring.get_timer() == 100.0 + LISTEN_WAIT
    ring.receive(started("s2"), 101.0)
    run_until(ring, 100.0 + LISTEN_WAIT)
    assert actions(ring) == []  # s2 rings on
    ring.receive(stopped("s2", declined=False), 110.0)
    assert ended_of(actions(ring)).cause == errors.REJECTED  # s1 declined


def test_an_early_decline_alone_is_decided_at_the_listen_wait() -> None:
    ring = core()
    ring.receive(started("s1"), 100.1)
    ring.receive(stopped("s1", declined=True), 100.5)
    actions(ring)
    run_until(ring, 100.0 + LISTEN_WAIT)
    out = actions(ring)
    assert out[0] == Reject(486, "Busy Here")
    assert ended_of(out).cause == errors.REJECTED


def test_first_accept_wins_and_later_ones_hear_the_claim_again() -> None:
    ring = core()
    ring.receive(started("s1"), 100.1)
    ring.receive(started("s2"), 100.2)
    actions(ring)
    ring.receive(accept("s2"), 104.0)
    claim = CallClaimed(call_id=CALL, signaling_id="s2")
    assert actions(ring) == [Publish(SUBJECT, claim)]
    assert ring.claimed_by == "s2" and ring.identity == "alice"
    ring.receive(accept("s1"), 104.1)
    assert actions(ring) == [Publish(SUBJECT, claim)]
    assert ring.claimed_by == "s2"
    ring.receive(started("s3"), 104.2)  # rang late: it must stop ringing too
    assert actions(ring) == [Publish(SUBJECT, claim)]
    ring.receive(stopped("s1", declined=True), 104.3)
    assert actions(ring) == []  # the loser stopping changes nothing


def test_answer_requested_answers_and_hands_the_call_over() -> None:
    ring = core()
    ring.receive(started("s1"), 100.1)
    ring.receive(accept("s1"), 101.0)
    actions(ring)
    ring.receive(AnswerRequested(call_id=CALL, media_id="m1", answer_sdp="v=0\r\n"), 102.0)
    assert actions(ring) == [Answer("v=0\r\n", "m1")]
    assert ring.answering and ring.finished and ring.media_id == "m1"
    assert ring.get_timer() is None
    ring.receive(HangupRequested(call_id=CALL, cause=errors.BROWSER_GONE), 103.0)
    assert actions(ring) == []  # from here the call runs as an outbound one


def test_no_answer_requested_after_the_claim_gets_480_setup_failed() -> None:
    ring = core(ring_timeout=5.0)
    ring.receive(started("s1"), 100.1)
    ring.receive(accept("s1"), 104.0)
    actions(ring)
    assert ring.get_timer() == 104.0 + ANSWER_WAIT
    run_until(ring, 104.0 + ANSWER_WAIT - 0.1)
    assert actions(ring) == []  # the ring timeout no longer applies once claimed
    run_until(ring, 104.0 + ANSWER_WAIT)
    out = actions(ring)
    assert out[0] == Reject(480, "Temporarily Unavailable")
    assert ended_of(out).cause == errors.SETUP_FAILED


def test_answer_requested_before_a_claim_is_ignored() -> None:
    ring = core()
    ring.receive(started("s1"), 100.1)
    actions(ring)
    ring.receive(AnswerRequested(call_id=CALL, media_id="m1", answer_sdp="v=0\r\n"), 101.0)
    assert actions(ring) == [] and not ring.answering


def test_ring_timeout_gets_480_no_answer() -> None:
    ring = core(ring_timeout=30.0)
    ring.receive(started("s1"), 100.1)
    actions(ring)
    run_until(ring, 129.9)
    assert actions(ring) == []
    run_until(ring, 130.0)
    out = actions(ring)
    assert out[0] == Reject(480, "Temporarily Unavailable")
    assert ended_of(out).cause == errors.NO_ANSWER


def test_cancel_while_ringing_publishes_cancelled() -> None:
    ring = core()
    ring.receive(started("s1"), 100.1)
    actions(ring)
    ring.sip_event(Progress(180), 100.2)
    assert actions(ring) == []
    ring.sip_event(Ended(errors.CANCELLED, 487, ""), 101.0)
    out = actions(ring)
    assert out == [
        Publish(
            SUBJECT,
            CallEnded(call_id=CALL, cause=errors.CANCELLED, status=487, reason="Cancelled"),
        )
    ]
    assert ring.finished
    ring.receive(accept("s1"), 101.5)
    assert actions(ring) == []  # too late


def test_hangups_before_the_claim_are_ignored() -> None:
    ring = core()
    ring.receive(started("s1"), 100.1)
    actions(ring)
    ring.receive(HangupRequested(call_id=CALL, cause=errors.BROWSER_GONE), 101.0)
    assert actions(ring) == [] and not ring.finished


def test_the_winner_failing_set_up_gets_480() -> None:
    ring = core()
    ring.receive(started("s1"), 100.1)
    ring.receive(accept("s1"), 101.0)
    actions(ring)
    ring.receive(MediaFailed(call_id=CALL, code=errors.NO_PORTS, reason="x"), 102.0)
    out = actions(ring)
    assert out[0] == Reject(480, "Temporarily Unavailable")
    assert ended_of(out).cause == errors.MEDIA_FAILED


def test_the_winner_hanging_up_during_set_up_gets_480() -> None:
    ring = core()
    ring.receive(started("s1"), 100.1)
    ring.receive(accept("s1"), 101.0)
    actions(ring)
    ring.receive(HangupRequested(call_id=CALL, cause=errors.BROWSER_GONE), 102.0)
    out = actions(ring)
    assert out[0] == Reject(480, "Temporarily Unavailable")
    assert ended_of(out).cause == errors.BROWSER_GONE


# --- what a review found ------------------------------------------------------------------


def claimed(instance: str = "s1") -> Ringing:
    """A call rung by ``instance`` and accepted there at 101."""
    ring = core()
    ring.receive(started(instance), 100.1)
    ring.receive(accept(instance), 101.0)
    actions(ring)
    return ring


def test_an_answer_without_sdp_gets_480_setup_failed_not_an_empty_200() -> None:
    for empty in ("", "  \r\n"):
        ring = claimed()
        ring.receive(AnswerRequested(call_id=CALL, media_id="m1", answer_sdp=empty), 102.0)
        out = actions(ring)
        assert not [a for a in out if isinstance(a, Answer)]
        assert out[0] == Reject(480, "Temporarily Unavailable")
        assert ended_of(out).cause == errors.SETUP_FAILED
        assert ring.finished and not ring.answering


def test_a_late_ring_after_the_answer_hears_the_winner_s_claim() -> None:
    ring = claimed("s1")
    ring.receive(AnswerRequested(call_id=CALL, media_id="m1", answer_sdp="v=0\r\n"), 102.0)
    actions(ring)
    claim = CallClaimed(call_id=CALL, signaling_id="s1")
    ring.receive(started("s2"), 103.0)  # a slow instance rings its browsers now
    assert actions(ring) == [Publish(SUBJECT, claim)]
    ring.receive(accept("s2"), 103.5)
    assert actions(ring) == [Publish(SUBJECT, claim)]
    assert ring.answering  # still handed over


def test_late_claim_answers_late_rings_drained_after_the_hand_over() -> None:
    claim = CallClaimed(call_id=CALL, signaling_id="s1")
    assert late_claim(started("s2"), CALL, "s1") == claim
    assert late_claim(accept("s2"), CALL, "s1") == claim
    assert late_claim(stopped("s2", declined=False), CALL, "s1") is None
    assert late_claim(HangupRequested(call_id=CALL, cause=errors.NORMAL), CALL, "s1") is None
    assert late_claim(started("s2"), CALL, "") is None  # no winner: an outbound call


def test_an_operator_hangs_up_a_ringing_call_480_operator() -> None:
    ring = core()
    ring.receive(started("s1"), 100.1)
    actions(ring)
    ring.receive(HangupRequested(call_id=CALL, cause=errors.OPERATOR), 105.0)
    out = actions(ring)
    assert out[0] == Reject(480, "Temporarily Unavailable")
    assert ended_of(out) == CallEnded(
        call_id=CALL, cause=errors.OPERATOR, status=480, reason="Temporarily Unavailable"
    )
    assert ring.finished
    # Before anyone rang, and while the winner sets media up, alike.
    for ring in (core(), claimed()):
        ring.receive(HangupRequested(call_id=CALL, cause=errors.OPERATOR), 101.5)
        assert ended_of(actions(ring)).cause == errors.OPERATOR


def test_the_answer_wait_covers_signaling_s_set_up_and_its_retries() -> None:
    assert answer_wait_for(10.0) == 45.0 == ANSWER_WAIT
    assert answer_wait_for(60.0) == 95.0
    ring = Ringing(CALL, 100.0, ring_timeout=30.0, answer_wait=answer_wait_for(60.0))
    ring.receive(started("s1"), 100.1)
    ring.receive(accept("s1"), 101.0)
    actions(ring)
    assert ring.get_timer() == 196.0
    run_until(ring, 195.9)
    assert actions(ring) == []
    run_until(ring, 196.0)
    assert ended_of(actions(ring)).cause == errors.SETUP_FAILED


def test_every_state_before_the_answer_has_a_timer() -> None:
    ring = core()
    assert ring.get_timer() == 100.0 + LISTEN_WAIT  # waiting
    ring.receive(started("s1"), 100.1)
    assert ring.get_timer() == 130.0  # ringing
    ring.receive(accept("s1"), 101.0)
    assert ring.get_timer() == 101.0 + ANSWER_WAIT  # claimed
