"""Hold and DTMF in a call: what the browser may ask, what goes on the bus, what it is told."""

from __future__ import annotations

import json

import pytest

from proto import errors
from proto.events import (
    CallAnswered,
    CallEnded,
    CallStatsReported,
    DtmfReceived,
    DtmfRequested,
    HoldFailed,
    HoldRequested,
    LegQuality,
    ProgressReceived,
    SessionUpdated,
)
from services.signaling.messages import Dtmf, Hold, MessageError, parse_message

from .harness import SIGNALING, Harness, error_codes, published, sent

TRUNK_SDP = "v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 0\r\n"


def connected() -> Harness:
    h = Harness()
    h.to_connected()
    return h


def updated(**fields: object) -> SessionUpdated:
    return SessionUpdated(call_id="call1", remote_sdp=TRUNK_SDP, **fields)  # type: ignore[arg-type]


# --- parsing -----------------------------------------------------------------------


def test_parse_hold_unhold_dtmf() -> None:
    assert parse_message('{"type":"hold"}') == Hold(held=True)
    assert parse_message('{"type":"unhold"}') == Hold(held=False)
    assert parse_message('{"type":"dtmf","digits":"12#*ABCD0"}') == Dtmf("12#*ABCD0")
    assert parse_message('{"type":"dtmf","digits":"a"}') == Dtmf("A")
    assert parse_message(json.dumps({"type": "dtmf", "digits": "9" * 32})) == Dtmf("9" * 32)


@pytest.mark.parametrize("digits", ["", "9" * 33, "12E", "1 2", "12\n", "½", 5, None, ["1"], "#!"])
def test_bad_dtmf(digits: object) -> None:
    with pytest.raises(MessageError) as info:
        parse_message(json.dumps({"type": "dtmf", "digits": digits}))
    assert info.value.code == errors.BAD_DTMF


# --- browser → bus ---------------------------------------------------------------------


def test_dtmf_and_hold_are_published_on_the_signaling_call_subject() -> None:
    h = connected()
    assert published(h.text({"type": "dtmf", "digits": "12#"})) == [
        (SIGNALING, DtmfRequested(call_id="call1", digits="12#"))
    ]
    assert published(h.text({"type": "hold"})) == [
        (SIGNALING, HoldRequested(call_id="call1", held=True))
    ]
    # Hold while held (or on its way) is a no-op; resume goes out.
    assert h.text({"type": "hold"}) == []
    assert published(h.text({"type": "unhold"})) == [
        (SIGNALING, HoldRequested(call_id="call1", held=False))
    ]
    assert h.text({"type": "unhold"}) == []


def test_not_connected_before_the_answer_and_after_the_end() -> None:
    h = Harness()
    assert error_codes(h.text({"type": "dtmf", "digits": "1"})) == [errors.NOT_CONNECTED]
    h.offer()
    h.prepared()
    h.invite_sent()
    h.event(ProgressReceived(call_id="call1", status=180))
    for message in ({"type": "hold"}, {"type": "unhold"}, {"type": "dtmf", "digits": "1"}):
        actions = h.text(message)
        assert error_codes(actions) == [errors.NOT_CONNECTED] and published(actions) == []
    h.event(CallEnded(call_id="call1", cause=errors.NORMAL))
    assert error_codes(h.text({"type": "hold"})) == [errors.NOT_CONNECTED]


def test_bad_dtmf_during_a_call_publishes_nothing() -> None:
    h = connected()
    actions = h.text({"type": "dtmf", "digits": "12x"})
    assert error_codes(actions) == [errors.BAD_DTMF] and published(actions) == []


# --- bus → browser -----------------------------------------------------------------------


