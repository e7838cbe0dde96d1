from __future__ import annotations

import contextlib
import random

import pytest
from sipmessage import Request, Response

from services.common.sip.message import (
    MAX_MESSAGE_SIZE,
    SipParseError,
    bad_request,
    make_response,
    new_branch,
    parse_message,
    tag_of,
)

OPTIONS = (
    b"OPTIONS sip:bridge@192.0.2.1 SIP/2.0\r\n"
    b"v: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK1\r\n"
    b"f: <sip:trunk@x>;tag=a\r\n"
    b"t: <sip:bridge@y>\r\n"
    b"i: abc\r\n"
    b"CSeq: 7\r\n  OPTIONS\r\n"
    b"l: 0\r\n\r\n"
)


def test_parse_compact_and_folded_headers() -> None:
    message = parse_message(OPTIONS)
    assert isinstance(message, Request)
    assert message.method == "OPTIONS"
    assert message.call_id == "abc"
    assert message.cseq.sequence == 7 and message.cseq.method == "OPTIONS"


def test_body_cut_at_content_length() -> None:
    data = OPTIONS.replace(b"l: 0", b"l: 3") + b"abcdef"
    assert parse_message(data).body == b"abc"
    with pytest.raises(SipParseError):
        parse_message(OPTIONS.replace(b"l: 0", b"l: 30") + b"abc")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\r\n\r\n",
        b"garbage",
        b"SIP/2.0 abc OK\r\n\r\n",
        b"SIP/2.0 999 Weird\r\nVia: SIP/2.0/UDP h\r\n\r\n",
        OPTIONS.replace(b"v: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK1\r\n", b""),
        OPTIONS.replace(b"CSeq: 7", b"CSeq: x"),
        OPTIONS.replace(b"i: abc\r\n", b""),
        OPTIONS.replace(b"f: <sip:trunk@x>", b"f: <<<"),
        b"\xff\xfe\r\n\r\n",
        OPTIONS[:-4] + b"\r\nno colon\r\n\r\n",
    ],
)
def test_bad_input_raises_only_sip_parse_error(data: bytes) -> None:
    with pytest.raises(SipParseError):
        parse_message(data)


def test_fuzz_never_raises_anything_else() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        data = bytearray(OPTIONS)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        with contextlib.suppress(SipParseError):
            parse_message(bytes(data))


def test_oversized_refused() -> None:
    data = OPTIONS.replace(b"l: 0", f"l: {MAX_MESSAGE_SIZE}".encode()) + b"x" * MAX_MESSAGE_SIZE
    with pytest.raises(SipParseError):
        parse_message(data)


def test_response_echoes_headers_and_adds_tag() -> None:
    request = parse_message(OPTIONS)
    assert isinstance(request, Request)
    response = make_response(request, 200, to_tag="me")
    parsed = parse_message(bytes(response))
    assert isinstance(parsed, Response)
    assert parsed.headers["Via"] == request.headers["Via"]
    assert tag_of(parsed.headers["To"]) == "me"
    assert parsed.headers["CSeq"] == request.headers["CSeq"]


def test_bad_request_when_via_readable() -> None:
    data = OPTIONS.replace(b"CSeq: 7", b"CSeq: x")
    reply = bad_request(data)
    assert reply is not None and reply.startswith(b"SIP/2.0 400 Bad Request\r\n")
    assert b"branch=z9hG4bK1" in reply
    assert bad_request(b"garbage\r\n\r\n") is None
    assert bad_request(data.replace(b"OPTIONS sip", b"ACK sip")) is None


def test_branch_has_magic_cookie_and_is_fresh() -> None:
    assert new_branch().startswith("z9hG4bK")
    assert new_branch() != new_branch()
