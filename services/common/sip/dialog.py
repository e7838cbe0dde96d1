"""A dialog (RFC 3261 section 12), sans-I/O.

Created from the 2xx that answers our INVITE (UAC) or from the trunk's
INVITE we answer (UAS); builds the requests sent within it and recognises
the requests the trunk sends within it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sipmessage import URI, Address, Request, Response

from services.common.sip.message import SipParseError, make_request, tag_of


@dataclass
class Dialog:
    """Dialog state: identifiers, sequence numbers, remote target and route set."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_from: str
    "The From of our requests, tag included, verbatim (the To of the INVITE we answered)."
    remote_to: str
    "The To of our requests, tag included, verbatim (the From of the INVITE we answered)."
    remote_target: URI
    local_cseq: int
    route_set: list[str] = field(default_factory=list)
    "Route values in sending order (Record-Route of the 2xx reversed, or of the INVITE as is)."
    remote_cseq: int | None = None

    @classmethod
    def from_response(cls, invite: Request, response: Response) -> Dialog:
        """The dialog a 2xx (or a 1xx with a To tag) to ``invite`` establishes."""
        try:
            remote_tag = tag_of(response.headers["To"])
            contacts = response.contact
            records = [
                str(address)
                for value in response.headers.getlist("Record-Route")
                for address in Address.parse_many(value)
            ]
        except (KeyError, ValueError) as exc:
            raise SipParseError(f"cannot make a dialog: {exc}") from None
        if not remote_tag:
            raise SipParseError("response without a To tag")
        return cls(
            call_id=invite.call_id,
            local_tag=tag_of(invite.headers["From"]),
            remote_tag=remote_tag,
            local_from=invite.headers["From"],
            remote_to=response.headers["To"],
            # A 2xx without Contact is broken; the Request-URI is the best guess.
            remote_target=contacts[0].uri if contacts else invite.uri,
            local_cseq=invite.cseq.sequence,
            route_set=list(reversed(records)),
        )

    @classmethod
    def from_request(cls, invite: Request, local_tag: str) -> Dialog:
        """The UAS side of the dialog ``invite`` asks for, with our tag (RFC 3261 12.1.1).

        The remote target is the INVITE's Contact, the route set its
        Record-Route in order, the remote CSeq its CSeq.
        """
        try:
            remote_tag = tag_of(invite.headers["From"])
            contacts = invite.contact
            records = [
                str(address)
                for value in invite.headers.getlist("Record-Route")
                for address in Address.parse_many(value)
            ]
            to = invite.headers["To"]
        except (KeyError, ValueError) as exc:
            raise SipParseError(f"cannot make a dialog: {exc}") from None
        if not contacts:
            raise SipParseError("INVITE without a Contact")
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_from=to if tag_of(to) else f"{to};tag={local_tag}",
            remote_to=invite.headers["From"],
            remote_target=contacts[0].uri,
            local_cseq=0,
            route_set=records,
            remote_cseq=invite.cseq.sequence,
        )

    def matches(self, request: Request) -> bool:
        """Whether an incoming request belongs to this dialog (tags swapped)."""
        return (
            request.call_id == self.call_id
            and tag_of(request.headers["To"]) == self.local_tag
            and tag_of(request.headers["From"]) == self.remote_tag
        )

    def accept_remote_cseq(self, request: Request) -> bool:
        """Record the CSeq of a new incoming request; False when out of order."""
        sequence = request.cseq.sequence
        if self.remote_cseq is not None and sequence <= self.remote_cseq:
            return False
        self.remote_cseq = sequence
        return True

    def create_request(
        self,
        method: str,
        via: str,
        *,
        cseq: int | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Request:
        """A request within the dialog; a new CSeq unless ``cseq`` is given (ACK)."""
        if cseq is None:
            self.local_cseq += 1
            cseq = self.local_cseq
        uri, routes = self.remote_target, list(self.route_set)
        if routes and not _loose(routes[0]):
            # Strict router (RFC 3261 12.2.1.1): it takes the Request-URI.
            uri = Address.parse(routes.pop(0)).uri
            routes.append(f"<{self.remote_target}>")
        return make_request(
            method,
            uri,
            [
                ("Via", via),
                ("Max-Forwards", "70"),
                *(("Route", route) for route in routes),
                ("From", self.local_from),
                ("To", self.remote_to),
                ("Call-ID", self.call_id),
                ("CSeq", f"{cseq} {method}"),
                *headers,
            ],
            body,
            content_type,
        )

    def refresh_target(self, message: Request | Response) -> None:
        """Take the Contact of a target refresh request or its 2xx (RFC 3261 12.2)."""
        try:
            contacts = message.contact
        except ValueError:
            return
        if contacts:
            self.remote_target = contacts[0].uri


def _loose(route: str) -> bool:
    try:
        return "lr" in Address.parse(route).uri.parameters
    except ValueError:
        return True
