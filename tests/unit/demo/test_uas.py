"""The demo UAS core driven with a fake clock and sipmessage-built requests: no sockets."""

from __future__ import annotations

import pytest
from sipmessage import URI, Message, Request, Response

from services.demo.events import CallAnswered, CallEnded, Event
from services.demo.uas import DemoUas

CALLER = ("127.0.0.1", 40000)
LOCAL = ("127.0.0.1", 5070)
OFFER = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 30000 RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"
)


class FakePorts:
    def __init__(self, fail: bool = False) -> None:
        self.open_calls: dict[str, int] = {}
        self.closed: list[str] = []
        self._next = 20000
        self._fail = fail

    def open(self, call_id: str) -> int:
        if self._fail:
            raise OSError("no ports")
        self._next += 2
        self.open_calls[call_id] = self._next
        return self._next

    def close(self, call_id: str) -> None:
        self.closed.append(call_id)


class Peer:
    """The caller side: builds requests and reads what the UAS sends back."""

    def __init__(self, uas: DemoUas) -> None:
        self.uas = uas
        self.now = 0.0

    def request(
        self,
        method: str,
        call_id: str = "call-1",
        cseq: int = 1,
        *,
        body: bytes = b"",
        to_tag: str | None = None,
        branch: str = "z9hG4bKa1",
        cseq_method: str | None = None,
    ) -> Request:
        request = Request(method, URI.parse("sip:echo@127.0.0.1:5070"), body=body)
        request.headers.add("Via", f"SIP/2.0/UDP 127.0.0.1:40000;branch={branch};rport")
        request.headers.add("Max-Forwards", "70")
        request.headers.add("From", "<sip:alice@127.0.0.1>;tag=caller")
        to = "<sip:echo@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
        request.headers.add("To", to)
        request.headers.add("Call-ID", call_id)
        request.headers.add("CSeq", f"{cseq} {cseq_method or method}")
        request.headers.add("Contact", "<sip:alice@127.0.0.1:40000>")
        if body:
            request.headers.add("Content-Type", "application/sdp")
        request.headers.add("Content-Length", str(len(body)))
        return request

    def send(self, request: Request | bytes) -> list[Message]:
        data = request if isinstance(request, bytes) else bytes(request)
        self.uas.receive(data, CALLER, self.now)
        return self.flush()

    def advance(self, seconds: float) -> list[Message]:
        """Move the clock, firing every timer on the way, and return what was sent."""
        target = self.now + seconds
        sent: list[Message] = []
        while (timer := self.uas.get_timer()) is not None and timer <= target:
            self.now = max(self.now, timer)
            self.uas.handle_timer(self.now)
            sent += self.flush()
        self.now = target
        return sent

    def flush(self) -> list[Message]:
        out: list[Message] = []
        for data, addr in self.uas.datagrams_to_send():
            assert addr == CALLER
            out.append(Message.parse(data))
        return out

    def events(self) -> list[Event]:
        found = []
        while (event := self.uas.next_event()) is not None:
            found.append(event)
        return found

    def answered_call(self, call_id: str = "call-1") -> str:
        """Set a call up to CONFIRMED; return the UAS's To-tag."""
        self.send(self.request("INVITE", call_id, body=OFFER))
        ok = self.advance(1.0)[0]
        assert isinstance(ok, Response) and ok.code == 200
        tag = ok.to_address.parameters["tag"]
        assert tag is not None
        self.send(self.request("ACK", call_id, to_tag=tag, branch="z9hG4bKack"))
        return tag


@pytest.fixture
def ports() -> FakePorts:
    return FakePorts()


@pytest.fixture
def peer(ports: FakePorts) -> Peer:
    return Peer(DemoUas(local_addr=LOCAL, rtp_host="127.0.0.1", rtp_ports=ports))


def codes(messages: list[Message]) -> list[int]:
    return [m.code for m in messages if isinstance(m, Response)]


def test_invite_rings_then_answers_with_sdp(peer: Peer, ports: FakePorts) -> None:
    sent = peer.send(peer.request("INVITE", body=OFFER))
    assert codes(sent) == [100, 180]
    ringing = sent[1]
    assert ringing.to_address.parameters["tag"]
    assert peer.advance(0.4) == []  # still ringing

    [ok] = peer.advance(0.2)
    assert isinstance(ok, Response) and ok.code == 200
    assert ok.to_address.parameters["tag"] == ringing.to_address.parameters["tag"]
    assert ok.call_id == "call-1" and str(ok.cseq) == "1 INVITE"
    assert ok.via[0].parameters["branch"] == "z9hG4bKa1"
    assert ok.contact and ok.contact[0].uri.port == 5070
    body = ok.body.decode()
    # The offer prefers PCMA: the answer honours its order and keeps its DTMF type.
    assert f"m=audio {ports.open_calls['call-1']} RTP/AVP 8 101" in body
    assert "c=IN IP4 127.0.0.1" in body
    assert "a=rtpmap:101 telephone-event/8000" in body
    assert ok.content_length == len(ok.body)
    assert peer.events() == [CallAnswered("call-1", "PCMA", ports.open_calls["call-1"])]


