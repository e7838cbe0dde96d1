"""BrowserSession: the call flow, destinations and refused messages."""

from __future__ import annotations

from dataclasses import replace

import pytest

from proto import errors, subjects
from proto.events import (
    CallAnswered,
    CallEnded,
    CallRequested,
    DialRequested,
    MediaConnected,
    ProgressReceived,
)
from services.signaling import messages
from services.signaling.actions import (
    Publish,
    SendMessage,
    Subscribe,
    Unsubscribe,
)
from services.signaling.states import State

from .harness import (
    MEDIA,
    OFFER_SDP,
    SETTINGS,
    SIPAGENT,
    T0,
    Harness,
    error_codes,
    published,
    sent,
)

# --- the happy path -------------------------------------------------------------


def test_happy_path() -> None:
    h = Harness()
    actions = h.offer()
    assert actions == [
        Subscribe(MEDIA),
        Subscribe(SIPAGENT),
        Publish(
            subjects.media_work(),
            CallRequested(
                call_id="call1",
                offer_sdp=OFFER_SDP,
                destination="+15551234567",
                signaling_id="sig-1",
                trunk="default",  # the route's trunk: media shapes its offer to it
            ),
        ),
    ]
    assert h.state() == State.WAITING_MEDIA
    assert h.session.call_id == "call1"
    assert h.session.get_timer() == T0 + 10.0

    actions = h.prepared(now=T0 + 1)
    assert actions == [
        SendMessage({"type": "answer", "sdp": "v=0 answer"}),
        Publish(
            subjects.sipagent_work(),
            DialRequested(
                call_id="call1",
                destination="+15551234567",
                offer_sdp="v=0 t",
                media_id="media-1",
                signaling_id="sig-1",
            ),
        ),
    ]
    assert h.state() == State.WAITING_INVITE
    assert h.session.get_timer() == T0 + 11.0

    assert h.invite_sent(now=T0 + 2) == []
    assert h.state() == State.INVITING
    assert h.session.get_timer() == T0 + 2 + 70.0

    actions = h.event(ProgressReceived(call_id="call1", status=180), T0 + 3)
    assert sent(actions) == [{"type": "ringing"}]
    assert h.state() == State.RINGING
    assert h.session.get_timer() == T0 + 72.0

    assert h.event(MediaConnected(call_id="call1"), T0 + 3.5) == []

    actions = h.event(CallAnswered(call_id="call1", answer_sdp="v=0 trunk"), T0 + 4)
    assert sent(actions) == [{"type": "connected"}]
    assert h.state() == State.CONNECTED
    assert h.session.get_timer() == T0 + 4 + 4 * 3600  # MAX_CALL_DURATION

    actions = h.event(
        CallEnded(call_id="call1", cause=errors.REMOTE_HANGUP, status=None, reason="Bye"), T0 + 60
    )
    assert actions == [
        SendMessage({"type": "ended", "status": None, "reason": "Bye", "cause": "remote_hangup"}),
        Unsubscribe(MEDIA),
        Unsubscribe(SIPAGENT),
    ]
    assert h.state() == State.IDLE
    assert h.session.call_id is None
    assert h.session.get_timer() is None


def test_early_media_flag() -> None:
    h = Harness()
    h.offer()
    h.prepared()
    h.invite_sent()
    actions = h.event(ProgressReceived(call_id="call1", status=183, early_sdp="v=0 early"))
    assert sent(actions) == [{"type": "ringing", "early_media": True}]


def test_183_without_sdp_then_180_keeps_ringing() -> None:
    h = Harness()
    h.offer()
    h.prepared()
    h.invite_sent()
    actions = h.event(ProgressReceived(call_id="call1", status=183))
    assert sent(actions) == [{"type": "ringing"}]
    assert h.state() == State.RINGING
    timer = h.session.get_timer()
    actions = h.event(ProgressReceived(call_id="call1", status=180))
    assert sent(actions) == [{"type": "ringing"}]
    assert h.state() == State.RINGING
    # Another provisional response does not push the safety timer out.
    assert h.session.get_timer() == timer
    actions = h.event(CallAnswered(call_id="call1", answer_sdp="v=0 trunk"))
    assert sent(actions) == [{"type": "connected"}]


