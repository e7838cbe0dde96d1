"""RFC 4475 torture messages and mutations of them: parsed or refused, never a crash.

The corpus is in ``torture/`` (see ``torture/manifest.toml`` and ``build_corpus.py``).
"""

from __future__ import annotations

import logging
import random
import tomllib
from pathlib import Path
from typing import Any

import pytest
from sipmessage import Request, Response

from services.common.sip.framing import MAX_BODY_SIZE, MessageFramed, StreamBroken, StreamFramer
from services.common.sip.message import (
    MAX_MESSAGE_SIZE,
    SipParseError,
    bad_request,
    make_response,
    parse_message,
    top_branch,
)
from services.demo.uas import DemoUas

CORPUS = Path(__file__).parent / "torture"
MANIFEST: dict[str, dict[str, Any]] = tomllib.loads((CORPUS / "manifest.toml").read_text())
MESSAGES = {name: (CORPUS / f"{name}.sip").read_bytes() for name in MANIFEST}
REJECTED = [name for name, case in MANIFEST.items() if case["expect"] == "reject"]
# Rejected requests whose 400 echoes the header at fault (a second Via, a CSeq...) or lacks it.
ECHOES_THE_FAULT = {"badinv01", "scalarlg", "quotbal", "badaspec", "baddn", "insuf", "unksm2"}
HANG_GUARD = 30
"Seconds before a parse that never ends fails its test; a linear parse takes milliseconds."
PARSED = [name for name, case in MANIFEST.items() if case["expect"] == "parse"]


def test_manifest_covers_every_file() -> None:
    assert {path.stem for path in CORPUS.glob("*.sip")} == set(MANIFEST)
    assert len(MANIFEST) >= 50
    for data in MESSAGES.values():
        head = data.split(b"\r\n\r\n", 1)[0]
        assert b"\n" not in head.replace(b"\r\n", b"") or b"\nVia: injected" in head


@pytest.mark.parametrize("name", PARSED)
def test_valid_messages_parse(name: str) -> None:
    case = MANIFEST[name]
    message = parse_message(MESSAGES[name])
    if "method" in case:
        assert isinstance(message, Request) and message.method == case["method"]
        # What we send back must be readable by us too: the echo is verbatim.
        echo = parse_message(bytes(make_response(message, 200, to_tag="t")))
        assert isinstance(echo, Response)
        assert [str(v) for v in echo.via] == [str(v) for v in message.via]
    else:
        assert isinstance(message, Response) and message.code == case["code"]
    assert top_branch(message) is not None


@pytest.mark.parametrize("name", REJECTED)
def test_invalid_messages_refused(name: str) -> None:
    with pytest.raises(SipParseError):
        parse_message(MESSAGES[name])


def test_wsinv_reads_through_folding_and_whitespace() -> None:
    message = parse_message(MESSAGES["wsinv"])
    assert message.cseq.sequence == 9 and message.cseq.method == "INVITE"
    assert [via.transport for via in message.via] == ["UDP", "TCP", "UDP"]
    assert [via.parameters["branch"] for via in message.via][1:] == [
        "z9hG4bK9ikj8",
        "z9hG4bK30239",
    ]
    assert message.to_address.parameters["tag"] == "1918181833n"
    assert message.headers["maxforwards"] == "0068"  # no hyphen: an unknown header
    assert message.headers["Subject"] == ""
    assert message.headers["NewFangledHeader"] == "newfangled value continued newfangled value"
    assert message.body.startswith(b"v=0 ")


def test_bodies_follow_content_length() -> None:
    assert parse_message(MESSAGES["dblreq"]).body == b""
    assert parse_message(MESSAGES["nolength"]).body == b"tail"
    assert parse_message(MESSAGES["nulbody"]).body == b"\x00" * 64
    mpart = parse_message(MESSAGES["mpart01"])
    assert bytes(range(256)) in mpart.body and mpart.body.endswith(b"--7a9cbec02ceef655--\r\n")


