"""Drives a BrowserSession by hand: frames, bus events and a fake clock."""

from __future__ import annotations

import json
from typing import Any

from proto import subjects
from proto.events import (
    AnyEvent,
    CallAnswered,
    InviteSent,
    MediaPrepared,
)
from services.common.settings import Settings
from services.signaling.actions import (
    Action,
    Admit,
    Audit,
    Publish,
    Release,
    SendMessage,
)
from services.signaling.caller import Caller
from services.signaling.session import BrowserSession
from services.signaling.states import State

SETTINGS = Settings(
    instance_id="sig-1", default_destination="", setup_timeout=10.0, invite_timeout=60.0
)
OFFER_SDP = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n"
T0 = 1000.0


class Harness:
    """A session plus the actions it produced, split by kind."""

    def __init__(self, settings: Settings = SETTINGS, caller: Caller | None = None) -> None:
        ids = iter(f"call{n}" for n in range(1, 100))
        self.session = BrowserSession(settings, make_call_id=lambda: next(ids), caller=caller)
        self.actions: list[Action] = []
        self.audits: list[dict[str, object]] = []
        "The audit records, apart from the actions."
        self.releases: list[Release] = []
        "The limits' places given back, apart from the actions."
        self.refusal: str | None = None
        "What the limits answer each ``Admit`` (None: admitted)."
        self.now = T0

    def state(self) -> State:
        return self.session.state

    def pull(self) -> list[Action]:
        pending = self.session.pop_actions()
        actions: list[Action] = []
        while pending:
            action = pending.pop(0)
            if isinstance(action, Admit):
                # The adapter answers at once, as the connection does.
                self.session.admitted(action.call_id, self.refusal, self.now)
                pending[:0] = self.session.pop_actions()
            elif isinstance(action, Audit):
                self.audits.append(action.record)
            elif isinstance(action, Release):
                self.releases.append(action)
            else:
                actions.append(action)
        self.actions.extend(actions)
        return actions

    def text(self, message: dict[str, Any] | str, now: float = T0) -> list[Action]:
        raw = message if isinstance(message, str) else json.dumps(message)
        self.now = now
        self.session.receive_text(raw, now)
        return self.pull()

    def event(self, event: AnyEvent, now: float = T0) -> list[Action]:
        self.now = now
        self.session.handle_event(event, now)
        return self.pull()

    def timer(self, now: float) -> list[Action]:
        self.now = now
        self.session.handle_timer(now)
        return self.pull()

    def offer(self, destination: str | None = "+15551234567", now: float = T0) -> list[Action]:
        message: dict[str, Any] = {"type": "offer", "sdp": OFFER_SDP}
        if destination is not None:
            message["destination"] = destination
        return self.text(message, now)

    def prepared(self, call_id: str = "call1", now: float = T0) -> list[Action]:
        return self.event(
            MediaPrepared(
                call_id=call_id,
                media_id="media-1",
                answer_sdp="v=0 answer",
                trunk_offer_sdp="v=0 t",
            ),
            now,
        )

    def invite_sent(self, call_id: str = "call1", now: float = T0) -> list[Action]:
        return self.event(
            InviteSent(call_id=call_id, sipagent_id="sip-1", request_uri="sip:x@trunk"), now
        )

    def to_connected(self) -> None:
        self.offer()
        self.prepared()
        self.invite_sent()
        self.event(CallAnswered(call_id="call1", answer_sdp="v=0 trunk"))
        self.pull()


def sent(actions: list[Action]) -> list[dict[str, object]]:
    return [a.message for a in actions if isinstance(a, SendMessage)]


def published(actions: list[Action]) -> list[tuple[str, AnyEvent]]:
    return [(a.subject, a.event) for a in actions if isinstance(a, Publish)]


def error_codes(actions: list[Action]) -> list[object]:
    return [m["code"] for m in sent(actions) if m["type"] == "error"]


SIGNALING = subjects.call_events("call1", "signaling")
MEDIA = subjects.call_events("call1", "media")
SIPAGENT = subjects.call_events("call1", "sipagent")
