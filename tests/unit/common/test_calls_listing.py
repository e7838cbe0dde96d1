"""``bridge calls``: the registry and the media workers merged, as people and machines read it."""

from __future__ import annotations

import json

from proto import calls, errors, subjects
from proto.calls import CallStatsReply, HangupAnswer, MediaCallStats
from proto.events import CallEnded, CallStatsReported, HangupRequested, LegQuality
from proto.fleet import CallRecord, SipDialogRecord
from services.common import nats_access
from services.common.calls_listing import (
    COLUMNS,
    LiveCall,
    format_duration,
    format_table,
    merge,
    to_json,
)
from services.common.fleet import records
from services.media.call_listing import LatestStats
from services.signaling.actions import Publish, SendMessage
from services.signaling.caller import Caller
from services.signaling.session import HANGUP_GRACE
from services.signaling.states import State
from services.signaling.tokens import Claims
from tests.unit.signaling.harness import T0, Harness

NOW = 1_700_000_100.0


def leg(codec: str, loss: float = 0.0, mos: float = 4.4) -> LegQuality:
    return LegQuality(
        codec=codec,
        packets_in=500,
        packets_out=500,
        lost=int(loss * 500),
        loss=loss,
        jitter_ms=3.0,
        mos=mos,
    )


def outbound(call_id: str = "c1", started: float = NOW - 65) -> CallRecord:
    record = records.requested(
        call_id, "sig-1", started, identity="alice", callee="+15551234567", trunk="default"
    )
    record = records.media_prepared(record, "media-1", started + 0.2)
    return record


def media(*stats: MediaCallStats, worker: str = "media-1") -> CallStatsReply:
    return CallStatsReply(instance_id=worker, calls=list(stats), sent_at=NOW)


def measured(
    call_id: str = "c1", browser: str = "opus", trunk: str | None = "PCMU"
) -> MediaCallStats:
    return MediaCallStats(
        call_id=call_id,
        passthrough=browser == trunk,
        browser=leg(browser, 0.01, 4.3),
        trunk=leg(trunk, 0.02, 4.1) if trunk is not None else None,
        measured_at=NOW - 2,
    )


# --- the record signaling writes --------------------------------------------------------


def test_an_outbound_record_says_who_calls_whom_and_since_when() -> None:
    record = outbound(started=NOW)
    assert (record.direction, record.identity, record.caller, record.callee, record.trunk) == (
        "outbound",
        "alice",
        "alice",
        "+15551234567",
        "default",
    )
    assert record.started_at == NOW and record.answered_at == 0.0
    confirmed = records.confirmed(record, _dialog(), NOW + 5)
    assert confirmed.answered_at == NOW + 5
    # A later confirmation (a re-INVITE, a refresh) keeps the answer time.
    assert records.confirmed(confirmed, _dialog(), NOW + 60).answered_at == NOW + 5


def _dialog() -> SipDialogRecord:
    return SipDialogRecord(
        sip_call_id="x", transport="udp", trunk_host="127.0.0.1", trunk_port=5060
    )


# --- merging -------------------------------------------------------------------------------


def test_a_call_known_to_both_sides_shows_who_and_how_it_sounds() -> None:
    record = records.confirmed(outbound(), _dialog(), NOW - 60)
    [call] = merge([record], [media(measured())], NOW)
    assert call.call_id == "c1"
    assert (call.state, call.direction, call.identity) == ("confirmed", "outbound", "alice")
    assert (call.caller, call.callee, call.trunk) == ("alice", "+15551234567", "default")
    assert call.duration == 65 and call.talking == 60
    assert (call.browser_codec, call.trunk_codec, call.path) == ("opus", "PCMU", "transcode")
    assert call.media_id == "media-1" and call.signaling_id == "sig-1"
    assert call.browser is not None and call.browser.mos == 4.3
    assert call.trunk_leg is not None and call.trunk_leg.loss == 0.02
    assert call.registered and call.measured


def test_same_codec_on_both_legs_is_passthrough() -> None:
    [call] = merge([outbound()], [media(measured(browser="PCMU", trunk="PCMU"))], NOW)
    assert call.path == "passthrough"