def test_unreadable_non_utf8_kept_as_replacement() -> None:
    message = parse_message(MESSAGES["latin1"])
    assert message.headers["Subject"] == "caf\ufffd cr\ufffdme"


def test_bad_requests_get_a_400_naming_the_problem() -> None:
    answered = 0
    for name in REJECTED:
        data = MESSAGES[name]
        with pytest.raises(SipParseError) as info:
            parse_message(data)
        reply = bad_request(data, str(info.value))
        if reply is None:
            continue
        answered += 1
        assert reply.startswith(f"SIP/2.0 400 Bad Request ({info.value})\r\n".encode())
        if name in ECHOES_THE_FAULT:
            continue  # the faulty header is one that is echoed as it came
        response = parse_message(reply)
        assert isinstance(response, Response) and response.code == 400
        assert response.phrase == f"Bad Request ({info.value})"
        assert response.to_address.parameters.get("tag")
    # Responses, and requests whose Via cannot be read (badvers, badutf8via), are
    # dropped; the requests with enough to echo are answered.
    assert answered >= 15
    reply = bad_request(MESSAGES["mismatch01"], "CSeq method does not match")
    assert reply is not None
    assert reply.startswith(b"SIP/2.0 400 Bad Request (CSeq method does not match)\r\n")
    assert b"Call-ID: mismatch01.kjh234lkjh\r\n" in reply
    assert bad_request(MESSAGES["insuf"]) is not None  # no Call-ID: echoed as far as there
    assert bad_request(MESSAGES["bigcode"]) is None
    assert bad_request(MESSAGES["clerr"], "x\r\nInjected: yes") is not None
    assert b"\r\nInjected" not in (bad_request(MESSAGES["clerr"], "x\r\nInjected: yes") or b"")


def test_oversize_refused_before_parsing_and_not_answered() -> None:
    data = MESSAGES["longreq"]
    huge = data.replace(b"l: ", b"X-Pad: " + b"a" * MAX_MESSAGE_SIZE + b"\r\nl: ", 1)
    with pytest.raises(SipParseError, match="over"):
        parse_message(huge)
    assert bad_request(huge, "too big") is None


