"""Where a browser's offer goes: the destination and the route's check of its headers.

Pure functions of the settings; a refusal is a ``MessageError`` for the browser.
"""

from __future__ import annotations

from services.common.providers import HeaderError
from services.common.settings import Settings
from services.signaling import messages
from services.signaling.messages import MessageError

DEMO_DESTINATION = "echo"
"Where every call goes in demo mode: the built-in echo peer."


def pick_destination(settings: Settings, requested: str) -> str:
    """The destination of an offer: the requested one, else the default; echo in demo mode."""
    if settings.demo:
        return DEMO_DESTINATION
    destination = requested or settings.default_destination
    if not destination:
        raise MessageError(
            messages.NO_DESTINATION, "no destination given and no default configured"
        )
    if not messages.is_valid_destination(destination):
        raise MessageError(
            messages.BAD_DESTINATION,
            "destination must be 1-64 characters: letters, digits or +-_.!~*'()&=$,;?/#",
        )
    return destination


def route_trunk(settings: Settings, destination: str) -> str:
    """The name of the trunk ``destination`` goes to (empty in demo mode or without a route);
    the media worker shapes the trunk offer to it (codecs, SRTP)."""
    if settings.demo:
        return ""
    target = settings.providers.route(destination)
    return target.trunk.name if target is not None else ""


def check_route(settings: Settings, destination: str, headers: dict[str, str]) -> dict[str, str]:
    """The offer's headers if ``destination`` has a route that allows them.

    Refused here, before any work is published, so an unknown destination
    costs no media port and no INVITE leaves. The SIP agent routes again
    from the same file and is the one that picks the trunk.
    """
    if settings.demo:
        return {}
    target = settings.providers.route(destination)
    if target is None:
        raise MessageError(messages.UNKNOWN_DESTINATION, f"no route to destination {destination!r}")
    try:
        target.check_headers(headers)
    except HeaderError as exc:
        raise MessageError(messages.BAD_HEADERS, str(exc)) from None
    return headers
