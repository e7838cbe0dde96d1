"""The browser protocol codec: parsing and validation, no session involved."""

from __future__ import annotations

import json

import pytest

from services.signaling import messages
from services.signaling.messages import Hangup, Ice, MessageError, Offer, parse_message


def code_of(text: str) -> str:
    with pytest.raises(MessageError) as info:
        parse_message(text)
    return info.value.code


def test_offer_with_and_without_destination() -> None:
    assert parse_message('{"type":"offer","sdp":"v=0\\r\\n","destination":" support "}') == Offer(
        sdp="v=0\r\n", destination="support"
    )
    assert parse_message('{"type":"offer","sdp":"v=0"}') == Offer(sdp="v=0", destination="")
    assert parse_message('{"type":"offer","sdp":"v=0","destination":null}') == Offer("v=0", "")


def test_hangup_and_ice() -> None:
    assert parse_message('{"type":"hangup"}') == Hangup()
    assert parse_message(
        '{"type":"ice","candidate":"candidate:1 1 udp 1 10.0.0.1 9 typ host",'
        '"sdpMid":"0","sdpMLineIndex":0}'
    ) == Ice("candidate:1 1 udp 1 10.0.0.1 9 typ host", "0", 0)
    assert parse_message('{"type":"ice","candidate":null}') == Ice("", None, None)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("{not json", messages.BAD_JSON),
        ("", messages.BAD_JSON),
        ("[1,2]", messages.BAD_MESSAGE),
        ('"offer"', messages.BAD_MESSAGE),
        ('{"sdp":"v=0"}', messages.BAD_MESSAGE),
        ('{"type":7}', messages.BAD_MESSAGE),
        ('{"type":"offer"}', messages.BAD_MESSAGE),
        ('{"type":"offer","sdp":"hello"}', messages.BAD_MESSAGE),
        ('{"type":"offer","sdp":42}', messages.BAD_MESSAGE),
        ('{"type":"offer","sdp":"v=0","destination":5}', messages.BAD_MESSAGE),
        ('{"type":"ice","candidate":5}', messages.BAD_MESSAGE),
        ('{"type":"ice","candidate":"c","sdpMid":1}', messages.BAD_MESSAGE),
        ('{"type":"ice","candidate":"c","sdpMLineIndex":true}', messages.BAD_MESSAGE),
        ('{"type":"ice","candidate":"c","sdpMLineIndex":-1}', messages.BAD_MESSAGE),
        ('{"type":"dance"}', messages.UNKNOWN_TYPE),
    ],
)
def test_refused_messages(text: str, code: str) -> None:
    assert code_of(text) == code


def test_size_limit_counts_utf8_bytes() -> None:
    limit = messages.MAX_MESSAGE_BYTES
    pad = limit - len('{"type":"hangup","x":""}')
    assert parse_message(json.dumps({"type": "hangup", "x": "a" * pad}, separators=(",", ":")))
    assert code_of(json.dumps({"type": "hangup", "x": "a" * (pad + 1)})) == messages.TOO_LARGE
    # Fewer characters than the limit, more bytes.
    assert code_of('{"type":"hangup","x":"' + "é" * (limit // 2) + '"}') == messages.TOO_LARGE


@pytest.mark.parametrize(
    "destination",
    ["+15551234567", "support", "sales", "ai_assistant", "1234#", "a.b-c!~*'()&=$,;?/", "x" * 64],
)
def test_valid_destinations(destination: str) -> None:
    assert messages.is_valid_destination(destination)


@pytest.mark.parametrize(
    "destination", ["", "x" * 65, "bob@example.com", "a b", "sip:bob", "a\nb", "ü", "<x>", "%41"]
)
def test_invalid_destinations(destination: str) -> None:
    assert not messages.is_valid_destination(destination)


def test_outgoing_shapes() -> None:
    assert messages.answer("v=0") == {"type": "answer", "sdp": "v=0"}
    assert messages.ringing(False) == {"type": "ringing"}
    assert messages.ringing(True) == {"type": "ringing", "early_media": True}
    assert messages.connected() == {"type": "connected"}
    assert messages.ended(486, "Busy Here", "rejected") == {
        "type": "ended",
        "status": 486,
        "reason": "Busy Here",
        "cause": "rejected",
    }
    assert messages.error("bad_json", "x") == {"type": "error", "code": "bad_json", "message": "x"}
