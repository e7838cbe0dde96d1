"""Where a browser's offer goes, and whether it may: the dial plan, pure functions.

The destination is normalized (``services.common.dialplan``) before any rule
sees it, then judged in this order, the first refusal winning: the global
``DIAL_DENY``, the route (unknown destinations), the route's and the trunk's
``deny``, the client token's ``dst``, the route's and the trunk's ``allow``,
and finally the route's check of the custom headers. A refusal is a
``MessageError`` for the browser, raised before any work is published, so no
media port is taken and no INVITE leaves.
"""

from __future__ import annotations

from dataclasses import dataclass

from proto import errors
from services.common.custom_headers import HeaderError
from services.common.dialplan import DestinationError, Pattern, allowed_by, denied_by, normalize
from services.common.providers import Target
from services.common.settings import Settings
from services.signaling import messages
from services.signaling.messages import MessageError
from services.signaling.tokens import Claims

DEMO_DESTINATION = "echo"
"Where every call goes in demo mode: the built-in echo peer."


class Refused(MessageError):
    """A destination the dial plan refuses, with what the audit line needs."""

    def __init__(self, code: str, message: str, number: str = "", trunk: str = "") -> None:
        super().__init__(code, message)
        self.number = number
        self.trunk = trunk


@dataclass(frozen=True)
class Destination:
    """An offer's destination, judged."""

    given: str
    "As the browser sent it (or the default)."
    number: str
    "Normalized: what the rules saw and the SIP agent dials."
    trunk: str
    "The trunk it routes to (empty in demo mode)."
    headers: dict[str, str]
    "The offer's custom headers, allowed by the route."


def resolve(
    settings: Settings, requested: str, headers: dict[str, str], claims: Claims | None
) -> Destination:
    """Judge an offer's destination; ``MessageError`` with the refusal's code."""
    if settings.demo:
        return Destination(requested, DEMO_DESTINATION, "", {})
    given = requested or settings.default_destination
    if not given:
        raise MessageError(
            messages.NO_DESTINATION, "no destination given and no default configured"
        )
    try:
        number = normalize(given, settings.access.national)
    except DestinationError as exc:
        raise MessageError(messages.BAD_DESTINATION, str(exc)) from None
    _deny(settings.access.dial_deny, number, "", "the bridge's dial plan")
    target = settings.providers.route(number)
    if target is None:
        raise Refused(messages.UNKNOWN_DESTINATION, f"no route to destination {number!r}", number)
    route, trunk = target.route, target.trunk
    if route is not None:
        _deny(route.deny, number, trunk.name, "its route")
    _deny(trunk.deny, number, trunk.name, "its trunk")
    if claims is not None and claims.dst is not None and not _token_allows(claims, target, number):
        raise _forbidden(number, trunk.name, "your token")
    if route is not None and route.allow is not None and not allowed_by(route.allow, number):
        raise _forbidden(number, trunk.name, "its route")
    if trunk.allow is not None and not allowed_by(trunk.allow, number):
        raise _forbidden(number, trunk.name, "its trunk")
    try:
        target.check_headers(headers)
    except HeaderError as exc:
        raise Refused(messages.BAD_HEADERS, str(exc), number, trunk.name) from None
    return Destination(given, number, trunk.name, headers)


def _token_allows(claims: Claims, target: Target, number: str) -> bool:
    if allowed_by(claims.dst_patterns, number):
        return True
    name = target.route.name if target.route is not None else ""
    return bool(name) and name in (claims.dst or ())


def _deny(patterns: tuple[Pattern, ...], number: str, trunk: str, where: str) -> None:
    if denied_by(patterns, number) is not None:
        raise _forbidden(number, trunk, where)


def _forbidden(number: str, trunk: str, by: str) -> Refused:
    return Refused(errors.FORBIDDEN_DESTINATION, f"{number} is not allowed by {by}", number, trunk)
