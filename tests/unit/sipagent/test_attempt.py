"""The INVITE of a dial plan's attempt: how long it may ring."""

from __future__ import annotations

from services.common.providers import Trunk
from services.sipagent.attempt import DialPlan, invite_for
from services.sipagent.call import OutboundCall
from services.sipagent.events import Ended
from services.sipagent.resolve import Target
from tests.unit.sipagent.peer import OUR_OFFER

TARGET = Target("192.0.2.10", 5060, "udp", "trunk.test")


def _plan() -> DialPlan:
    trunk = Trunk("trunk", "trunk.test", username="alice", password="secret")
    # First dialled at 0 with INVITE_TIMEOUT 45: the plan's deadline is 45.
    return DialPlan(trunk, "+15551234567", OUR_OFFER, [], [], 45.0, invite_timeout=45.0)


def _ended_by(call: OutboundCall, until: float) -> Ended | None:
    call.start(call_now := until - 20.0)
    while (deadline := call.get_timer()) is not None and deadline <= until:
        call_now = max(call_now, deadline)
        call.handle_timer(call_now)
        call.messages_to_send()
        while (event := call.next_event()) is not None:
            if isinstance(event, Ended):
                return event
    return None


def test_transfer_invite_five_minutes_in_rings_its_full_timeout() -> None:
    call = invite_for(
        "c1", _plan(), TARGET, "udp", "192.0.2.1:5060", 0.5, 300.0, request_uri="sip:bob@x.test"
    )
    # 20 s after the REFER, far past the first dial's deadline: still ringing.
    assert _ended_by(call, 320.0) is None


def test_failover_invite_keeps_the_first_dials_deadline() -> None:
    call = invite_for("c1", _plan(), TARGET, "udp", "192.0.2.1:5060", 0.5, 44.0)
    # Ends at 45, not 20 s on.
    ended = _ended_by(call, 64.0)
    assert ended is not None