def test_a_call_only_media_knows_is_shown_with_its_media() -> None:
    [call] = merge([], [media(measured("lost"), worker="media-2")], NOW)
    assert call.call_id == "lost" and not call.registered and call.measured
    assert call.media_id == "media-2" and call.state == "" and call.duration is None
    assert call.browser_codec == "opus"


def test_a_call_only_the_registry_knows_is_shown_without_media() -> None:
    [call] = merge([outbound()], [], NOW)
    assert call.registered and not call.measured
    assert call.browser is None and call.path == "" and call.browser_codec == ""
    assert call.media_id == "media-1"  # from the record


def test_a_call_not_measured_yet_is_listed_by_the_worker_without_figures() -> None:
    [call] = merge([outbound()], [media(MediaCallStats(call_id="c1"))], NOW)
    assert call.measured and call.path == "" and call.browser is None


def test_calls_are_listed_oldest_first_unknown_start_last() -> None:
    listed = merge(
        [outbound("young", NOW - 5), outbound("old", NOW - 500)],
        [media(measured("media-only"))],
        NOW,
    )
    assert [c.call_id for c in listed] == ["old", "young", "media-only"]


def test_two_workers_claiming_one_call_keep_the_newest_figures() -> None:
    older = MediaCallStats(call_id="c1", passthrough=True, browser=leg("PCMU"), measured_at=1.0)
    newer = measured()
    [call] = merge([], [media(newer, worker="b"), media(older, worker="a")], NOW)
    assert call.media_id == "b" and call.path == "transcode"


# --- for people and machines -------------------------------------------------------------


def test_durations_read_as_clock_time() -> None:
    assert format_duration(None) == "-"
    assert format_duration(5.9) == "0:05"
    assert format_duration(65) == "1:05"
    assert format_duration(3723) == "1:02:03"


def test_the_table_has_a_header_and_one_aligned_line_per_call() -> None:
    listed = merge(
        [records.confirmed(outbound(), _dialog(), NOW - 60), outbound("c2", NOW - 3)],
        [media(measured())],
        NOW,
    )
    lines = format_table(listed).splitlines()
    assert lines[0].split() == [word for column in COLUMNS for word in column.split()]
    assert len(lines) == 3
    first = lines[1].split()
    assert first[:8] == [
        "c1",
        "alice",
        "out",
        "alice",
        "+15551234567",
        "default",
        "confirmed",
        "1:05",
    ]
    assert first[8:] == ["opus/PCMU", "transcode", "media-1", "1.0%/2.0%", "4.3/4.1"]
    # Unmeasured cells are dashes, and the columns line up.
    assert lines[2].split()[8:] == ["-", "-", "media-1", "-", "-"]
    assert lines[1].index("1:05") == lines[2].index("0:03")


def test_no_calls_is_said_plainly() -> None:
    assert format_table([]) == "no live calls"


def test_a_call_without_a_record_says_so_in_the_table() -> None:
    table = format_table(merge([], [media(measured("x"))], NOW))
    assert "(no record)" in table


def test_json_is_one_array_of_objects_with_both_legs() -> None:
    listed = merge([outbound()], [media(measured())], NOW)
    [item] = json.loads(to_json(listed))
    assert item["call_id"] == "c1"
    assert item["browser_codec"] == "opus" and item["trunk_codec"] == "PCMU"
    assert item["browser"]["mos"] == 4.3 and item["trunk_leg"]["codec"] == "PCMU"
    assert item["path"] == "transcode" and item["registered"] and item["measured"]
    assert to_json([]) == b"[]"
    assert set(item) == set(LiveCall.__struct_fields__)


# --- what media answers ---------------------------------------------------------------------


