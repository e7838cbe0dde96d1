"""Fuzz of the SIP wire parser (``services.common.sip.message``).

``parse_message``: random bytes and mutated valid requests and responses (the
RFC 4475 torture corpus and a few of our own) give a message whose every
header the user agent reads can be read, or ``SipParseError`` with a short
reason fit for a 400's phrase; nothing else escapes. ``bad_request`` on the
same bytes never raises and builds a 400 without injected lines.

``StreamFramer`` (``services.common.sip.framing``): a stream of valid messages
cut anywhere comes out as the same messages; on any stream it returns only
bytes it was fed, in order, and holds no more than its bounds (or it says the
stream is broken).
"""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st
from sipmessage import Request, Response

from services.common.sip.framing import MessageFramed, StreamBroken, StreamFramer
from services.common.sip.message import (
    MAX_MESSAGE_SIZE,
    SipParseError,
    bad_request,
    make_request,
    make_response,
    parse_message,
    summary,
    top_branch,
)
from tests.unit.fuzz.support import any_bytes, fuzz, mutate_lines

CORPUS_DIR = Path(__file__).parent.parent / "sipagent" / "torture"
TORTURE = tuple(sorted(path.read_bytes() for path in CORPUS_DIR.glob("*.sip")))

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n"
    b"m=audio 30000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
)
OURS = (
    b"INVITE sip:+15551234567@trunk.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Bridge" <sip:bridge@192.0.2.1>;tag=1928301774\r\n'
    b"To: <sip:+15551234567@trunk.example.com>\r\n"
    b"Call-ID: a84b4c76e66710@192.0.2.1\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:bridge@192.0.2.1:5060>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n\r\n" + SDP,
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds;received=192.0.2.1\r\n"
    b"Record-Route: <sip:proxy.example.com;lr>, <sip:edge.example.com;lr>\r\n"
    b'From: "Bridge" <sip:bridge@192.0.2.1>;tag=1928301774\r\n'
    b"To: <sip:+15551234567@trunk.example.com>;tag=a6c85cf\r\n"
    b"Call-ID: a84b4c76e66710@192.0.2.1\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:trunk@203.0.113.5:5060;transport=udp>\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n\r\n" + SDP,
    b"SIP/2.0 180 Ringing\r\n"
    b"v: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds\r\n"
    b"f: <sip:bridge@192.0.2.1>;tag=1928301774\r\n"
    b"t: <sip:+15551234567@trunk.example.com>;tag=a6c85cf\r\n"
    b"i: a84b4c76e66710@192.0.2.1\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"l: 0\r\n\r\n",
    b"BYE sip:bridge@192.0.2.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 203.0.113.5:5060;branch=z9hG4bKnashds7\r\n"
    b"From: <sip:+15551234567@trunk.example.com>;tag=a6c85cf\r\n"
    b"To: <sip:bridge@192.0.2.1>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@192.0.2.1\r\n"
    b"CSeq: 231 BYE\r\n"
    b"Max-Forwards: 70\r\n"
    b"Content-Length: 0\r\n\r\n",
)
VALID = OURS + TORTURE
HEADER_SNIPPETS = (
    b"Content-Length: 99999999999999999999999",
    b"Content-Length: -1",
    b"Content-Length: 1",
    b"l: 0",
    b"Via: ",
    b"Via: SIP/2.0/UDP h;branch=z9hG4bKx, , SIP/2.0/UDP i",
    b"Via: SIP/3.0/UDP h",
    b"CSeq: 4294967296 INVITE",
    b"CSeq: 1 BYE",
    b"CSeq: 1",
    b"Call-ID: ",
    b"Call-ID: a b",
    b"From: <<<",
    b'From: "unterminated <sip:x@y>',
    b"To: sip:x@y;tag=",
    b"Max-Forwards: 256",
    b"Expires: 4294967296",
    b"Retry-After: 120 (ok);duration=1",
    b"Contact: *",
    b"Contact: <sip:x@y>;expires=-1, <>",
    b"Record-Route: <sip:x;lr",
    b"Route: ,",
    b"X-Bin: \xff\xfe\x00",
    b"Via: \xff",
    b": no name",
    b"No-Colon",
    b" folded continuation",
    b"\tfolded tab",
    b"\x00",
)


