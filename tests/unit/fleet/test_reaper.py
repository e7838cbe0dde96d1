"""The survivor's decisions, with a fake clock and hand-fed heartbeats."""

from proto import errors, subjects
from proto.events import CallEnded, HangupRequested
from proto.fleet import CallRecord, Heartbeat, SipDialogRecord
from proto.subjects import Source
from services.common.fleet import records
from services.common.fleet.leases import LeaseTable, Owner
from services.common.fleet.reaper import Publish, Reaper, SendBye

T0 = 1000.0
WALL = 1_700_000_000.0
LEASE = 3.0

DIALOG = SipDialogRecord(
    sip_call_id="sipcid",
    transport="udp",
    trunk_host="198.51.100.7",
    trunk_port=5060,
    local_tag="mine",
    local_from="<sip:bridge@trunk.test>;tag=mine",
    local_cseq=2,
    remote_tag="theirs",
    remote_to="<sip:1@trunk.test>;tag=theirs",
    remote_target="sip:trunk@198.51.100.7:5060",
)


class Fleet:
    """A lease table in which every instance beats until it is killed."""

    def __init__(self, me: Owner, *others: Owner) -> None:
        self.me = me
        self.leases = LeaseTable(now=T0, lease=LEASE)
        self.alive: set[Owner] = {me, *others}
        self.now = T0
        self.beat()

    def beat(self) -> None:
        for service, instance in self.alive:
            self.leases.observe(
                Heartbeat(service=service, instance_id=instance, active_calls=1, max_calls=10),
                self.now,
            )

    def advance(self, seconds: float, step: float = 1.0) -> None:
        end = self.now + seconds
        while self.now + step <= end:
            self.now += step
            self.beat()
        self.now = end

    def reaper(self, **options: object) -> Reaper:
        return Reaper(self.me, self.leases, now=T0, started_wall=WALL, **options)  # type: ignore[arg-type]


def record(state: str = "confirmed", **owners: str) -> CallRecord:
    base = {"signaling_id": "g1", "media_id": "m1", "sipagent_id": "s1"}
    base.update(owners)
    return CallRecord(
        call_id="c1",
        state=state,  # type: ignore[arg-type]
        updated_at=WALL - 60,
        dialog=DIALOG if state == "confirmed" else None,
        signaling_id=base["signaling_id"],
        media_id=base["media_id"],
        sipagent_id=base["sipagent_id"],
    )


EVERYONE: tuple[Owner, ...] = (("signaling", "g1"), ("media", "m1"), ("sipagent", "s1"))


def fleet_of(me: Owner) -> Fleet:
    return Fleet(me, *EVERYONE)


def kill(fleet: Fleet, service: Source, instance: str) -> None:
    fleet.alive.discard((service, instance))


def test_nothing_happens_while_everyone_is_alive() -> None:
    fleet = fleet_of(("sipagent", "s2"))
    reaper = fleet.reaper()
    fleet.advance(10)
    assert reaper.plan(record(), fleet.now, WALL) is None


def test_a_survivor_waits_a_whole_lease_of_its_own_before_acting() -> None:
    fleet = fleet_of(("media", "m2"))
    reaper = fleet.reaper()
    kill(fleet, "media", "m1")
    fleet.advance(2.5)
    assert not reaper.ready(fleet.now)
    assert reaper.pop_scans(fleet.now) == []
    fleet.advance(1)
    assert reaper.ready(fleet.now)


def test_dead_sipagent_confirmed_call_gets_bye_and_ended_from_a_sipagent() -> None:
    fleet = fleet_of(("sipagent", "s2"))
    reaper = fleet.reaper()
    kill(fleet, "sipagent", "s1")
    fleet.advance(4)
    plan = reaper.plan(record(), fleet.now, WALL + 4)
    assert plan is not None
    assert plan.actions == (
        SendBye("c1", DIALOG),
        Publish(
            subjects.call_events("c1", "sipagent"),
            CallEnded(call_id="c1", cause=errors.INTERNAL, reason="SIP agent lost"),
        ),
    )
    assert plan.claim.state == "reaping"
    assert records.reaper_of(plan.claim) == ("sipagent", "s2")
    assert plan.claim.updated_at == WALL + 4


def test_dead_sipagent_before_the_answer_needs_no_bye() -> None:
    fleet = fleet_of(("media", "m2"))
    reaper = fleet.reaper()
    kill(fleet, "sipagent", "s1")
    fleet.advance(4)
    plan = reaper.plan(record("inviting"), fleet.now, WALL)
    assert plan is not None
    assert [type(a.event) for a in plan.actions if isinstance(a, Publish)] == [CallEnded]
    assert not any(isinstance(a, SendBye) for a in plan.actions)


def test_only_a_sipagent_may_bye_until_the_orphan_grace_passes() -> None:
    fleet = fleet_of(("signaling", "g2"))
    reaper = fleet.reaper(orphan_grace=10.0)
    kill(fleet, "sipagent", "s1")
    fleet.advance(4)  # s1 died at T0 + 3
    assert reaper.plan(record(), fleet.now, WALL) is None
    fleet.advance(9)
    plan = reaper.plan(record(), fleet.now, WALL)
    assert plan is not None
    assert [type(a) for a in plan.actions] == [Publish]