def test_pcmu_only_offer_without_dtmf() -> None:
    peer = Peer(DemoUas(local_addr=LOCAL, rtp_host="10.0.0.5", rtp_ports=FakePorts(), ring_delay=0))
    offer = OFFER.replace(b"RTP/AVP 8 0 101", b"RTP/AVP 18 0").replace(
        b"a=rtpmap:8 PCMA/8000", b"a=rtpmap:18 G729/8000"
    )
    sent = peer.send(peer.request("INVITE", body=offer))
    assert codes(sent) == [100, 180, 200]
    body = sent[2].body.decode()
    assert "m=audio 20002 RTP/AVP 0\r\n" in body and "c=IN IP4 10.0.0.5" in body
    assert "telephone-event" not in body


def test_200_retransmitted_with_backoff_until_ack(peer: Peer) -> None:
    peer.send(peer.request("INVITE", body=OFFER))
    [ok] = peer.advance(0.5)
    answered_at = peer.now
    times = []
    for _ in range(5):
        timer = peer.uas.get_timer()
        assert timer is not None
        sent = peer.advance(timer - peer.now)
        assert codes(sent) == [200]
        times.append(round(peer.now - answered_at, 3))
    # Timer G: T1 doubling, capped at T2 = 4 s.
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5]

    tag = ok.to_address.parameters["tag"]
    assert peer.send(peer.request("ACK", to_tag=tag, branch="z9hG4bKack")) == []
    assert peer.advance(10.0) == []


def test_no_ack_gives_up_at_timer_h_and_ends_with_bye(peer: Peer, ports: FakePorts) -> None:
    peer.send(peer.request("INVITE", body=OFFER))
    peer.advance(0.5)
    peer.events()
    sent = peer.advance(32.0)
    byes = [m for m in sent if isinstance(m, Request)]
    assert len(byes) == 1 and byes[0].method == "BYE"
    assert peer.events() == [CallEnded("call-1", "no ACK")]
    assert ports.closed == ["call-1"]


def test_retransmitted_invite_gets_last_response(peer: Peer) -> None:
    invite = peer.request("INVITE", body=OFFER)
    peer.send(invite)
    assert codes(peer.send(invite)) == [180]
    peer.advance(0.5)
    assert codes(peer.send(invite)) == [200]


def test_bye_ends_call_and_retransmitted_bye_is_answered(peer: Peer, ports: FakePorts) -> None:
    tag = peer.answered_call()
    peer.events()
    bye = peer.request("BYE", cseq=2, to_tag=tag, branch="z9hG4bKbye")
    assert codes(peer.send(bye)) == [200]
    assert peer.events() == [CallEnded("call-1", "remote BYE")]
    assert ports.closed == ["call-1"]
    assert codes(peer.send(bye)) == [200]  # the 200 was lost: same answer, no second end
    assert peer.events() == []
    peer.advance(60.0)
    assert peer.uas.get_timer() is None  # nothing lingers


def test_cancel_before_answer_gives_487(peer: Peer, ports: FakePorts) -> None:
    peer.send(peer.request("INVITE", body=OFFER))
    sent = peer.send(peer.request("CANCEL"))
    assert [(m.code, m.cseq.method) for m in sent if isinstance(m, Response)] == [
        (200, "CANCEL"),
        (487, "INVITE"),
    ]
    assert peer.events() == [CallEnded("call-1", "cancelled")]
    assert ports.open_calls == {}  # never answered, no port opened
    # The 487 is retransmitted until its ACK, then nothing more.
    assert codes(peer.advance(0.5)) == [487]
    tag = sent[1].to_address.parameters["tag"]
    peer.send(peer.request("ACK", to_tag=tag))
    assert peer.advance(40.0) == []


def test_cancel_after_answer_changes_nothing(peer: Peer) -> None:
    peer.answered_call()
    assert codes(peer.send(peer.request("CANCEL"))) == [200]
    assert not any(isinstance(e, CallEnded) for e in peer.events())