def to_bytes(text: str) -> bytes:
    """``text`` back to bytes: surrogate-escaped bytes as they were, the rest as UTF-8."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return b"".join(
            bytes([ord(c) - 0xDC00])
            if "\udc80" <= c <= "\udcff"
            else c.encode("utf-8", "surrogatepass")
            for c in text
        )


@st.composite
def mutated_messages(draw: st.DrawFn) -> bytes:
    """A valid message with header lines dropped, duplicated, broken or replaced."""
    data = draw(st.sampled_from(VALID))
    head, sep, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    if draw(st.booleans()):
        at = draw(st.integers(1, len(lines)))
        lines.insert(at, draw(st.sampled_from(HEADER_SNIPPETS)))
    if draw(st.booleans()):
        text = mutate_lines(draw(st.data()), b"\r\n".join(lines).decode("utf-8", "surrogateescape"))
        head = to_bytes(text)
    else:
        head = b"\r\n".join(lines)
    tail = draw(st.sampled_from((sep + body, sep, b"", sep + body + b"junk", sep + body[:3])))
    return head + tail


def messages() -> st.SearchStrategy[bytes]:
    return st.one_of(mutated_messages(), mutated_messages(), mutated_messages(), any_bytes(600))


# --- parse_message ------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def check_parse(data: bytes) -> Request | Response | None:
    try:
        message = parse_message(data)
    except SipParseError as exc:
        reason = str(exc)
        assert reason and len(reason) <= 80 and not _CONTROL.search(reason), reason
        return None
    assert len(data) <= MAX_MESSAGE_SIZE
    # What ``_check`` promises: every header the user agent reads can be read.
    assert message.via and message.call_id
    message.from_address, message.to_address, message.contact, message.record_route  # noqa: B018
    assert 0 <= message.cseq.sequence < 2**31
    top_branch(message)
    summary(message)
    if isinstance(message, Request):
        assert message.cseq.method == message.method
        reply = bytes(make_response(message, 200, to_tag="fuzz"))
        head = reply.split(b"\r\n\r\n", 1)[0]
        assert not any(b"\r" in line or b"\n" in line for line in head.split(b"\r\n"))
    else:
        assert 100 <= message.code <= 699
    return message


def check_bad_request(data: bytes, reason: str) -> None:
    reply = bad_request(data, reason)
    if reply is None:
        return
    assert reply.startswith(b"SIP/2.0 400 Bad Request") and reply.endswith(b"\r\n\r\n")
    text = reply.decode("utf-8")  # it goes on the wire as UTF-8
    for line in text[:-4].split("\r\n"):
        assert not _CONTROL.search(line), line


@fuzz(500)
@given(messages())
@example(b"")
@example(b"\r\n" * 40_000)
@example(b"INVITE sip:x@y SIP/2.0\r\n" + b"X: y\r\n" * 600 + b"\r\n")
@example(VALID[0] + b"x" * MAX_MESSAGE_SIZE)
def test_datagram_parses_or_sip_parse_error(data: bytes) -> None:
    message = check_parse(data)
    try:
        parse_message(data)
    except SipParseError as exc:
        assert message is None
        check_bad_request(data, str(exc))
    else:
        check_bad_request(data, "")


@fuzz(100)
@given(st.sampled_from(OURS), st.integers(0, 400))
def test_truncated_message_parses_or_sip_parse_error(data: bytes, cut: int) -> None:
    check_parse(data[: max(0, len(data) - cut)])


# --- StreamFramer ----------------------------------------------------------------------------


def stream_messages() -> st.SearchStrategy[list[bytes]]:
    """Messages as a TCP peer sends them: each with the right Content-Length."""
    request = st.builds(
        lambda body, n: bytes(
            make_request(
                "INFO",
                "sip:bridge@192.0.2.1",
                [("Via", f"SIP/2.0/TCP h;branch=z9hG4bK{n}"), ("Call-ID", f"c{n}")],
                body,
                "application/dtmf-relay",
            )
        ),
        st.binary(max_size=60).map(lambda b: b.replace(b"\r\n\r\n", b"")),
        st.integers(0, 999),
    )
    return st.lists(st.one_of(request, st.sampled_from(OURS)), max_size=5)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(data)) for cut in cuts})
    chunks, start = [], 0
    for point in [*points, len(data)]:
        chunks.append(data[start:point])
        start = point
    return chunks


def framed(framer: StreamFramer, chunk: bytes) -> list[bytes]:
    """The messages ``chunk`` completes; ``SipParseError`` when the stream broke."""
    events = framer.receive(chunk)
    if any(isinstance(event, StreamBroken) for event in events):
        raise SipParseError("stream broken")
    return [event.data for event in events if isinstance(event, MessageFramed)]


@fuzz(150)
@given(stream_messages(), st.lists(st.integers(0, 3000), max_size=12), st.integers(0, 3))
def test_framer_gives_back_the_messages_sent(
    sent: list[bytes], cuts: list[int], keepalives: int
) -> None:
    stream = b"".join(b"\r\n" * keepalives + message for message in sent)
    framer = StreamFramer()
    got: list[bytes] = []
    for chunk in chunked(stream, cuts):
        got += framed(framer, chunk)
    assert got == sent


def check_framer(chunks: list[bytes], max_size: int) -> None:
    """Feed ``chunks``; check what comes out is what went in, and the buffer's bound."""
    framer = StreamFramer(max_header=max_size // 2, max_body=max_size // 2)
    fed = b""
    out: list[bytes] = []
    for chunk in chunks:
        fed += chunk
        try:
            got = framed(framer, chunk)
        except SipParseError:
            return  # the caller closes the connection
        for message in got:
            assert 0 < len(message) <= max_size
            assert b"\r\n\r\n" in message
        out += got
        assert framer.buffered <= max_size
    # Out came the fed bytes, in order, less CRLF keep-alives between messages.
    pos = 0
    for message in out:
        while fed.startswith(b"\r\n", pos):
            pos += 2
        assert fed[pos : pos + len(message)] == message
        pos += len(message)
    assert sum(map(len, out)) + framer.buffered <= len(fed)
    # What is held is the rest of the stream, less keep-alives.
    rest = fed[pos:]
    skipped = len(rest) - framer.buffered
    assert skipped >= 0 and skipped % 2 == 0
    assert rest[:skipped] == b"\r\n" * (skipped // 2)


@fuzz(300)
@given(
    st.lists(
        st.one_of(messages(), st.sampled_from((b"\r\n", b"\r", b"\n", b"\r\n\r\n"))), max_size=6
    ),
    st.lists(st.integers(0, 4000), max_size=10),
    st.sampled_from((200, 1500, MAX_MESSAGE_SIZE)),
)
@example([b"x" * 70_000], [], MAX_MESSAGE_SIZE)
@example([b"INVITE x SIP/2.0\r\nl: 65530\r\n\r\n"], [], MAX_MESSAGE_SIZE)
def test_framer_returns_only_what_it_was_fed(
    pieces: list[bytes], cuts: list[int], max_size: int
) -> None:
    check_framer(chunked(b"".join(pieces), cuts), max_size)


@fuzz(30)
@given(st.integers(1, 64), st.sampled_from((b"x", b"\r", b"\r\n", b"\n\r", b"\r\n\r")))
def test_framer_bounded_on_endless_garbage(chunk_kb: int, unit: bytes) -> None:
    framer = StreamFramer(max_header=2048, max_body=2048)
    chunk = unit * (chunk_kb * 1024 // len(unit))
    try:
        for _ in range(20):
            got = framed(framer, chunk)
            assert sum(map(len, got)) <= len(chunk) + 4096
            assert all(len(message) <= 4096 for message in got)
            assert framer.buffered <= 4096
    except SipParseError:
        pass
