"""A confirmed call toward an in-memory trunk, for the in-dialog tests (no sockets, fake clock)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from sipmessage import Request, Response

from services.common.sip.message import parse_message
from services.sipagent.call import OutboundCall
from services.sipagent.events import CallEvent
from services.sipagent.transfer import TransferringCall
from tests.unit.sipagent.trunk import make_call, respond, trunk_request

OUR_OFFER = (
    "v=0\r\no=- 7 7 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
)


def trunk_sdp(
    direction: str = "sendrecv",
    *,
    port: int = 30000,
    formats: str = "0 101",
    address: str = "198.51.100.7",
    version: int = 1,
) -> str:
    lines = [
        "v=0",
        f"o=trunk 5 {version} IN IP4 {address}",
        "s=-",
        f"c=IN IP4 {address}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {formats}",
    ]
    if "101" in formats.split():
        lines += ["a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-15"]
    if "18" in formats.split():
        lines.append("a=rtpmap:18 G729/8000")
    lines.append(f"a={direction}")
    return "\r\n".join(lines) + "\r\n"


def with_body(request: Request, body: str, content_type: str = "application/sdp") -> Request:
    request.body = body.encode()
    request.headers.set("Content-Type", content_type)
    request.headers.set("Content-Length", str(len(request.body)))
    return request


def only_request(messages: list[Request | Response]) -> Request:
    """The one message sent, which must be a request."""
    (message,) = messages
    assert isinstance(message, Request)
    return message


def methods(messages: list[Request | Response]) -> list[str]:
    return [m.method if isinstance(m, Request) else str(m.code) for m in messages]


@dataclass
class Peer:
    """A call driven through the wire format, with its events and a fake clock."""

    call: TransferringCall
    now: float = 0.0
    events: list[CallEvent] = field(default_factory=list)
    invite: Request | None = None
    ok: Response | None = None
    cseq: int = 1
    "The trunk's last CSeq in the dialog."

    def pump(self) -> list[Request | Response]:
        out = [parse_message(bytes(m)) for m in self.call.messages_to_send()]
        while (event := self.call.next_event()) is not None:
            self.events.append(event)
        return out

    def feed(self, message: Request | Response) -> list[Request | Response]:
        self.call.receive(parse_message(bytes(message)), self.now)
        return self.pump()

    def advance(self, to: float) -> list[Request | Response]:
        out: list[Request | Response] = []
        while (deadline := self.call.get_timer()) is not None and deadline <= to:
            self.now = max(self.now, deadline)
            self.call.handle_timer(self.now)
            out += self.pump()
        self.now = to
        return out

    def request(
        self, method: str, body: str = "", content_type: str = "application/sdp"
    ) -> Request:
        """A new request of the trunk in the dialog."""
        assert self.invite is not None and self.ok is not None
        self.cseq += 1
        request = trunk_request(method, self.invite, self.ok, self.cseq, f"z9hG4bKt{self.cseq}")
        request.headers.add("Contact", "<sip:trunk@198.51.100.7:5060>")
        return with_body(request, body, content_type) if body else request

    def ack(self, reinvite: Request, body: str = "") -> Request:
        """The trunk's ACK of our 2xx to its ``reinvite``."""
        ack = self.request("ACK", body) if body else self.request("ACK")
        ack.headers.set("CSeq", f"{reinvite.cseq.sequence} ACK")
        self.cseq -= 1
        return ack

    def do(self, action: object) -> list[Request | Response]:
        """Run ``action(now)`` on the call and return what it sent."""
        action(self.now)  # type: ignore[operator]
        return self.pump()


def answered_call(
    *,
    keepalive: float = 0.0,
    dtmf: str = "rfc4733",
    transfer: str = "follow",
    answer: str = "",
    answer_headers: list[tuple[str, str]] | None = None,
) -> Peer:
    """A call answered 200 with ``answer`` (default: PCMU and telephone-event, sendrecv)."""

    def place(uri: str, sip_call_id: str = "") -> OutboundCall:
        params: dict[str, object] = {
            "offer_sdp": OUR_OFFER,
            "keepalive": keepalive,
            "dtmf": dtmf,
            "transfer": transfer,
            "rng": random.Random(7),
            "request_uri": uri,
        }
        if sip_call_id:
            params["sip_call_id"] = sip_call_id
        return make_call(**params)

    call = TransferringCall(place("sip:+15551234567@trunk.test", "call-1"), place)
    peer = Peer(call)
    call.start(peer.now)
    (invite,) = peer.pump()
    assert isinstance(invite, Request)
    peer.invite = invite
    peer.ok = respond(invite, 200, body=answer or trunk_sdp(), headers=answer_headers)
    assert methods(peer.feed(peer.ok)) == ["ACK"]
    return peer