def test_dead_media_asks_the_sipagent_to_hang_up() -> None:
    fleet = fleet_of(("signaling", "g2"))
    reaper = fleet.reaper()
    kill(fleet, "media", "m1")
    fleet.advance(4)
    plan = reaper.plan(record(), fleet.now, WALL)
    assert plan is not None
    assert plan.actions == (
        Publish(
            subjects.call_events("c1", "media"),
            HangupRequested(call_id="c1", cause=errors.MEDIA_FAILED),
        ),
    )


def test_dead_signaling_hangs_up_as_browser_gone() -> None:
    fleet = fleet_of(("media", "m2"))
    reaper = fleet.reaper()
    kill(fleet, "signaling", "g1")
    fleet.advance(4)
    plan = reaper.plan(record(), fleet.now, WALL)
    assert plan is not None
    assert plan.actions == (
        Publish(
            subjects.call_events("c1", "signaling"),
            HangupRequested(call_id="c1", cause=errors.BROWSER_GONE),
        ),
    )


def test_a_dead_sipagent_comes_first_when_several_owners_died() -> None:
    fleet = fleet_of(("sipagent", "s2"))
    reaper = fleet.reaper()
    for owner in EVERYONE:
        kill(fleet, *owner)
    fleet.advance(4)
    plan = reaper.plan(record(), fleet.now, WALL)
    assert plan is not None and isinstance(plan.actions[0], SendBye)


def test_a_call_claimed_by_a_live_survivor_is_left_to_it() -> None:
    fleet = Fleet(("sipagent", "s2"), *EVERYONE, ("sipagent", "s3"))
    reaper = fleet.reaper()
    kill(fleet, "sipagent", "s1")
    fleet.advance(4)
    claimed = records.claimed(record(), ("sipagent", "s3"), WALL)
    assert reaper.plan(claimed, fleet.now, WALL) is None
    kill(fleet, "sipagent", "s3")  # the claimant died before finishing
    fleet.advance(4)
    assert reaper.plan(claimed, fleet.now, WALL) is not None


def test_its_own_claim_is_retried() -> None:
    fleet = fleet_of(("sipagent", "s2"))
    reaper = fleet.reaper()
    kill(fleet, "sipagent", "s1")
    fleet.advance(4)
    claimed = records.claimed(record(), ("sipagent", "s2"), WALL)
    assert reaper.plan(claimed, fleet.now, WALL) is not None


def test_an_owner_never_heard_of_is_dead() -> None:
    fleet = Fleet(("media", "m2"), ("signaling", "g1"), ("sipagent", "s1"))
    reaper = fleet.reaper()
    fleet.advance(4)
    plan = reaper.plan(record(media_id="ghost"), fleet.now, WALL)
    assert plan is not None and plan.reason == "media ghost dead"


def test_a_previous_process_with_the_same_id_is_dead_but_not_a_live_call() -> None:
    held = {"c-live"}
    fleet = fleet_of(("media", "m1"))
    reaper = fleet.reaper(holds=held.__contains__)
    fleet.advance(4)
    old = record()  # written before this process started
    assert reaper.plan(old, fleet.now, WALL) is not None
    live = CallRecord(call_id="c-live", state="setup", updated_at=WALL - 60, media_id="m1")
    assert reaper.plan(live, fleet.now, WALL) is None
    fresh = CallRecord(call_id="c2", state="setup", updated_at=WALL + 1, media_id="m1")
    assert reaper.plan(fresh, fleet.now, WALL) is None
    assert fleet_of(("media", "m1")).reaper().plan(old, T0 + 10, WALL) is None  # no holds given


def test_an_instance_cut_off_from_nats_does_not_reap_when_it_comes_back() -> None:
    fleet = fleet_of(("media", "m2"))
    reaper = fleet.reaper()
    fleet.advance(4)
    saved = set(fleet.alive)
    fleet.alive.clear()  # nobody's heartbeats arrive, ours neither
    fleet.advance(5)
    reaper.handle_timer(fleet.now)
    assert reaper.plan(record(), fleet.now, WALL) is None
    fleet.alive = saved  # reconnected: our own heartbeat is back first
    fleet.leases.observe(
        Heartbeat(service="media", instance_id="m2", active_calls=0, max_calls=10), fleet.now
    )
    assert reaper.plan(record(), fleet.now, WALL) is None  # settling
    fleet.advance(LEASE)
    assert reaper.plan(record(), fleet.now, WALL) is None  # the others beat again


def test_expired_leases_become_scans_and_a_sweep_comes_periodically() -> None:
    fleet = fleet_of(("media", "m2"))
    reaper = fleet.reaper(sweep_interval=30.0)
    fleet.advance(3)
    assert reaper.pop_scans(fleet.now) == [None]  # the first sweep at start
    kill(fleet, "media", "m1")
    fleet.advance(3)
    reaper.handle_timer(fleet.now)
    assert reaper.pop_scans(fleet.now) == [("media", "m1")]
    assert reaper.pop_scans(fleet.now) == []
    reaper.scan_failed(("media", "m1"))
    assert reaper.pop_scans(fleet.now) == [("media", "m1")]
    fleet.advance(25)
    assert reaper.get_timer() == T0 + 30
    reaper.handle_timer(fleet.now)
    assert reaper.pop_scans(fleet.now) == [None]
