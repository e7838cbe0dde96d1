"""BrowserSession: routes and custom headers are checked before any work is published."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from proto import errors
from proto.events import CallEnded, CallRequested, DialRequested
from services.common.providers import Providers, Route, Trunk
from services.signaling.states import State

from .harness import OFFER_SDP, SETTINGS, Harness, error_codes, published, sent

SUPPORT = Trunk(name="support", host="sip.provider1.test", headers=(("X-Customer", "acme"),))
AI = Trunk(name="ai", host="sip.ai.test", allow_headers=("X-Agent-Context",))
PROVIDERS = Providers(
    trunks={"support": SUPPORT, "ai": AI},
    routes=(
        Route(match="support", trunk="support"),
        Route(match="ai_assistant", trunk="ai", user="agent"),
    ),
)
ROUTED = replace(SETTINGS, providers_config=PROVIDERS)
CONTEXT = {"user_id": "12345", "language": "en", "context": "customer_support"}


def offer(h: Harness, destination: str, headers: Any = None) -> list[Any]:
    message: dict[str, Any] = {"type": "offer", "sdp": OFFER_SDP, "destination": destination}
    if headers is not None:
        message["headers"] = headers
    return h.text(message)


def test_unknown_destination_publishes_nothing() -> None:
    h = Harness(ROUTED)
    actions = offer(h, "sales")
    assert error_codes(actions) == [errors.UNKNOWN_DESTINATION]
    assert published(actions) == []
    assert h.state() == State.IDLE and h.session.call_id is None


def test_headers_travel_in_call_and_dial_requested() -> None:
    h = Harness(ROUTED)
    actions = offer(h, "ai_assistant", {"X-Agent-Context": CONTEXT})
    ((_, request),) = published(actions)
    assert isinstance(request, CallRequested)
    assert request.headers == {"X-Agent-Context": json.dumps(CONTEXT, separators=(",", ":"))}
    # The destination stays as the browser gave it: the SIP agent routes again.
    assert request.destination == "ai_assistant"
    ((_, dial),) = published(h.prepared())
    assert isinstance(dial, DialRequested) and dial.headers == request.headers


def test_headers_the_route_does_not_allow_are_refused() -> None:
    h = Harness(ROUTED)
    assert error_codes(offer(h, "ai_assistant", {"X-Other": "1"})) == [errors.BAD_HEADERS]
    # A trunk's static header is not the browser's to replace.
    assert error_codes(offer(h, "support", {"X-Customer": "evil"})) == [errors.BAD_HEADERS]
    assert error_codes(offer(h, "support", {"Via": "x"})) == [errors.BAD_HEADERS]
    assert h.state() == State.IDLE


def test_header_injection_is_refused_with_bad_headers() -> None:
    h = Harness(ROUTED)
    for headers in (
        {"X-Agent-Context": "a\r\nVia: SIP/2.0/UDP evil"},
        {"X-Agent-Context\r\nVia": "x"},
        {"X-Agent-Context": "nul\u0000"},
        ["X-Agent-Context"],
    ):
        actions = offer(h, "ai_assistant", headers)
        assert error_codes(actions) == [errors.BAD_HEADERS], headers
        assert published(actions) == []
        assert "evil" not in json.dumps(sent(actions))


def test_without_a_providers_file_any_x_header_goes() -> None:
    h = Harness()
    actions = offer(h, "+15551234567", {"X-Anything": "ok"})
    ((_, request),) = published(actions)
    assert isinstance(request, CallRequested) and request.headers == {"X-Anything": "ok"}


def test_sip_agent_refusal_with_a_code_reaches_the_browser() -> None:
    h = Harness()
    h.offer()
    h.prepared()
    actions = h.event(
        CallEnded(
            call_id="call1",
            cause=errors.REJECTED,
            reason="Unknown destination",
            code=errors.UNKNOWN_DESTINATION,
        )
    )
    kinds = [m["type"] for m in sent(actions)]
    assert kinds == ["error", "ended"]
    assert error_codes(actions) == [errors.UNKNOWN_DESTINATION]
