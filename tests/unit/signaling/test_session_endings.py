"""BrowserSession: set-up failures, hang-ups, socket loss, ICE and stopping."""

from __future__ import annotations

from proto import errors
from proto.events import (
    CallEnded,
    HangupRequested,
    IceCandidateReceived,
    MediaFailed,
    ProgressReceived,
)
from services.signaling import messages
from services.signaling.actions import (
    Close,
    Publish,
    Unsubscribe,
)
from services.signaling.states import State
from services.signaling.timers import HANGUP_GRACE, SHUTDOWN_GRACE

from .harness import (
    MEDIA,
    SIGNALING,
    SIPAGENT,
    T0,
    Harness,
    error_codes,
    published,
    sent,
)

# --- set-up failures ----------------------------------------------------------------


def test_no_media_worker() -> None:
    h = Harness()
    h.offer()
    assert h.timer(T0 + 9.9) == []
    actions = h.timer(T0 + 10)
    assert sent(actions) == [
        {"type": "error", "code": "no_media_worker", "message": "no media worker took the call"},
        {
            "type": "ended",
            "status": None,
            "reason": "no media worker took the call",
            "cause": "setup_failed",
        },
    ]
    assert published(actions) == [
        (
            SIGNALING,
            CallEnded(
                call_id="call1", cause=errors.SETUP_FAILED, reason="no media worker took the call"
            ),
        )
    ]
    assert Unsubscribe(MEDIA) in actions
    assert Unsubscribe(SIPAGENT) in actions
    assert h.state() == State.IDLE
    assert h.session.get_timer() is None


def test_no_sip_agent() -> None:
    h = Harness()
    h.offer()
    h.prepared(now=T0 + 1)
    actions = h.timer(T0 + 11)
    assert error_codes(actions) == [errors.NO_SIP_AGENT]
    assert sent(actions)[-1]["type"] == "ended"
    ((subject, event),) = published(actions)
    assert subject == SIGNALING
    assert isinstance(event, CallEnded)
    assert event.cause == errors.SETUP_FAILED
    assert h.state() == State.IDLE


def test_media_failed_code_is_passed_through() -> None:
    h = Harness()
    h.offer()
    actions = h.event(MediaFailed(call_id="call1", code=errors.NO_COMMON_CODEC, reason="no codec"))
    assert sent(actions) == [
        {"type": "error", "code": "no_common_codec", "message": "no codec"},
        {"type": "ended", "status": None, "reason": "no codec", "cause": "media_failed"},
    ]
    ((subject, event),) = published(actions)
    assert subject == SIGNALING
    assert isinstance(event, CallEnded)
    assert event.cause == errors.MEDIA_FAILED
    assert h.state() == State.IDLE


def test_media_failed_during_call_hangs_up() -> None:
    h = Harness()
    h.to_connected()
    actions = h.event(MediaFailed(call_id="call1", code=errors.MEDIA_FAILED, reason="ICE failed"))
    assert error_codes(actions) == [errors.MEDIA_FAILED]
    assert published(actions) == [
        (SIGNALING, HangupRequested(call_id="call1", cause=errors.MEDIA_FAILED))
    ]
    assert h.state() == State.HANGING_UP


def test_hangup_requested_by_media_waits_for_call_ended() -> None:
    h = Harness()
    h.to_connected()
    actions = h.event(HangupRequested(call_id="call1", cause=errors.MEDIA_FAILED))
    assert actions == []
    assert h.state() == State.HANGING_UP
    assert h.session.get_timer() == T0 + HANGUP_GRACE
    actions = h.event(CallEnded(call_id="call1", cause=errors.MEDIA_FAILED, reason="ICE failed"))
    assert sent(actions)[0]["type"] == "ended"
    assert h.state() == State.IDLE


def test_safety_timer_after_invite() -> None:
    h = Harness()
    h.offer()
    h.prepared()
    h.invite_sent()
    h.event(ProgressReceived(call_id="call1", status=180))
    assert h.timer(T0 + 69) == []
    actions = h.timer(T0 + 70)
    assert published(actions) == [
        (SIGNALING, HangupRequested(call_id="call1", cause=errors.TIMEOUT))
    ]
    actions = h.timer(T0 + 70 + HANGUP_GRACE)
    assert published(actions) == [
        (SIGNALING, CallEnded(call_id="call1", cause=errors.TIMEOUT, reason="No answer"))
    ]
    assert sent(actions) == [
        {"type": "ended", "status": None, "reason": "No answer", "cause": "timeout"}
    ]
    assert h.state() == State.IDLE


# --- hang-up and socket loss ----------------------------------------------------------


def test_hangup_before_answer_is_cancelled() -> None:
    h = Harness()
    h.offer()
    h.prepared()
    h.invite_sent()
    actions = h.text({"type": "hangup"}, T0 + 1)
    assert published(actions) == [
        (SIGNALING, HangupRequested(call_id="call1", cause=errors.CANCELLED))
    ]
    assert h.state() == State.HANGING_UP
    assert h.session.get_timer() == T0 + 1 + HANGUP_GRACE
    # A second hang-up while hanging up changes nothing.
    assert h.text({"type": "hangup"}, T0 + 2) == []
    actions = h.event(
        CallEnded(call_id="call1", cause=errors.CANCELLED, status=487, reason="Cancelled")
    )
    assert sent(actions) == [
        {"type": "ended", "status": 487, "reason": "Cancelled", "cause": "cancelled"}
    ]
    assert published(actions) == []
    assert h.state() == State.IDLE


def test_hangup_after_answer_is_normal() -> None:
    h = Harness()
    h.to_connected()
    actions = h.text({"type": "hangup"})
    assert published(actions) == [(SIGNALING, HangupRequested(call_id="call1", cause="normal"))]
    h.event(CallEnded(call_id="call1", cause=errors.NORMAL))
    assert h.state() == State.IDLE


