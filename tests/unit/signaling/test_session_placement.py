"""Where a session sends its call's ``CallRequested``: the chosen media worker,
another one when it declines, the queue group when none is known."""

from __future__ import annotations

import random
from collections.abc import Sequence

from proto import errors, subjects
from proto.events import CallDeclined, CallEnded, CallRequested
from proto.fleet import Heartbeat
from services.common.fleet.leases import LeaseTable
from services.common.fleet.placement import Placement
from services.signaling.actions import Publish, SendMessage
from services.signaling.session import BrowserSession
from services.signaling.states import State

from .harness import SETTINGS, T0, Harness


def placed_harness(*workers: tuple[str, int]) -> Harness:
    """A session whose placement knows ``workers`` as (id, active calls) of 4 at most."""
    leases = LeaseTable(now=T0 - 10)
    for instance_id, active in workers:
        heartbeat = Heartbeat(
            service="media", instance_id=instance_id, active_calls=active, max_calls=4
        )
        leases.observe(heartbeat, T0 - 0.5)
    h = Harness()
    ids = iter(f"call{n}" for n in range(1, 100))
    placement = Placement(leases, rng=random.Random(1))
    h.session = BrowserSession(SETTINGS, make_call_id=lambda: next(ids), placement=placement)
    return h


def requested(actions: Sequence[object]) -> list[Publish]:
    return [a for a in actions if isinstance(a, Publish) and isinstance(a.event, CallRequested)]


def test_offer_goes_to_the_least_loaded_worker() -> None:
    h = placed_harness(("m-busy", 3), ("m-idle", 0))
    [publish] = requested(h.offer())
    assert publish.subject == subjects.media_work_for("m-idle")


def test_declined_call_is_offered_to_the_next_worker() -> None:
    h = placed_harness(("m-a", 0), ("m-b", 1))
    [first] = requested(h.offer())
    assert first.subject == subjects.media_work_for("m-a")
    declined = CallDeclined(call_id="call1", media_id="m-a", code=errors.AT_CAPACITY)
    [second] = requested(h.event(declined, T0 + 1))
    assert second.subject == subjects.media_work_for("m-b")
    assert second.event == first.event
    assert h.state() is State.WAITING_MEDIA
    assert h.session.get_timer() == T0 + 1 + SETTINGS.setup_timeout


def test_no_worker_known_uses_the_queue_group_then_gives_up() -> None:
    h = placed_harness()
    [publish] = requested(h.offer())
    assert publish.subject == subjects.media_work()
    actions = h.event(CallDeclined(call_id="call1", media_id="m-x", code=errors.DRAINING))
    errors_sent = [
        a.message for a in actions if isinstance(a, SendMessage) and a.message["type"] == "error"
    ]
    assert errors_sent and errors_sent[0]["code"] == errors.AT_CAPACITY
    assert any(isinstance(a, Publish) and isinstance(a.event, CallEnded) for a in actions)
    assert h.state() is State.IDLE


def test_decline_after_media_prepared_is_ignored() -> None:
    h = placed_harness(("m-a", 0))
    h.offer()
    h.prepared()
    assert h.event(CallDeclined(call_id="call1", media_id="m-b", code=errors.AT_CAPACITY)) == []
    assert h.state() is State.WAITING_INVITE
