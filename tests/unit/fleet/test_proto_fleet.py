import pytest

from proto import codec, fleet, subjects
from proto.events import CallDeclined


def test_fleet_subjects() -> None:
    assert subjects.heartbeat("media") == "bridge.v1.heartbeat.media"
    assert subjects.heartbeats() == "bridge.v1.heartbeat.*"
    assert subjects.media_work_for("m-1") == "bridge.v1.work.media.m-1"
    # A host name's dots must not split the token (nor reach other subjects).
    assert subjects.media_work_for("pod.ns.svc-12-ab") == "bridge.v1.work.media.pod_ns_svc-12-ab"
    assert subjects.media_work_for("a*>") == "bridge.v1.work.media.a__"
    with pytest.raises(ValueError):
        subjects.instance_token("")


def test_call_declined_is_a_call_event() -> None:
    event = CallDeclined(call_id="c1", media_id="m1", code="at_capacity")
    assert codec.decode(codec.encode(event)) == event


def test_heartbeat_round_trips_and_refuses_garbage() -> None:
    beat = fleet.Heartbeat(service="media", instance_id="m1", active_calls=2, max_calls=50)
    assert fleet.decode_heartbeat(fleet.encode(beat)) == beat
    with pytest.raises(fleet.DecodeError):
        fleet.decode_heartbeat(b'{"type":"fleet.heartbeat","service":"nope"}')
