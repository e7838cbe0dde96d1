"""Building the demo peer's SIP responses and requests from the requests it received."""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from sipmessage import Address, Request

PHRASES = {
    100: "Trying",
    180: "Ringing",
    200: "OK",
    400: "Bad Request",
    405: "Method Not Allowed",
    415: "Unsupported Media Type",
    420: "Bad Extension",
    481: "Call/Transaction Does Not Exist",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    503: "Service Unavailable",
}
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, REGISTER"
SERVER = "webrtc-sip-bridge demo peer"
# Header names as written on the wire, with the compact forms of RFC 3261 section 7.3.3.
_COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id"}
_DIALOG_HEADERS = ("via", "from", "to", "call-id", "cseq")


def new_tag() -> str:
    return secrets.token_hex(6)


def new_branch() -> str:
    # The magic cookie marks an RFC 3261 branch.
    return "z9hG4bK" + secrets.token_hex(8)


def with_tag(to_header: str, tag: str) -> str:
    """The To header value with our tag, unless it already has one."""
    if Address.parse(to_header).parameters.get("tag"):
        return to_header
    # Appending keeps the caller's text as it was; parameters end the header value.
    return f"{to_header};tag={tag}"


def _serialize(start: str, headers: Iterable[tuple[str, str]], body: bytes) -> bytes:
    lines = [start, *(f"{name}: {value}" for name, value in headers)]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def build_response(
    request: Request,
    code: int,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> bytes:
    """A response to ``request``: Via, From, Call-ID and CSeq copied, To tagged if asked."""
    to = request.headers["To"]
    copied = [("Via", via) for via in request.headers.getlist("Via")]
    copied += [
        ("From", request.headers["From"]),
        ("To", with_tag(to, to_tag) if to_tag else to),
        ("Call-ID", request.headers["Call-ID"]),
        ("CSeq", request.headers["CSeq"]),
        ("Server", SERVER),
        *headers,
    ]
    return _serialize(f"SIP/2.0 {code} {PHRASES.get(code, 'Unknown')}", copied, body)


def build_bad_request(data: bytes) -> bytes | None:
    """A 400 for a request that could not be parsed or lacks a mandatory header.

    Returns None for responses, ACKs and anything without a Via: those are dropped.
    """
    try:
        text = data.decode("utf-8", errors="replace")
        head = text.split("\r\n\r\n", 1)[0]
        lines = head.split("\r\n")
    except Exception:
        return None
    if not lines or lines[0].startswith(("SIP/", "ACK ")) or " SIP/2.0" not in lines[0]:
        return None
    found: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        key = name.strip().lower()
        key = _COMPACT.get(key, key)
        if sep and key in _DIALOG_HEADERS:
            found.append((key, value.strip()))
    # The Via alone routes the response back; the others are copied when readable.
    if not any(name == "via" for name, _ in found):
        return None
    spelled = {"via": "Via", "from": "From", "to": "To", "call-id": "Call-ID", "cseq": "CSeq"}
    headers = [(spelled[name], value) for name, value in found]
    return _serialize("SIP/2.0 400 Bad Request", headers, b"")


def build_request(
    method: str,
    uri: str,
    *,
    via: str,
    from_header: str,
    to_header: str,
    call_id: str,
    cseq: int,
    routes: Iterable[str] = (),
) -> bytes:
    """An in-dialog request of ours, such as the BYE at the end of the maximum duration."""
    headers = [
        ("Via", via),
        ("Max-Forwards", "70"),
        *(("Route", route) for route in routes),
        ("From", from_header),
        ("To", to_header),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} {method}"),
        ("User-Agent", SERVER),
    ]
    return _serialize(f"{method} {uri} SIP/2.0", headers, b"")
