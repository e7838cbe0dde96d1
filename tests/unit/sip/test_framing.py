"""Cutting a SIP TCP/TLS stream into messages: what a connection's reader gets back."""

from __future__ import annotations

import pytest

from services.common.sip.framing import (
    MAX_BODY_SIZE,
    MAX_HEADER_SIZE,
    PING,
    PONG,
    MessageFramed,
    PingReceived,
    StreamBroken,
    StreamEvent,
    StreamFramer,
)
from services.common.sip.message import make_request, parse_message

OPTIONS = (
    b"OPTIONS sip:bridge@192.0.2.1 SIP/2.0\r\n"
    b"v: SIP/2.0/TCP 198.51.100.7;branch=z9hG4bK1\r\n"
    b"f: <sip:trunk@x>;tag=a\r\n"
    b"t: <sip:bridge@y>\r\n"
    b"i: abc\r\n"
    b"CSeq: 7\r\n  OPTIONS\r\n"
    b"l: 0\r\n\r\n"
)
INVITE = bytes(
    make_request(
        "INVITE",
        "sip:1@h",
        [
            ("Via", "SIP/2.0/TCP h;branch=z9hG4bKx"),
            ("From", "<sip:a@h>;tag=1"),
            ("To", "<sip:1@h>"),
            ("Call-ID", "c"),
            ("CSeq", "1 INVITE"),
        ],
        # A blank line inside the body must not end the message early.
        b"v=0\r\n\r\nbody with blank line",
        "application/sdp",
    )
)


def messages(events: list[StreamEvent]) -> list[bytes]:
    return [event.data for event in events if isinstance(event, MessageFramed)]


def feed(framer: StreamFramer, stream: bytes, step: int) -> list[StreamEvent]:
    events: list[StreamEvent] = []
    for i in range(0, len(stream), step):
        events += framer.receive(stream[i : i + step])
    return events


def test_a_message_split_at_every_byte_comes_out_whole() -> None:
    for cut in range(1, len(INVITE)):
        framer = StreamFramer()
        assert framer.receive(INVITE[:cut]) == []
        assert messages(framer.receive(INVITE[cut:])) == [INVITE]
        assert framer.buffered == 0


def test_a_stream_fed_one_byte_at_a_time() -> None:
    stream = INVITE + OPTIONS + INVITE
    assert messages(feed(StreamFramer(), stream, 1)) == [INVITE, OPTIONS, INVITE]


def test_several_messages_in_one_chunk_and_a_partial_one_kept() -> None:
    framer = StreamFramer()
    events = framer.receive(INVITE + OPTIONS + INVITE[:30])
    assert messages(events) == [INVITE, OPTIONS]
    assert framer.buffered == 30
    assert messages(framer.receive(INVITE[30:])) == [INVITE]


def test_the_body_is_awaited_by_content_length() -> None:
    framer = StreamFramer()
    assert framer.receive(INVITE[:-3]) == []
    assert parse_message(INVITE).body.endswith(b"body with blank line")
    assert messages(framer.receive(INVITE[-3:] + b"INV")) == [INVITE]
    assert framer.buffered == 3


def test_a_double_crlf_ping_asks_for_a_pong() -> None:
    framer = StreamFramer()
    events = framer.receive(PING + OPTIONS + PING)
    assert events == [PingReceived(), MessageFramed(OPTIONS), PingReceived()]
    assert PONG == b"\r\n"


def test_a_ping_split_in_two_is_still_one_ping() -> None:
    framer = StreamFramer()
    assert framer.receive(b"\r\n") == []
    assert framer.receive(b"\r\n") == [PingReceived()]
    assert framer.buffered == 0


def test_a_single_crlf_pong_is_dropped() -> None:
    framer = StreamFramer()
    assert framer.receive(PONG) == []  # a pong, or half a ping: nothing to do yet
    assert framer.receive(OPTIONS) == [MessageFramed(OPTIONS)]
    assert framer.receive(PONG + OPTIONS) == [MessageFramed(OPTIONS)]


def test_a_header_over_the_bound_closes_the_stream() -> None:
    framer = StreamFramer(max_header=1000)
    events = framer.receive(b"INVITE sip:x SIP/2.0\r\n" + b"X-Long: " + b"a" * 1000)
    assert events == [StreamBroken("header over 1000 bytes")]
    assert framer.broken and framer.buffered == 0
    assert framer.receive(OPTIONS) == []  # nothing more from a broken stream


def test_a_header_over_the_bound_fed_byte_by_byte_closes_the_stream() -> None:
    framer = StreamFramer()
    events = feed(framer, b"a" * (MAX_HEADER_SIZE + 10), 1)
    assert events == [StreamBroken(f"header over {MAX_HEADER_SIZE} bytes")]


def test_a_complete_header_over_the_bound_closes_the_stream() -> None:
    head = OPTIONS.replace(b"l: 0", b"X-Pad: " + b"a" * 200 + b"\r\nl: 0")
    assert StreamFramer(max_header=200).receive(head) == [StreamBroken("header over 200 bytes")]


def test_a_body_over_the_bound_is_refused_before_it_arrives() -> None:
    head = OPTIONS.replace(b"l: 0", f"l: {MAX_BODY_SIZE + 1}".encode())
    assert StreamFramer().receive(head) == [
        StreamBroken(f"body of {MAX_BODY_SIZE + 1} bytes over {MAX_BODY_SIZE}")
    ]


@pytest.mark.parametrize(
    "length", [b"-1", b"x", b"1e3", b"4\r\nContent-Length: 5", b"99999999999999999999999"]
)
def test_an_unreadable_content_length_closes_the_stream(length: bytes) -> None:
    events = StreamFramer().receive(OPTIONS.replace(b"l: 0", b"l: " + length))
    assert events == [StreamBroken("unreadable Content-Length")]


def test_a_folded_content_length_is_read() -> None:
    data = OPTIONS.replace(b"l: 0", b"l:\r\n 4") + b"abcd"
    assert messages(StreamFramer().receive(data + data)) == [data, data]


def test_a_message_without_content_length_has_no_body() -> None:
    bare = OPTIONS.replace(b"l: 0\r\n", b"")
    framer = StreamFramer()
    assert messages(framer.receive(bare + OPTIONS)) == [bare, OPTIONS]
    assert parse_message(bare).body == b""


def test_the_header_search_resumes_where_it_stopped() -> None:
    # 20 000 one-byte chunks of a header: linear work, so well under the test's timeout.
    framer = StreamFramer(max_header=30000)
    head = b"INVITE sip:x SIP/2.0\r\nX-Pad: " + b"a" * 20000
    assert feed(framer, head, 1) == []
    assert messages(framer.receive(b"\r\nl: 0\r\n\r\n")) == [head + b"\r\nl: 0\r\n\r\n"]