def test_no_acceptable_codec_gives_488(peer: Peer, ports: FakePorts) -> None:
    offer = OFFER.replace(b"RTP/AVP 8 0 101", b"RTP/AVP 9").replace(
        b"a=rtpmap:8 PCMA/8000", b"a=rtpmap:9 G722/8000"
    )
    assert codes(peer.send(peer.request("INVITE", body=offer))) == [100, 488]
    assert codes(peer.send(peer.request("INVITE"))) == [488]  # retransmission
    assert peer.events() == [CallEnded("call-1", "rejected 488")]
    assert codes(peer.send(peer.request("INVITE", "call-2"))) == [100, 488]  # no offer


def test_options_and_unknown_dialogs(peer: Peer) -> None:
    [ok] = peer.send(peer.request("OPTIONS", "probe"))
    assert isinstance(ok, Response) and ok.code == 200
    assert "INVITE" in (ok.headers.get("Allow") or "")
    assert codes(peer.send(peer.request("BYE", "nope", to_tag="x"))) == [481]
    assert codes(peer.send(peer.request("CANCEL", "nope"))) == [481]
    assert codes(peer.send(peer.request("SUBSCRIBE", "nope"))) == [405]
    assert peer.send(peer.request("ACK", "nope", to_tag="x")) == []


def test_max_duration_sends_bye() -> None:
    ports = FakePorts()
    peer = Peer(DemoUas(local_addr=LOCAL, rtp_host="127.0.0.1", rtp_ports=ports, max_duration=60.0))
    tag = peer.answered_call()
    peer.events()
    assert peer.advance(59.0) == []  # answered at 0.5 s, now 60 s
    [bye] = peer.advance(0.5)
    assert isinstance(bye, Request) and bye.method == "BYE"
    assert bye.from_address.parameters["tag"] == tag
    assert bye.to_address.parameters["tag"] == "caller"
    assert str(bye.uri) == "sip:alice@127.0.0.1:40000"  # the caller's Contact
    assert peer.events() == [CallEnded("call-1", "maximum duration")]
    assert ports.closed == ["call-1"]
    # Retransmitted until a response, which ends the transaction.
    assert [m.method for m in peer.advance(0.5) if isinstance(m, Request)] == ["BYE"]
    ok = Response(200, "OK")
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        ok.headers.add(name, bye.headers[name])
    ok.headers.add("Content-Length", "0")
    peer.send(bytes(ok))
    assert peer.advance(40.0) == []


def test_many_concurrent_calls(peer: Peer, ports: FakePorts) -> None:
    for n in range(20):
        peer.send(peer.request("INVITE", f"call-{n}", body=OFFER, branch=f"z9hG4bK{n}"))
    assert len(codes(peer.advance(0.5))) == 20
    assert len(set(ports.open_calls.values())) == 20


def test_shutdown_byes_answered_and_rejects_ringing(peer: Peer) -> None:
    peer.answered_call("up")
    peer.send(peer.request("INVITE", "ringing", body=OFFER))
    peer.uas.shutdown(peer.now)
    sent = peer.flush()
    assert [m.method for m in sent if isinstance(m, Request)] == ["BYE"]
    assert codes(sent) == [503]


def test_no_rtp_port_gives_503() -> None:
    peer = Peer(DemoUas(local_addr=LOCAL, rtp_host="127.0.0.1", rtp_ports=FakePorts(fail=True)))
    peer.send(peer.request("INVITE", body=OFFER))
    assert codes(peer.advance(0.5)) == [503]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\r\n\r\n",
        b"\x00\xff garbage",
        b"HELLO\r\n\r\n",
        b"INVITE sip:x SIP/2.0\r\nno colon here\r\n\r\n",
        b"SIP/2.0 abc OK\r\n\r\n",
        b"SIP/2.0 200 OK\r\nCall-ID: unknown\r\nCSeq: 1 BYE\r\n\r\n",
    ],
)
def test_garbage_is_dropped(peer: Peer, data: bytes) -> None:
    assert peer.send(data) == []


def test_bad_request_with_a_via_gets_400(peer: Peer) -> None:
    invite = peer.request("INVITE", body=OFFER)
    invite.headers.set("CSeq", "one INVITE")
    assert codes(peer.send(invite)) == [400]
    broken = bytes(peer.request("OPTIONS")).replace(b"Max-Forwards: 70", b"Max-Forwards 70")
    assert codes(peer.send(broken)) == [400]
    truncated = peer.request("INVITE", "call-2", body=OFFER)
    truncated.headers.set("Content-Length", "9999")
    assert codes(peer.send(truncated)) == [400]
