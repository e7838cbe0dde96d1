from proto.fleet import Heartbeat
from proto.subjects import Source
from services.common.fleet.leases import LeaseTable

T0 = 1000.0


def beat(service: Source, instance: str, active: int = 0, draining: bool = False) -> Heartbeat:
    return Heartbeat(
        service=service, instance_id=instance, active_calls=active, max_calls=10, draining=draining
    )


def test_an_instance_is_dead_a_lease_after_its_last_heartbeat() -> None:
    table = LeaseTable(now=T0, lease=3.0)
    table.observe(beat("media", "m1"), T0)
    table.observe(beat("media", "m1"), T0 + 1)
    assert table.get_timer() == T0 + 4
    assert table.is_alive("media", "m1", T0 + 3.9)
    assert table.expired(T0 + 3.9) == []
    assert not table.is_alive("media", "m1", T0 + 4)
    assert [lease.instance_id for lease in table.expired(T0 + 4)] == ["m1"]
    assert table.expired(T0 + 5) == []  # reported once
    assert table.dead_since("media", "m1", T0 + 5) == T0 + 4
    assert table.dead() == [("media", "m1")]
    assert table.get_timer() is None


def test_dead_since_is_none_while_alive_and_known_before_collection() -> None:
    table = LeaseTable(now=T0, lease=3.0)
    table.observe(beat("sipagent", "s1"), T0)
    assert table.dead_since("sipagent", "s1", T0 + 2) is None
    assert table.dead_since("sipagent", "s1", T0 + 3) == T0 + 3


def test_an_instance_never_heard_of_is_dead_once_the_table_listened_a_lease() -> None:
    table = LeaseTable(now=T0, lease=3.0)
    assert table.dead_since("media", "ghost", T0 + 2.9) is None
    assert table.dead_since("media", "ghost", T0 + 3) == T0 + 3


def test_a_dead_instance_that_beats_again_is_alive_with_a_new_since() -> None:
    table = LeaseTable(now=T0, lease=3.0)
    table.observe(beat("media", "m1"), T0)
    table.expired(T0 + 5)
    table.observe(beat("media", "m1", active=2), T0 + 6)
    lease = table.get("media", "m1", T0 + 6)
    assert lease is not None and lease.since == T0 + 6 and lease.active_calls == 2
    assert table.dead_since("media", "m1", T0 + 6) is None
    assert table.dead() == []


def test_an_expired_lease_not_collected_yet_restarts_since() -> None:
    table = LeaseTable(now=T0, lease=3.0)
    table.observe(beat("media", "m1"), T0)
    table.observe(beat("media", "m1"), T0 + 10)
    lease = table.get("media", "m1", T0 + 10)
    assert lease is not None and lease.since == T0 + 10


def test_alive_lists_one_service_sorted_and_dead_ones_are_forgotten() -> None:
    table = LeaseTable(now=T0, lease=3.0, forget_after=60.0)
    table.observe(beat("media", "m2"), T0)
    table.observe(beat("media", "m1"), T0)
    table.observe(beat("signaling", "g1"), T0)
    assert [lease.instance_id for lease in table.alive("media", T0 + 1)] == ["m1", "m2"]
    table.expired(T0 + 3)
    assert len(table.dead()) == 3
    table.expired(T0 + 64)
    assert table.dead() == []
