"""One call placed on a trunk's targets in turn: the INVITE per target, when to move on.

Pure: ``invite_for`` builds the ``OutboundCall`` of a target (``sips:`` URIs
over TLS, the outbound proxy's preloaded Route); ``fails_over`` says whether
an ending lets the call try the next target. ``SipAgent`` does the rest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sipmessage import URI

from proto import errors
from services.common.providers import Trunk
from services.common.sipaddr import OutboundProxy, host_literal
from services.sipagent.call import OutboundCall
from services.sipagent.events import Ended
from services.sipagent.resolve import Target

# RFC 3261 user part: unreserved / escaped / user-unreserved, plus a raw "#"
# (PBX feature codes like "123#"), which is sent escaped as "%23".
_DESTINATION = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/#]|%[0-9A-Fa-f]{2}){1,128}")


def check_destination(destination: str) -> None:
    """Raise ``ValueError`` unless ``destination`` can be a SIP user part."""
    sip_user(destination)


def sip_user(destination: str) -> str:
    """``destination`` as a SIP user part, ``#`` escaped; ``ValueError`` if it cannot be one."""
    if not _DESTINATION.fullmatch(destination):
        raise ValueError("only SIP user-part characters and # are allowed (up to 128)")
    # "#" is not allowed raw in a user part (RFC 3261 25.1): escape it.
    return destination.replace("#", "%23")


def request_uri_for(destination: str, domain: str, scheme: str = "sip") -> str:
    """``sip:<destination>@<domain>``; ``ValueError`` unless a valid SIP user part."""
    uri = URI.parse(f"{scheme}:{sip_user(destination)}@{host_literal(domain)}")
    # As it goes on the wire, so the digest "uri" matches the Request-URI exactly.
    return str(uri)


@dataclass
class DialPlan:
    """What a failover needs to place the same call on the next target."""

    trunk: Trunk
    destination: str
    offer_sdp: str
    headers: list[tuple[str, str]]
    targets: list[Target]
    "Targets not tried yet, in order."
    deadline: float
    "INVITE_TIMEOUT counts from the first INVITE, across targets."
    proxy: OutboundProxy | None = None
    invite_timeout: float = 60.0
    "INVITE_TIMEOUT itself: a transfer's INVITE, long after ``deadline``, gets all of it."


def invite_for(
    call_id: str,
    plan: DialPlan,
    target: Target,
    transport: str,
    sent_by: str,
    t1: float,
    now: float,
    *,
    keepalive: float = 0.0,
    request_uri: str = "",
) -> OutboundCall:
    """The INVITE of ``plan`` toward ``target``: ``sips:`` URIs over TLS (RFC 3261 26.2).

    ``request_uri``: another party than ``plan.destination`` (a transfer's
    Refer-To target), which gets none of the browser's custom headers and a
    full ``plan.invite_timeout`` of its own: ``plan.deadline`` is long past by then.
    """
    trunk = plan.trunk
    scheme = "sips" if target.transport == "tls" else "sip"
    domain = trunk.realm_domain
    user = f"{trunk.username}@" if trunk.username else ""
    contact = f"<sip:{user}{sent_by};transport={transport}>"
    if scheme == "sips":
        contact = f"<sips:{user}{sent_by}>"
    # Custom headers are for the party dialled; a transfer target gets none.
    headers = [] if request_uri else list(plan.headers)
    if plan.proxy is not None:
        # RFC 3261 8.1.2: a preloaded Route; the CANCEL and the ACK of a failure copy it.
        headers.insert(0, ("Route", plan.proxy.route(target.transport)))
    return OutboundCall(
        call_id=call_id,
        request_uri=request_uri or request_uri_for(plan.destination, domain, scheme),
        from_uri=f"{scheme}:{trunk.username or 'anonymous'}@{host_literal(domain)}",
        contact=contact,
        sent_by=sent_by,
        offer_sdp=plan.offer_sdp,
        username=trunk.username,
        password=trunk.password,
        transport=transport,
        invite_timeout=plan.invite_timeout if request_uri else max(plan.deadline - now, 0.0),
        t1=t1,
        invite_headers=headers,
        dtmf=trunk.dtmf,
        keepalive=keepalive,
        transfer=trunk.transfer,
    )


def fails_over(ended: Ended, *, provisional: bool, hung_up: bool, transport_failed: bool) -> bool:
    """Whether the call may move to the next target instead of ending with ``ended``.

    No response at all (Timer B, a connection that could not be opened) or a
    503, and only before any provisional response but 100 and unless the caller hung up.
    """
    if provisional or hung_up:
        return False
    timer_b = ended.cause == errors.TIMEOUT and ended.status == 408
    return transport_failed or timer_b or ended.status == 503
