"""BrowserSession: the dial plan, the limits' answer, the time limit, floods and the audit."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from proto import errors
from proto.events import CallEnded, CallRequested, HangupRequested
from services.common.access import load_access
from services.common.dialplan import parse_patterns
from services.common.providers import parse_providers
from services.signaling import messages
from services.signaling.caller import Caller
from services.signaling.states import State
from services.signaling.tokens import Claims

from .harness import SETTINGS, SIGNALING, T0, Harness, error_codes, published, sent

ALICE = Claims(
    sub="alice",
    expires_at=2e9,
    dst=("+1*", "support-line"),
    dst_patterns=parse_patterns(["+1*"]),
)
PROVIDERS = parse_providers(
    {
        "trunks": {
            "carrier": {"host": "sip.carrier.test", "deny": ["+1 976*"]},
            "pbx": {"host": "pbx.test", "allow": ["support", "sales"]},
        },
        "routes": [
            {"match": "support", "trunk": "pbx", "name": "support-line"},
            {"match": "ops", "trunk": "pbx"},
            {"match": "^\\+44", "pattern": True, "trunk": "carrier", "deny": ["+44 9*"]},
            {"match": "^\\+1", "pattern": True, "trunk": "carrier", "allow": ["+1 555*"]},
        ],
    },
    {},
)
RULES = replace(
    SETTINGS,
    providers_config=PROVIDERS,
    access=load_access({"DIAL_DENY": "+1900, +882"}, "127.0.0.1"),
)


def refused_with(h: Harness, destination: str) -> list[object]:
    actions = h.offer(destination)
    assert published(actions) == []
    assert h.state() == State.IDLE
    return error_codes(actions)


OUTSIDE_DST = [
    "+44 20 7946 0958",
    "0044 20 7946 0958",
    "011-44-20-7946-0958",
    "%2B442079460958",
    "tel:+44-20-7946-0958",
    "sip:+442079460958@x;user=phone",
    "＋４４２０７９４６０９５８",
    "(+44) 20.7946.0958",
]


@pytest.mark.parametrize("spelling", OUTSIDE_DST)
def test_a_destination_outside_the_token_in_any_spelling(spelling: str) -> None:
    h = Harness(RULES, Caller(source="203.0.113.5", claims=ALICE))
    assert refused_with(h, spelling) == [errors.FORBIDDEN_DESTINATION]
    (line,) = h.audits
    assert line["outcome"] == "refused"
    assert line["cause"] == errors.FORBIDDEN_DESTINATION
    assert line["destination"] == "+442079460958"
    assert line["destination_given"] == spelling
    assert line["identity"] == "alice"
    assert line["source"] == "203.0.113.5"


def test_the_token_allows_its_prefix_and_route_names() -> None:
    h = Harness(RULES, Caller(claims=ALICE))
    actions = h.offer("+1 (555) 123-4567")
    (request,) = [e for _, e in published(actions) if isinstance(e, CallRequested)]
    assert request.destination == "+15551234567"
    assert request.trunk == "carrier"
    # "support-line" in dst names the route that matches "support".
    h2 = Harness(RULES, Caller(claims=ALICE))
    assert any(isinstance(e, CallRequested) for _, e in published(h2.offer("support")))


@pytest.mark.parametrize(
    "number", ["+1 900 555 0100", "00 1 900 555 0100", "011 1 900 555 0100", "+88212345678"]
)
def test_dial_deny_wins(number: str) -> None:
    assert refused_with(Harness(RULES), number) == [errors.FORBIDDEN_DESTINATION]


@pytest.mark.parametrize("number", ["19005550100", "900-555-0100", "1 (900) 555-0100"])
def test_a_national_number_is_judged_in_its_country(number: str) -> None:
    # Without a country it cannot be judged: refused, never dialled as written.
    assert refused_with(Harness(RULES), number) == [messages.BAD_DESTINATION]
    nanp = load_access({"DIAL_DENY": "+1900", "DIAL_COUNTRY_CODE": "1"}, "127.0.0.1")
    h = Harness(replace(RULES, access=nanp))
    assert refused_with(h, number) == [errors.FORBIDDEN_DESTINATION]
    assert h.audits[-1]["destination"] == "+19005550100"


def test_route_and_trunk_rules() -> None:
    assert refused_with(Harness(RULES), "+44 9000 123456") == [errors.FORBIDDEN_DESTINATION]
    assert refused_with(Harness(RULES), "+1 976 555 0100") == [errors.FORBIDDEN_DESTINATION]
    assert refused_with(Harness(RULES), "+1 212 555 0100") == [errors.FORBIDDEN_DESTINATION]
    assert refused_with(Harness(RULES), "ops") == [errors.FORBIDDEN_DESTINATION]
    assert refused_with(Harness(RULES), "*6719005550100") == [messages.BAD_DESTINATION]
    assert published(Harness(RULES).offer("+44 20 7946 0958"))


@pytest.mark.parametrize("code", [errors.RATE_LIMITED, errors.TOO_MANY_CALLS])
def test_the_limits_refuse(code: str) -> None:
    h = Harness(caller=Caller(source="198.51.100.1", claims=ALICE))
    h.refusal = code
    assert refused_with(h, "+15551234567") == [code]
    assert h.session.call_id is None
    assert h.audits[-1]["cause"] == code
    assert h.releases == []
    # The next attempt, once admitted, goes ahead.
    h.refusal = None
    assert any(isinstance(e, CallRequested) for _, e in published(h.offer("+15551234567")))


def test_an_admitted_call_is_released_once_at_its_end() -> None:
    h = Harness(caller=Caller(claims=ALICE))
    h.to_connected()
    h.text({"type": "hangup"}, T0 + 65)
    h.event(CallEnded(call_id="call1", cause=errors.NORMAL, status=None), T0 + 66)
    assert [(r.call_id, r.identity) for r in h.releases] == [("call1", "alice")]
    line = h.audits[-1]
    assert (line["outcome"], line["cause"], line["duration"]) == ("answered", "normal", 66.0)


def test_max_call_duration_ends_the_call() -> None:
    short = replace(SETTINGS, access=load_access({"MAX_CALL_DURATION": "60"}, "127.0.0.1"))
    claims = replace(ALICE, max_duration=30.0)
    h = Harness(short, Caller(claims=claims))
    h.to_connected()
    assert h.session.get_timer() == T0 + 30.0  # the token's lower limit
    actions = h.timer(T0 + 30.0)
    assert published(actions) == [
        (SIGNALING, HangupRequested(call_id="call1", cause=errors.MAX_DURATION))
    ]
    actions = h.event(CallEnded(call_id="call1", cause=errors.MAX_DURATION), T0 + 31)
    assert sent(actions)[-1]["cause"] == errors.MAX_DURATION


def test_an_expired_token_keeps_its_call_but_starts_no_new_one() -> None:
    h = Harness(caller=Caller(claims=ALICE, token_deadline=T0 + 10))
    h.to_connected()
    assert h.timer(T0 + 20) == []  # the call goes on past the token's expiry
    h.event(CallEnded(call_id="call1", cause=errors.REMOTE_HANGUP), T0 + 30)
    actions = h.offer("+15551234567", now=T0 + 40)
    assert error_codes(actions) == [errors.UNAUTHORIZED]
    assert published(actions) == []


def test_a_message_flood_is_refused_then_closed() -> None:
    flood = replace(SETTINGS, access=load_access({"WS_MESSAGE_RATE": "5/s"}, "127.0.0.1"))
    h = Harness(flood)
    frames = [h.text(json.dumps({"type": "hangup"}), T0) for _ in range(20)]
    codes = [code for actions in frames for code in error_codes(actions)]
    assert codes[:5] == ["no_call"] * 5
    assert codes[5:] == [errors.RATE_LIMITED]  # said once, then dropped
    assert h.state() == State.CLOSED
    assert any(getattr(a, "code", None) == 4429 for a in h.actions)


def test_the_rate_refills() -> None:
    limited = replace(SETTINGS, access=load_access({"WS_MESSAGE_RATE": "2/s"}, "127.0.0.1"))
    h = Harness(limited)
    for _ in range(3):
        h.text({"type": "hangup"}, T0)
    assert error_codes(h.text({"type": "hangup"}, T0 + 1.0)) == ["no_call"]


def test_the_socket_closing_while_admitting_publishes_nothing() -> None:
    h = Harness(caller=Caller(claims=ALICE))
    h.session.receive_text(
        json.dumps({"type": "offer", "sdp": "v=0\r\n", "destination": "+15551234567"}), T0
    )
    h.session.socket_closed(T0 + 1)
    actions = h.pull()  # the Admit is answered after the socket closed
    assert published(actions) == []
    assert h.state() == State.CLOSED
    assert h.audits[-1]["outcome"] == "failed"


def test_binary_frames_count_against_the_rate() -> None:
    flood = replace(SETTINGS, access=load_access({"WS_MESSAGE_RATE": "5/s"}, "127.0.0.1"))
    h = Harness(flood)
    for _ in range(20):
        h.session.receive_binary(T0)
    h.pull()
    assert h.state() == State.CLOSED


def test_a_hangup_over_the_rate_still_ends_the_call() -> None:
    limited = replace(SETTINGS, access=load_access({"WS_MESSAGE_RATE": "5/s"}, "127.0.0.1"))
    h = Harness(limited, Caller(claims=ALICE))
    h.to_connected()
    for _ in range(5):
        h.text({"type": "dtmf", "digits": "1"}, T0 + 10)
    actions = h.text({"type": "hangup"}, T0 + 10)
    assert published(actions) == [
        (SIGNALING, HangupRequested(call_id="call1", cause=errors.NORMAL))
    ]


def test_the_place_is_released_before_the_page_hears_ended() -> None:
    h = Harness(caller=Caller(claims=ALICE))
    h.to_connected()
    h.session.handle_event(CallEnded(call_id="call1", cause=errors.REMOTE_HANGUP), T0 + 9)
    kinds = [type(a).__name__ for a in h.session.pop_actions()]
    assert kinds.index("Release") < kinds.index("SendMessage")


def test_going_over_the_rate_now_and_then_never_closes_the_socket() -> None:
    limited = replace(SETTINGS, access=load_access({"WS_MESSAGE_RATE": "2/s"}, "127.0.0.1"))
    h = Harness(limited)
    for second in range(20):  # three messages each second: one too many, every time
        for _ in range(3):
            h.text({"type": "hangup"}, T0 + second)
    assert h.state() == State.IDLE