def test_hold_changed_only_when_the_flags_change() -> None:
    h = connected()
    h.text({"type": "hold"})
    assert sent(h.event(updated(local_hold=True))) == [
        {"type": "hold_changed", "local": True, "remote": False}
    ]
    assert sent(h.event(updated(local_hold=True))) == []  # a refresh: nothing new
    assert sent(h.event(updated(local_hold=True, remote_hold=True))) == [
        {"type": "hold_changed", "local": True, "remote": True}
    ]
    assert sent(h.event(updated())) == [{"type": "hold_changed", "local": False, "remote": False}]


def test_transfer_is_told_once() -> None:
    h = connected()
    assert sent(h.event(updated(transferred_to="sip:bob@example.com"))) == [
        {"type": "transferred", "target": "sip:bob@example.com"}
    ]
    assert sent(h.event(updated(transferred_to="sip:bob@example.com"))) == []


def test_received_dtmf_goes_to_the_browser() -> None:
    h = connected()
    assert sent(h.event(DtmfReceived(call_id="call1", digit="5", method="rfc4733"))) == [
        {"type": "dtmf", "digit": "5", "method": "rfc4733"}
    ]
    assert sent(h.event(DtmfReceived(call_id="call1", digit="#", method="info"))) == [
        {"type": "dtmf", "digit": "#", "method": "info"}
    ]
    # Another call's digits are not this browser's business.
    assert h.event(DtmfReceived(call_id="call9", digit="1", method="info")) == []


def test_hold_failed_is_an_error_and_hold_may_be_asked_again() -> None:
    h = connected()
    h.text({"type": "hold"})
    messages = sent(h.event(HoldFailed(call_id="call1", held=True, status=488, reason="")))
    assert [m["code"] for m in messages] == [errors.HOLD_FAILED]
    assert "488" in str(messages[0]["message"])
    assert published(h.text({"type": "hold"})) == [
        (SIGNALING, HoldRequested(call_id="call1", held=True))
    ]
    timeout = sent(h.event(HoldFailed(call_id="call1", held=True)))
    assert "no answer" in str(timeout[0]["message"])


def test_a_trunk_hold_does_not_stop_the_browser_from_holding() -> None:
    h = connected()
    h.event(updated(remote_hold=True))
    assert published(h.text({"type": "hold"})) == [
        (SIGNALING, HoldRequested(call_id="call1", held=True))
    ]


def test_a_new_call_starts_unheld() -> None:
    h = connected()
    h.text({"type": "hold"})
    h.event(updated(local_hold=True))
    h.event(CallEnded(call_id="call1", cause=errors.NORMAL))
    h.offer()
    h.prepared(call_id="call2")
    h.invite_sent(call_id="call2")
    h.event(CallAnswered(call_id="call2", answer_sdp="v=0"))
    actions = h.text({"type": "hold"})
    assert [e for _, e in published(actions)] == [HoldRequested(call_id="call2", held=True)]


def _leg(codec: str) -> LegQuality:
    return LegQuality(
        codec=codec,
        packets_in=250,
        packets_out=250,
        lost=3,
        loss=0.012,
        jitter_ms=2.5,
        rtt_ms=41.0,
        remote_loss=0.0,
        mos=4.31,
    )


def test_call_quality_reaches_the_page_while_connected() -> None:
    h = connected()
    report = CallStatsReported(
        call_id="call1", passthrough=True, browser=_leg("PCMU"), trunk=_leg("PCMU")
    )
    (message,) = sent(h.event(report))
    assert message["type"] == "stats" and message["passthrough"] is True
    assert message["trunk"] == {
        "codec": "PCMU",
        "mos": 4.31,
        "loss": 0.012,
        "jitter_ms": 2.5,
        "rtt_ms": 41.0,
    }
    # Before the trunk's SDP, no trunk leg; before connected, nothing at all.
    early = CallStatsReported(call_id="call1", passthrough=False, browser=_leg("opus"))
    assert "trunk" not in sent(h.event(early))[0]
    ringing = Harness()
    ringing.offer()
    ringing.prepared()
    ringing.invite_sent()
    assert sent(ringing.event(early)) == []