def test_hangup_without_sip_agent_ends_the_call_itself() -> None:
    h = Harness()
    h.offer()
    h.text({"type": "hangup"}, T0 + 1)
    actions = h.timer(T0 + 1 + HANGUP_GRACE)
    assert published(actions) == [
        (SIGNALING, CallEnded(call_id="call1", cause=errors.CANCELLED, reason="Call cancelled"))
    ]
    assert sent(actions) == [
        {"type": "ended", "status": None, "reason": "Call cancelled", "cause": "cancelled"}
    ]
    assert Unsubscribe(MEDIA) in actions
    assert h.state() == State.IDLE
    # Media answering late is ignored.
    assert h.prepared() == []


def test_socket_closed_while_idle() -> None:
    h = Harness()
    h.session.socket_closed(T0)
    assert h.pull() == []
    assert h.state() == State.CLOSED


def test_socket_closed_before_answer() -> None:
    h = Harness()
    h.offer()
    h.prepared()
    h.session.socket_closed(T0 + 1)
    actions = h.pull()
    assert actions == [Publish(SIGNALING, HangupRequested(call_id="call1", cause="browser_gone"))]
    assert h.state() == State.HANGING_UP
    # Nothing answers: the session ends the call itself, quietly.
    actions = h.timer(T0 + 1 + HANGUP_GRACE)
    assert sent(actions) == []
    assert published(actions) == [
        (
            SIGNALING,
            CallEnded(call_id="call1", cause=errors.BROWSER_GONE, reason="Browser disconnected"),
        )
    ]
    assert Unsubscribe(SIPAGENT) in actions
    assert h.state() == State.CLOSED
    assert h.session.get_timer() is None


def test_socket_closed_after_answer() -> None:
    h = Harness()
    h.to_connected()
    h.session.socket_closed(T0 + 5)
    assert published(h.pull()) == [
        (SIGNALING, HangupRequested(call_id="call1", cause=errors.BROWSER_GONE))
    ]
    actions = h.event(CallEnded(call_id="call1", cause=errors.BROWSER_GONE))
    assert sent(actions) == []
    assert actions == [Unsubscribe(MEDIA), Unsubscribe(SIPAGENT)]
    assert h.state() == State.CLOSED


def test_messages_after_close_are_ignored() -> None:
    h = Harness()
    h.session.socket_closed(T0)
    assert h.offer() == []


# --- ICE candidates --------------------------------------------------------------------

CANDIDATE = {
    "type": "ice",
    "candidate": "candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host",
    "sdpMid": "0",
    "sdpMLineIndex": 0,
}


def test_ice_before_offer_is_ignored() -> None:
    h = Harness()
    assert h.text(CANDIDATE) == []


def test_ice_is_buffered_until_media_took_the_call() -> None:
    h = Harness()
    h.offer()
    assert h.text(CANDIDATE) == []
    assert h.text({"type": "ice", "candidate": None}) == []
    actions = h.prepared()
    assert published(actions)[1:] == [
        (
            SIGNALING,
            IceCandidateReceived(
                call_id="call1",
                candidate=str(CANDIDATE["candidate"]),
                sdp_mid="0",
                sdp_mline_index=0,
            ),
        ),
        (SIGNALING, IceCandidateReceived(call_id="call1", candidate="")),
    ]


def test_ice_is_forwarded_once_media_took_the_call() -> None:
    h = Harness()
    h.offer()
    h.prepared()
    actions = h.text(CANDIDATE)
    ((subject, event),) = published(actions)
    assert subject == SIGNALING
    assert isinstance(event, IceCandidateReceived)
    assert event.sdp_mid == "0"


# --- stopping ---------------------------------------------------------------------------


def test_shutdown_while_idle_closes() -> None:
    h = Harness()
    h.session.shutdown(T0)
    assert h.pull() == [Close(1001, "server shutting down")]
    assert h.state() == State.CLOSED


def test_shutdown_during_a_call_hangs_up_then_closes() -> None:
    h = Harness()
    h.to_connected()
    h.session.shutdown(T0)
    assert published(h.pull()) == [(SIGNALING, HangupRequested(call_id="call1", cause="normal"))]
    assert h.session.get_timer() == T0 + SHUTDOWN_GRACE
    assert error_codes(h.offer()) == [messages.CALL_IN_PROGRESS]
    actions = h.event(CallEnded(call_id="call1", cause=errors.NORMAL))
    assert sent(actions)[0]["type"] == "ended"
    assert actions[-1] == Close(1001, "server shutting down")
    assert h.state() == State.CLOSED


def test_shutdown_shortens_a_pending_hangup() -> None:
    h = Harness()
    h.offer()
    h.text({"type": "hangup"})
    h.session.shutdown(T0 + 1)
    assert h.session.get_timer() == T0 + 1 + SHUTDOWN_GRACE
    actions = h.timer(T0 + 1 + SHUTDOWN_GRACE)
    assert isinstance(published(actions)[0][1], CallEnded)
    assert actions[-1] == Close(1001, "server shutting down")


def test_hangup_is_repeated_to_a_sip_agent_that_took_the_call_late() -> None:
    h = Harness()
    h.offer()
    h.prepared()
    # The browser hangs up before any SIP agent has subscribed to the call.
    h.text({"type": "hangup"}, T0 + 0.1)
    actions = h.invite_sent(now=T0 + 0.2)
    assert published(actions) == [
        (SIGNALING, HangupRequested(call_id="call1", cause=errors.CANCELLED))
    ]
    assert h.state() == State.HANGING_UP
