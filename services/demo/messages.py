"""What the demo peer writes: its responses, its 200 OK with the SDP answer, its BYE.

Pure functions of a request and the dialog's fields; the call state machine
(``uas``) decides which to send and when. ``read_offer`` judges an INVITE's
offer: what the echo will use, or the error response that refuses it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from sipmessage import Address, Request, Response

from services.common.sip.message import make_request, make_response, new_branch, tag_of
from services.demo import sdp
from services.demo.events import Addr

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, REGISTER"
SERVER = "webrtc-sip-bridge demo peer"


@dataclass(frozen=True, slots=True)
class Local:
    """Where the demo peer listens, as its Via and Contact headers say it."""

    addr: Addr
    "The address of the SIP transport."
    transport: str
    "UDP or TCP, upper case."

    @property
    def hostport(self) -> str:
        host, port = self.addr
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def contact(self) -> str:
        suffix = "" if self.transport == "UDP" else f";transport={self.transport.lower()}"
        return f"<sip:demo@{self.hostport}{suffix}>"

    def via(self) -> str:
        """A Via header with a fresh branch, for a request of ours."""
        return f"SIP/2.0/{self.transport} {self.hostport};branch={new_branch()};rport"


@dataclass(frozen=True, slots=True)
class Refusal:
    """An offer the demo peer will not answer: the error response's code and headers."""

    code: int
    headers: list[tuple[str, str]] = field(default_factory=list)


def read_offer(request: Request) -> sdp.Negotiated | Refusal:
    """What the echo will use of an INVITE's offer, or why it is refused."""
    unsupported = request.require
    if unsupported:
        return Refusal(420, [("Unsupported", ", ".join(unsupported))])
    content_type = request.headers.get("Content-Type", "application/sdp") or ""
    if content_type.split(";")[0].strip().lower() != "application/sdp":
        return Refusal(415, [("Accept", "application/sdp")])
    # No offer means the caller wants ours; an echo test does not need that flow.
    negotiated = sdp.negotiate(request.body) if request.body else None
    if negotiated is None:
        return Refusal(488, [("Warning", '304 demo "only PCMU or PCMA audio over RTP/AVP"')])
    return negotiated


def build_response(
    request: Request,
    code: int,
    *,
    to_tag: str | None = None,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> Response:
    """A response of the demo peer to ``request`` (To tagged if asked)."""
    return make_response(
        request,
        code,
        to_tag=to_tag or "",
        headers=[("Server", SERVER), *(headers or [])],
        body=body,
        content_type="application/sdp" if body else None,
    )


def build_ok(invite: Request, local_tag: str, contact: str, body: bytes) -> Response:
    """The 200 OK to an INVITE, with our SDP answer ``body``."""
    headers = [
        ("Contact", contact),
        *(("Record-Route", rr) for rr in invite.headers.getlist("Record-Route")),
        ("Allow", ALLOW),
    ]
    return build_response(invite, 200, to_tag=local_tag, headers=headers, body=body)


def build_bye(
    invite: Request, *, local_tag: str, routes: list[str], cseq: int, via: str
) -> Request:
    """Our BYE in the dialog the caller's ``invite`` formed; we are its callee."""
    remote = invite.contact
    from_header = invite.headers["From"]
    target = str(remote[0].uri) if remote else str(Address.parse(from_header).uri)
    to_header = invite.headers["To"]
    if not tag_of(to_header):
        to_header = f"{to_header};tag={local_tag}"
    # We are the callee: the route set is the Record-Route list in its order (RFC 3261 12.1.1).
    return make_request(
        "BYE",
        target,
        [
            ("Via", via),
            ("Max-Forwards", "70"),
            *(("Route", route) for route in routes),
            ("From", to_header),
            ("To", from_header),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{cseq} BYE"),
            ("User-Agent", SERVER),
        ],
    )


def options_response(request: Request, to_tag: str | None) -> Response:
    """200 to OPTIONS: what the demo peer allows and accepts."""
    headers = [("Allow", ALLOW), ("Accept", "application/sdp")]
    return build_response(request, 200, to_tag=to_tag, headers=headers)


def register_response(request: Request, to_tag: str | None) -> Response:
    """200 to any REGISTER: a trunk configuration may register first."""
    headers = [("Contact", c) for c in request.headers.getlist("Contact")]
    headers.append(("Expires", request.headers.get("Expires", "3600") or "3600"))
    return build_response(request, 200, to_tag=to_tag, headers=headers)


def session_id(call_id: str) -> int:
    """The o= session id of our answers: stable per call, so re-answers only raise its version."""
    return random.Random(call_id).randrange(1, 2**31)
