import random

from proto import errors, subjects
from proto.fleet import Heartbeat
from services.common.fleet.leases import LeaseTable
from services.common.fleet.placement import Placement, decline_code, score

T0 = 1000.0


def table(*workers: tuple[str, int, int, bool]) -> LeaseTable:
    leases = LeaseTable(now=T0, lease=3.0)
    for instance, active, max_calls, draining in workers:
        leases.observe(
            Heartbeat(
                service="media",
                instance_id=instance,
                active_calls=active,
                max_calls=max_calls,
                draining=draining,
            ),
            T0,
        )
    return leases


def test_score_is_free_share_and_zero_when_full_or_draining() -> None:
    assert score(0, 10, False) == 1.0
    assert score(5, 10, False) == 0.5
    assert score(10, 10, False) == 0.0
    assert score(11, 10, False) == 0.0
    assert score(0, 10, True) == 0.0
    assert score(0, 0, False) == 0.0


def test_decline_code_says_why_a_worker_refuses() -> None:
    assert decline_code(3, 10, False) is None
    assert decline_code(10, 10, False) == errors.AT_CAPACITY
    assert decline_code(0, 10, True) == errors.DRAINING


def test_the_least_loaded_worker_gets_the_call_on_its_own_subject() -> None:
    placement = Placement(table(("m1", 8, 10, False), ("m2", 2, 10, False)))
    target = placement.start("c1", T0)
    assert target.instance_id == "m2"
    assert target.subject == subjects.media_work_for("m2") == "bridge.v1.work.media.m2"


def test_full_draining_and_stale_workers_are_never_chosen() -> None:
    leases = table(("full", 10, 10, False), ("drain", 0, 10, True), ("ok", 9, 10, False))
    placement = Placement(leases)
    assert [lease.instance_id for lease in placement.candidates(T0)] == ["ok"]
    assert placement.candidates(T0 + 3) == []  # every lease ran out


def test_ties_are_broken_at_random() -> None:
    chosen = set()
    for seed in range(20):
        leases = table(("m1", 1, 10, False), ("m2", 1, 10, False))
        target = Placement(leases, rng=random.Random(seed)).start("c1", T0)
        chosen.add(target.instance_id)
    assert chosen == {"m1", "m2"}


def test_calls_placed_since_the_last_heartbeat_count_as_load() -> None:
    placement = Placement(table(("m1", 0, 10, False), ("m2", 1, 10, False)))
    picks = [placement.start(f"c{n}", T0 + 0.1).instance_id for n in range(5)]
    # Without counting them all five would go to m1, whose heartbeat still says 0.
    assert picks[0] == "m1"
    assert abs(picks.count("m1") - (1 + picks.count("m2"))) <= 1


def test_a_decline_moves_the_call_to_the_next_best_then_gives_up() -> None:
    leases = table(("m1", 0, 10, False), ("m2", 5, 10, False), ("m3", 7, 10, False))
    placement = Placement(leases, max_attempts=3)
    assert placement.start("c1", T0).instance_id == "m1"
    second = placement.declined("c1", "m1", T0)
    assert second is not None and second.instance_id == "m2"
    third = placement.declined("c1", "m2", T0)
    assert third is not None and third.instance_id == "m3"
    assert placement.declined("c1", "m3", T0) is None
    assert placement.declined("c1", "m3", T0) is None  # forgotten


def test_without_known_workers_the_queue_group_gets_one_chance() -> None:
    placement = Placement(table())
    first = placement.start("c1", T0)
    assert first.instance_id is None and first.subject == subjects.media_work()
    assert placement.declined("c1", "mX", T0) is None


def test_a_worker_that_declined_through_the_queue_group_is_not_chosen_again() -> None:
    leases = table()
    placement = Placement(leases)
    assert placement.start("c1", T0).instance_id is None
    leases.observe(
        Heartbeat(service="media", instance_id="m1", active_calls=0, max_calls=10), T0 + 0.5
    )
    leases.observe(
        Heartbeat(service="media", instance_id="m2", active_calls=9, max_calls=10), T0 + 0.5
    )
    retry = placement.declined("c1", "m1", T0 + 1)
    assert retry is not None and retry.instance_id == "m2"


def test_finished_forgets_the_call() -> None:
    placement = Placement(table(("m1", 0, 10, False), ("m2", 0, 10, False)))
    placement.start("c1", T0)
    placement.finished("c1")
    assert placement.declined("c1", "m1", T0) is None