def test_rejected_call_reports_status() -> None:
    h = Harness()
    h.offer()
    h.prepared()
    h.invite_sent()
    actions = h.event(
        CallEnded(call_id="call1", cause=errors.REJECTED, status=486, reason="Busy Here")
    )
    assert sent(actions) == [
        {"type": "ended", "status": 486, "reason": "Busy Here", "cause": "rejected"}
    ]
    assert published(actions) == []  # The SIP agent already said CallEnded.
    assert h.state() == State.IDLE


def test_new_call_after_first_ended() -> None:
    h = Harness()
    h.to_connected()
    h.event(CallEnded(call_id="call1", cause=errors.REMOTE_HANGUP))
    actions = h.offer()
    assert Subscribe(subjects.call_events("call2", "media")) in actions
    assert h.session.call_id == "call2"
    # A late event of the old call changes nothing.
    assert h.prepared(call_id="call1") == []
    assert h.state() == State.WAITING_MEDIA
    assert sent(h.prepared(call_id="call2"))[0]["type"] == "answer"


# --- destinations ---------------------------------------------------------------


def test_default_destination_is_used() -> None:
    h = Harness(replace(SETTINGS, default_destination="support"))
    (_, event), *_ = published(h.offer(destination=None))
    assert isinstance(event, CallRequested)
    assert event.destination == "support"


def test_given_destination_wins_over_default() -> None:
    h = Harness(replace(SETTINGS, default_destination="support"))
    (_, event), *_ = published(h.offer(destination="ai_assistant"))
    assert isinstance(event, CallRequested)
    assert event.destination == "ai_assistant"


def test_no_destination() -> None:
    h = Harness()
    assert error_codes(h.offer(destination=None)) == [messages.NO_DESTINATION]
    assert error_codes(h.offer(destination="")) == [messages.NO_DESTINATION]
    assert h.state() == State.IDLE


@pytest.mark.parametrize(
    "destination", ["bob@evil.example", "a b", "x" * 65, "sip:", "*6719005551234"]
)
def test_bad_destination(destination: str) -> None:
    h = Harness()
    actions = h.offer(destination=destination)
    assert error_codes(actions) == [messages.BAD_DESTINATION]
    assert published(actions) == []
    assert h.state() == State.IDLE


def test_demo_mode_calls_echo_whatever_the_destination() -> None:
    h = Harness(replace(SETTINGS, demo=True))
    (_, event), *_ = published(h.offer(destination=None))
    assert isinstance(event, CallRequested)
    assert event.destination == "echo"
    h.event(CallEnded(call_id="call1", cause=errors.NORMAL))
    (_, event), *_ = published(h.offer(destination="not valid at all"))
    assert isinstance(event, CallRequested)
    assert event.destination == "echo"


# --- refused messages -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("{oops", messages.BAD_JSON),
        ("[]", messages.BAD_MESSAGE),
        ('{"type":"offer","destination":"1"}', messages.BAD_MESSAGE),
        ('{"type":"offer","sdp":"o=- 1"}', messages.BAD_MESSAGE),
        ('{"type":"bye"}', messages.UNKNOWN_TYPE),
        ('{"type":"offer","sdp":"v=0' + "x" * 70000 + '"}', messages.TOO_LARGE),
    ],
)
def test_refused_messages_keep_the_session_usable(text: str, code: str) -> None:
    h = Harness()
    actions = h.text(text)
    assert error_codes(actions) == [code]
    assert len(actions) == 1
    assert h.state() == State.IDLE
    assert h.session.call_id is None
    assert published(h.offer()) != []


def test_binary_frame_is_refused() -> None:
    h = Harness()
    h.session.receive_binary(T0)
    assert error_codes(h.pull()) == [messages.BAD_MESSAGE]


def test_second_offer_during_a_call() -> None:
    h = Harness()
    h.offer()
    actions = h.offer()
    assert error_codes(actions) == [messages.CALL_IN_PROGRESS]
    assert published(actions) == []
    assert h.session.call_id == "call1"
    h.prepared()
    assert error_codes(h.offer()) == [messages.CALL_IN_PROGRESS]
    assert h.state() == State.WAITING_INVITE


def test_hangup_without_a_call() -> None:
    h = Harness()
    assert error_codes(h.text({"type": "hangup"})) == [messages.NO_CALL]
