import msgspec
import pytest

from proto import codec, events, subjects


def test_every_event_round_trips_with_its_tag() -> None:
    event = events.ProgressReceived(call_id="c1", status=183, early_sdp="v=0\r\n")
    data = codec.encode(event)
    assert b'"type":"progress.received"' in data
    assert codec.decode(data) == event


def test_events_are_frozen_and_carry_a_call_id() -> None:
    for cls in events.AnyEvent.__args__:  # type: ignore[attr-defined]
        assert cls.__struct_config__.frozen, cls
        assert "call_id" in cls.__struct_fields__, cls
    event = events.HangupRequested(call_id="c1", cause="normal")
    with pytest.raises(AttributeError):
        event.cause = "x"  # type: ignore[misc]


def test_decode_refuses_garbage_and_unknown_types() -> None:
    with pytest.raises(codec.DecodeError):
        codec.decode(b"{nope")
    with pytest.raises(codec.DecodeError):
        codec.decode(b'{"type":"call.exploded","call_id":"c1"}')
    with pytest.raises(codec.DecodeError):
        codec.decode(msgspec.json.encode({"type": "call.ended", "call_id": "c1"}))


def test_subjects_are_versioned_and_per_call() -> None:
    assert subjects.media_work() == "bridge.v1.work.media"
    assert subjects.sipagent_work() == "bridge.v1.work.sipagent"
    assert subjects.call_events("abc", "media") == "bridge.v1.call.abc.media"


@pytest.mark.parametrize("bad", ["", "a.b", "a*", "a>", "a b", "x" * 65])
def test_call_ids_cannot_reach_other_subjects(bad: str) -> None:
    with pytest.raises(ValueError):
        subjects.call_events(bad, "signaling")
