"""An in-memory SIP trunk built from sipmessage, and a fake clock, for the call tests."""

from __future__ import annotations

from dataclasses import dataclass, field

from sipmessage import URI, Request, Response

from services.common.sip.auth import parse_params
from services.common.sip.message import parse_message
from services.sipagent.call import OutboundCall
from services.sipagent.events import CallEvent

USERNAME = "bridge"
PASSWORD = "s3cr:t#p@ss"
OFFER = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
ANSWER = "v=0\r\no=trunk 2 2 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n"


def make_call(**overrides: object) -> OutboundCall:
    params: dict[str, object] = {
        "call_id": "c1",
        "request_uri": "sip:+15551234567@trunk.test",
        "from_uri": f"sip:{USERNAME}@trunk.test",
        "contact": f"<sip:{USERNAME}@192.0.2.1:5070;transport=udp>",
        "sent_by": "192.0.2.1:5070",
        "offer_sdp": OFFER,
        "username": USERNAME,
        "password": PASSWORD,
        "transport": "udp",
        "invite_timeout": 60.0,
    }
    params.update(overrides)
    return OutboundCall(**params)  # type: ignore[arg-type]


def wire(messages: list[Request | Response]) -> list[Request | Response]:
    """Serialize and parse again, as the network would."""
    return [parse_message(bytes(message)) for message in messages]


def parse_response(data: bytes) -> Response:
    response = parse_message(data)
    assert isinstance(response, Response)
    return response


def respond(
    request: Request,
    code: int,
    phrase: str = "",
    *,
    to_tag: str | None = "trunk-tag",
    body: str = "",
    headers: list[tuple[str, str]] | None = None,
) -> Response:
    """A trunk response to ``request``, headers copied as a UAS does."""
    response = Response(code, phrase or {200: "OK", 180: "Ringing"}.get(code, "Status"))
    for value in request.headers.getlist("Via"):
        response.headers.add("Via", value)
    response.headers.add("From", request.headers["From"])
    to = request.headers["To"]
    if to_tag and ";tag=" not in to:
        to += f";tag={to_tag}"
    response.headers.add("To", to)
    response.headers.add("Call-ID", request.call_id)
    response.headers.add("CSeq", request.headers["CSeq"])
    if 200 <= code < 300 or code in (180, 183):
        response.headers.add("Contact", "<sip:trunk@198.51.100.7:5060>")
    for name, value in headers or []:
        response.headers.add(name, value)
    if body:
        response.headers.add("Content-Type", "application/sdp")
    response.body = body.encode()
    response.headers.add("Content-Length", str(len(response.body)))
    return response


def trunk_request(
    method: str, invite: Request, answer: Response, cseq: int = 1, branch: str = "z9hG4bKtrunk1"
) -> Request:
    """A request the trunk sends within the dialog of ``answer``."""
    request = Request(method, URI.parse("sip:bridge@192.0.2.1:5070"))
    request.headers.add("Via", f"SIP/2.0/UDP 198.51.100.7:5060;branch={branch}")
    request.headers.add("From", answer.headers["To"])
    request.headers.add("To", invite.headers["From"])
    request.headers.add("Call-ID", invite.call_id)
    request.headers.add("CSeq", f"{cseq} {method}")
    request.headers.add("Max-Forwards", "70")
    request.headers.add("Content-Length", "0")
    return request


def auth_params(request: Request, header: str = "Authorization") -> dict[str, str]:
    value = request.headers[header]
    assert value.startswith("Digest ")
    return parse_params(value[len("Digest ") :])


@dataclass
class Harness:
    """A call, a fake clock and what the call sent, pulled through the wire."""

    call: OutboundCall
    now: float = 0.0
    sent: list[Request | Response] = field(default_factory=list)
    events: list[CallEvent] = field(default_factory=list)

    def pump(self) -> list[Request | Response]:
        out = wire(self.call.messages_to_send())
        self.sent += out
        while (event := self.call.next_event()) is not None:
            self.events.append(event)
        return out

    def start(self) -> Request:
        self.call.start(self.now)
        (invite,) = self.pump()
        assert isinstance(invite, Request)
        return invite

    def feed(self, message: Request | Response) -> list[Request | Response]:
        self.call.receive(parse_message(bytes(message)), self.now)
        return self.pump()

    def advance(self, to: float) -> list[Request | Response]:
        """Run every timer up to ``to``."""
        out: list[Request | Response] = []
        while (deadline := self.call.get_timer()) is not None and deadline <= to:
            self.now = max(self.now, deadline)
            self.call.handle_timer(self.now)
            out += self.pump()
        self.now = to
        return out
