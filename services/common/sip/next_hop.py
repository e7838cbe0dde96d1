"""Where a request within a dialog is sent (RFC 3261 12.2.1.1 and 8.1.2). Pure.

The first Route when it is a loose router, else the Request-URI (the remote
target, or a strict router that took its place). Only IP literals are used
as they are: a host name there falls back to the trunk's resolved address,
so an in-dialog request never waits on DNS; so does a private address when
the trunk's own is public (a trunk behind NAT naming its inside address).
"""

from __future__ import annotations

import ipaddress

from sipmessage import URI, Address, Request

from services.common.sip.message import tag_of, top_branch

Addr = tuple[str, int]


class Hops:
    """Where the requests of one call go: the trunk outside a dialog, else the next hop."""

    def __init__(self, trunk: Addr) -> None:
        self.trunk = trunk
        self._trunk_branches: set[str] = set()
        "Branches of requests outside a dialog (INVITE): their CANCEL and non-2xx ACK follow."

    def destination(self, request: Request) -> Addr:
        branch = top_branch(request)
        if branch in self._trunk_branches or not tag_of(request.headers.get("To") or ""):
            self._trunk_branches.add(branch)
            return self.trunk
        return next_hop(request, self.trunk)


def next_hop(request: Request, default: Addr) -> Addr:
    """The address ``request`` goes to; ``default`` when it names no usable IP address."""
    routes = request.headers.getlist("Route")
    uri: URI = request.uri
    if routes:
        try:
            first = Address.parse_many(routes[0])[0].uri
        except (ValueError, IndexError):
            return default
        if "lr" in first.parameters:
            uri = first
    host = uri.host.strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return default
    if address.is_private and not _private(default[0]):
        # A trunk behind NAT that put its inside address in Contact or Record-Route:
        # unreachable from here, so the address we reach the trunk at is used.
        return default
    port = uri.port or (5061 if uri.scheme == "sips" else 5060)
    return host, port


def _private(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_private
    except ValueError:
        return False