def test_media_answers_with_each_calls_latest_report() -> None:
    latest = LatestStats()
    report = CallStatsReported(call_id="c1", passthrough=False, browser=leg("opus"), trunk=None)
    latest.keep(report, 10.0)
    newer = CallStatsReported(
        call_id="c1", passthrough=False, browser=leg("opus", mos=3.0), trunk=leg("PCMA")
    )
    latest.keep(newer, 15.0)
    reply = latest.reply("media-1", ["c2", "c1"], 16.0)
    assert [c.call_id for c in reply.calls] == ["c1", "c2"]
    assert reply.calls[0].measured_at == 15.0 and reply.calls[0].trunk == leg("PCMA")
    assert reply.calls[1] == MediaCallStats(call_id="c2")  # not measured yet
    latest.forget("c1")
    assert latest.reply("media-1", ["c1"], 17.0).calls == [MediaCallStats(call_id="c1")]
    assert calls.decode_stats(calls.encode(reply)) == reply


def test_hangup_answers_round_trip_and_are_not_stats() -> None:
    answer = HangupAnswer(call_id="c1", signaling_id="sig-1")
    assert calls.decode_hangup(calls.encode(answer)) == answer
    try:
        calls.decode_stats(calls.encode(answer))
    except calls.DecodeError:
        pass
    else:
        raise AssertionError("a hangup answer decoded as stats")


# --- the operator's hangup in the browser session ---------------------------------------------


def test_operator_hangup_ends_a_connected_call_with_cause_operator() -> None:
    h = Harness()
    h.to_connected()
    assert h.session.end_by_operator(T0 + 1)
    actions = h.pull()
    assert [a.event for a in actions if isinstance(a, Publish)] == [
        HangupRequested(call_id="call1", cause=errors.OPERATOR)
    ]
    assert h.state() == State.HANGING_UP
    assert h.session.get_timer() == T0 + 1 + HANGUP_GRACE
    # The SIP agent's BYE went out; its CallEnded carries the cause to the browser.
    actions = h.event(CallEnded(call_id="call1", cause=errors.OPERATOR, reason="Hung up"))
    [ended] = [a.message for a in actions if isinstance(a, SendMessage)]
    assert ended["type"] == "ended" and ended["cause"] == "operator"
    assert h.state() == State.IDLE
    assert not h.session.end_by_operator(T0 + 2)


def test_operator_hangup_without_an_answer_from_the_sip_agent_still_ends() -> None:
    h = Harness()
    h.to_connected()
    h.session.end_by_operator(T0)
    h.pull()
    actions = h.timer(T0 + HANGUP_GRACE)
    [ended] = [a.message for a in actions if isinstance(a, SendMessage)]
    assert ended["cause"] == "operator"


def test_operator_hangup_of_an_idle_session_does_nothing() -> None:
    h = Harness()
    assert not h.session.end_by_operator(T0)
    assert h.pull() == []


def test_the_session_names_its_identity_for_the_record() -> None:
    claims = Claims(sub="alice", expires_at=T0 + 3600)
    assert Harness(caller=Caller(claims=claims)).session.identity == "alice"
    assert Harness().session.identity == ""


# --- who may ask ------------------------------------------------------------------------------


def test_the_operator_reads_the_registry_asks_media_and_hangs_up_but_writes_nothing() -> None:
    admin = nats_access.ADMIN
    assert nats_access.may_publish(admin, subjects.call_stats_query())
    assert nats_access.may_publish(admin, subjects.operator_hangup())
    assert nats_access.may_publish(admin, "$JS.API.STREAM.INFO.KV_bridge_calls")
    assert nats_access.may_publish(
        admin, "$JS.API.CONSUMER.CREATE.KV_bridge_calls.watcher.$KV.bridge_calls.>"
    )
    assert not nats_access.may_publish(admin, "$KV.bridge_calls.c1")
    assert not nats_access.may_publish(admin, "$JS.API.STREAM.CREATE.KV_bridge_calls")
    assert nats_access.may_subscribe("media", subjects.call_stats_query())
    assert nats_access.may_subscribe("signaling", subjects.operator_hangup())
    assert nats_access.may_publish("signaling", subjects.call_stats_query())  # GET /calls
    for user in ("media", "sipagent"):
        assert not nats_access.may_publish(user, subjects.operator_hangup())
    for user in ("signaling", "sipagent", "admin"):
        assert not nats_access.may_subscribe(user, subjects.call_stats_query())
