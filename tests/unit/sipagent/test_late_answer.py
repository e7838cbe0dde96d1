"""A 2xx that comes after its call was over still gets its ACK, then a BYE: no dialog left up.

On the agent core's fake clock: within ``LATE_ANSWER_WINDOW`` of the call's end, not after.
"""

from __future__ import annotations

from sipmessage import Request

from proto import errors
from services.sipagent.agent_core import LATE_ANSWER_WINDOW
from services.sipagent.events import Progress
from tests.unit.sipagent.test_agent_core import FIRST, SECOND, T1, Wire, wire
from tests.unit.sipagent.trunk import ANSWER, respond


def _cancelled_and_forgotten(w: Wire) -> Request:
    """A call cancelled after 180 whose 487 never came: over and forgotten."""
    hosted = w.dial(FIRST)
    [invite] = w.requests("INVITE", FIRST.addr)
    w.receive(respond(invite, 180), FIRST.addr)
    w.core.hangup(hosted, errors.CANCELLED, w.now)
    w.pump()
    [cancel] = w.requests("CANCEL", FIRST.addr)
    w.receive(respond(cancel, 200), FIRST.addr)
    # The CANCEL window ends the call; Timer K ends the CANCEL's transaction.
    while w.core.active_calls:
        timer = w.core.get_timer()
        assert timer is not None
        w.advance(timer)
    return invite


def test_a_late_2xx_within_the_window_is_acked_and_hung_up() -> None:
    w = wire()
    invite = _cancelled_and_forgotten(w)
    w.advance(w.now + LATE_ANSWER_WINDOW - 1.0)
    w.receive(respond(invite, 200, body=ANSWER), FIRST.addr)
    [ack] = w.requests("ACK", FIRST.addr)
    assert ack.call_id == invite.call_id and ack.cseq.sequence == invite.cseq.sequence
    assert ";tag=trunk-tag" in ack.headers["To"]
    [bye] = w.requests("BYE", FIRST.addr)
    assert bye.call_id == invite.call_id and ";tag=trunk-tag" in bye.headers["To"]
    w.receive(respond(bye, 200), FIRST.addr)
    w.advance(w.now + 60.0)
    assert len(w.requests("BYE", FIRST.addr)) == 1  # answered: not sent again
    assert w.core.active_calls == 0


def test_a_late_2xx_after_the_window_is_left_alone() -> None:
    w = wire()
    invite = _cancelled_and_forgotten(w)
    w.advance(w.now + LATE_ANSWER_WINDOW + 1.0)
    sent = len(w.sent)
    w.receive(respond(invite, 200, body=ANSWER), FIRST.addr)
    assert len(w.sent) == sent and w.core.active_calls == 0


def test_a_late_2xx_from_a_target_failed_over_is_ended_and_the_call_goes_on() -> None:
    w = wire()
    hosted = w.dial(FIRST, SECOND)
    [first] = w.requests("INVITE", FIRST.addr)
    w.advance(64 * T1)  # Timer B
    [second] = w.requests("INVITE", SECOND.addr)
    w.receive(respond(second, 180), SECOND.addr)
    w.advance(64 * T1 + 1.0)
    assert w.core.active_calls == 1  # the first attempt's clean-up is over
    w.receive(respond(first, 200, body=ANSWER), FIRST.addr)
    assert len(w.requests("ACK", FIRST.addr)) == 1
    assert len(w.requests("BYE", FIRST.addr)) == 1
    assert hosted.trunk == SECOND.addr and not w.requests("CANCEL", SECOND.addr)
    assert w.events_of(hosted) == [Progress(180)]


def test_a_2xx_of_no_invite_of_ours_is_ignored() -> None:
    w = wire()
    w.dial(FIRST)
    [invite] = w.requests("INVITE", FIRST.addr)
    stranger = bytes(respond(invite, 200, body=ANSWER)).replace(
        invite.call_id.encode(), b"not-ours"
    )
    sent = len(w.sent)
    w.receive(stranger, FIRST.addr)
    assert len(w.sent) == sent