def _mutations(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(7)
        at = rng.randrange(len(out) + 1)
        if kind == 0:
            del out[at:]  # truncation
        elif kind == 1 and out:
            out[min(at, len(out) - 1)] = rng.randrange(256)  # byte flip
        elif kind == 2:
            out[at:at] = b"\r\n"  # duplicated CRLF
        elif kind == 3:
            crlf = out.find(b"\r\n", at)
            if crlf >= 0:
                del out[crlf : crlf + 2]  # removed CRLF
        elif kind == 4:
            out[at:at] = rng.choice([b" ", b"\t", b",", b";", b":", b'"', b"<", b">", b"\x00"])
        elif kind == 5:
            out[at:at] = rng.choice([b"a", b"%", b";x", b"9", b"\r\n "]) * rng.randint(1, 8000)
        else:
            out[at:at] = out[: rng.randrange(len(out) + 1)]  # a repeated prefix
    return bytes(out)


# A super-linear blow-up on these inputs takes minutes: the timeout catches it without
# asserting how fast a loaded machine parses.
@pytest.mark.timeout(HANG_GUARD)
def test_fuzz_parses_or_refuses() -> None:
    rng = random.Random(4475)
    names = sorted(MESSAGES)
    for _ in range(3000):
        data = _mutations(rng, MESSAGES[rng.choice(names)])
        try:
            parse_message(data)
        except SipParseError as exc:
            bad_request(data, str(exc))


@pytest.mark.parametrize(
    "line",
    [
        b"X-Many: " + b"a," * 30000,
        b"X-Quotes: " + b'"' * 60000,
        b"To: " + b"a " * 30000 + b"<sip:x@y>",
        b"Contact: " + b'"\\' * 30000,
        b"Via: SIP/2.0/UDP " + b"a." * 30000 + b"!",
        b"Route: <sip:" + b"a;" * 30000 + b">",
        b"From: <sip:" + b"%" * 60000 + b">",
    ],
)
@pytest.mark.timeout(HANG_GUARD)
def test_worst_case_lines_end(line: bytes) -> None:
    head, _, _ = MESSAGES["lwsdisp"].partition(b"\r\nl: 0")
    data = head + b"\r\n" + line[: MAX_MESSAGE_SIZE - len(head) - 40] + b"\r\nl: 0\r\n\r\n"
    try:
        parse_message(data)
    except SipParseError as exc:
        bad_request(data, str(exc))


def test_many_header_fields_refused() -> None:
    head, _, _ = MESSAGES["lwsdisp"].partition(b"\r\nl: 0")
    data = head + b"".join(b"\r\nX%d: 1" % i for i in range(5000)) + b"\r\n\r\n"
    with pytest.raises(SipParseError, match="too many"):
        parse_message(data)


# --- TCP framing -------------------------------------------------------------------------


def framed(framer: StreamFramer, data: bytes) -> list[bytes]:
    """The messages ``data`` completes; ``SipParseError`` when the stream broke."""
    events = framer.receive(data)
    if any(isinstance(event, StreamBroken) for event in events):
        raise SipParseError("stream broken")
    return [event.data for event in events if isinstance(event, MessageFramed)]


def test_framer_cuts_the_corpus_back_out_of_one_stream() -> None:
    framed_names = [name for name in PARSED if name not in ("nolength", "dblreq", "leadcrlf")]
    stream = b"".join(b"\r\n\r\n" + MESSAGES[name] for name in framed_names)
    framer, got = StreamFramer(), []
    for i in range(0, len(stream), 1000):
        got += framed(framer, stream[i : i + 1000])
    assert [parse_message(data).call_id for data in got] == [
        parse_message(MESSAGES[name]).call_id for name in framed_names
    ]


@pytest.mark.parametrize("name", ["clerr", "scalar02", "mcl01"])
def test_framer_closes_on_a_length_it_cannot_trust(name: str) -> None:
    data = MESSAGES[name]
    framer = StreamFramer()
    if name == "clerr":  # 9999 is in range: the framer waits for the rest
        assert framed(framer, data) == []
        assert framed(framer, b"x" * 9999)[0].startswith(b"INVITE")
        return
    with pytest.raises(SipParseError):
        framed(framer, data)


def test_framer_refuses_a_length_over_the_limit_before_reading_it() -> None:
    data = MESSAGES["lwsdisp"].replace(b"l: 0", f"l: {MAX_MESSAGE_SIZE}".encode())
    assert StreamFramer().receive(data) == [
        StreamBroken(f"body of {MAX_MESSAGE_SIZE} bytes over {MAX_BODY_SIZE}")
    ]


def test_framer_reads_a_folded_content_length() -> None:
    data = MESSAGES["lwsdisp"].replace(b"l: 0", b"l:\r\n 4") + b"abcd"
    assert framed(StreamFramer(), data + data) == [data, data]


@pytest.mark.timeout(HANG_GUARD)
def test_framer_refuses_a_byte_by_byte_oversize_header() -> None:
    framer = StreamFramer()
    with pytest.raises(SipParseError):
        for _ in range(MAX_MESSAGE_SIZE + 1):
            framed(framer, b"a")


# --- the demo peer -------------------------------------------------------------------------


class _Ports:
    def open(self, call_id: str) -> int:
        return 20000

    def close(self, call_id: str) -> None:
        pass


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_demo_peer_survives_the_corpus(name: str, caplog: pytest.LogCaptureFixture) -> None:
    uas = DemoUas(
        local_addr=("127.0.0.1", 5070), rtp_host="127.0.0.1", rtp_ports=_Ports(), ring_delay=0
    )
    with caplog.at_level(logging.ERROR):
        uas.receive(MESSAGES[name], ("192.0.2.1", 5060), 0.0)
        for now in (1.0, 10.0, 100.0):
            uas.handle_timer(now)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    for data, _ in uas.datagrams_to_send():
        assert data.startswith((b"SIP/2.0 ", b"BYE "))
