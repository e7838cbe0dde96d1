"""Several SIP providers routed by destination: the ``PROVIDERS_FILE`` and its rules.

Pure code, no I/O beyond reading the file: named trunks, routes from a
destination to a trunk and a target user, and the custom SIP headers a call
may carry (static per trunk, per call from the browser). Signaling uses it to
refuse an unknown destination or a header it may not send before any work is
published; the SIP agent uses it to pick the trunk of each INVITE.

The seed's single-trunk ``.env`` (``SIP_TRUNK_HOST``…) is the trunk named
``default``: with no providers file every destination goes to it; with one,
routes may name it, and ``fallback = "default"`` sends what no route matches
there. ``docs/configuration.md`` describes the file. One trunk's table is
``trunks.py``; what every table shares, ``provider_fields.py``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from services.common.custom_headers import RESERVED, RESERVED_COMPACT, HeaderError
from services.common.dialplan import Pattern
from services.common.inbound_routes import InboundRoute, parse_inbound
from services.common.provider_fields import Fail, patterns_key, str_key, tokens_key
from services.common.provider_fields import ProvidersError as ProvidersError
from services.common.trunks import DEFAULT_TRUNK as DEFAULT_TRUNK
from services.common.trunks import Trunk as Trunk
from services.common.trunks import parse_trunk


@dataclass(frozen=True)
class Route:
    """``[[routes]]``: a destination (exact, or a regex with ``pattern = true``) to a trunk."""

    match: str
    trunk: str
    user: str = ""
    "User part to dial; empty: the destination itself."
    pattern: re.Pattern[str] | None = None
    "The compiled regex (``re.search``) when the route is a pattern."
    allow_headers: tuple[str, ...] | None = None
    "Overrides the trunk's ``allow_headers`` for calls of this route."
    name: str = ""
    "What a client token's ``dst`` may call this route by (optional)."
    allow: tuple[Pattern, ...] | None = None
    "Destinations this route may dial (exact or ``prefix*``); None: any it matches."
    deny: tuple[Pattern, ...] = ()
    "Destinations refused on this route."

    def matches(self, destination: str) -> bool:
        if self.pattern is not None:
            return self.pattern.search(destination) is not None
        return destination == self.match


@dataclass(frozen=True)
class Target:
    """Where one destination goes: the trunk, the user part to dial, the headers allowed."""

    trunk: Trunk
    user: str
    allow_headers: tuple[str, ...] | None
    route: Route | None = None
    "The route that matched; None for the fallback trunk."

    def allows(self, name: str) -> bool:
        """Whether the browser may set header ``name`` on calls to this target."""
        lower = name.lower()
        if lower in RESERVED or lower in RESERVED_COMPACT:
            return False
        if any(lower == static.lower() for static, _ in self.trunk.headers):
            return False  # the operator's value is not the browser's to replace
        if self.allow_headers is None:
            return lower.startswith("x-")
        return lower in (allowed.lower() for allowed in self.allow_headers)

    def check_headers(self, headers: Mapping[str, str]) -> None:
        """Raise ``HeaderError`` naming the first header this target does not allow."""
        for name in headers:
            if not self.allows(name):
                raise HeaderError(f"header {name} is not allowed for this destination")

    def invite_headers(self, headers: Mapping[str, str]) -> list[tuple[str, str]]:
        """The custom headers of the INVITE: the trunk's static ones, then the call's."""
        return [*self.trunk.headers, *headers.items()]


@dataclass(frozen=True)
class Providers:
    """The trunks and routes in force: from ``PROVIDERS_FILE``, or the default trunk alone."""

    trunks: Mapping[str, Trunk]
    routes: tuple[Route, ...] = ()
    fallback: str = ""
    "Trunk for destinations no route matches; empty: they are unknown."
    source: str = ""
    "The file they came from, for messages; empty without a file."
    inbound: tuple[InboundRoute, ...] = ()
    "``[[inbound]]``: which identities a called number rings, first match wins."

    @classmethod
    def single(cls, trunk: Trunk) -> Providers:
        """Every destination to ``trunk``: the seed's ``.env`` set-up."""
        return cls(trunks={trunk.name: trunk}, fallback=trunk.name)

    def route(self, destination: str) -> Target | None:
        """The target of ``destination``: the first route that matches, else the fallback."""
        for route in self.routes:
            if route.matches(destination):
                trunk = self.trunks[route.trunk]
                allow = route.allow_headers
                if allow is None:
                    allow = trunk.allow_headers
                return Target(trunk, route.user or destination, allow, route)
        if self.fallback:
            trunk = self.trunks[self.fallback]
            return Target(trunk, destination, trunk.allow_headers)
        return None

    def missing_secrets(self) -> list[str]:
        """One message per trunk whose ``password_env`` is not set (for the SIP agent)."""
        return [
            f"{self.source}: trunk {name!r}: password_env {trunk.missing_secret} is not set"
            for name, trunk in self.trunks.items()
            if trunk.missing_secret
        ]


# --- the file -------------------------------------------------------------------


def load_providers(
    path: str | Path, env: Mapping[str, str], default: Trunk | None = None
) -> Providers:
    """Read and check ``PROVIDERS_FILE``; ``ProvidersError`` names what is wrong.

    ``env`` resolves ``password_env`` (a variable that is not set leaves the
    trunk's ``missing_secret``: only the SIP agent needs it). ``default`` is
    the trunk of the ``SIP_TRUNK_*`` settings, if any.
    """
    source = str(path)
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProvidersError(f"PROVIDERS_FILE {source}: cannot read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProvidersError(f"PROVIDERS_FILE {source}: not valid TOML: {exc}") from None
    return parse_providers(data, env, default, source=source)


def parse_providers(
    data: Mapping[str, object],
    env: Mapping[str, str],
    default: Trunk | None = None,
    *,
    source: str = "providers",
) -> Providers:
    """``load_providers`` on an already parsed TOML document."""

    def fail(where: str, problem: str) -> ProvidersError:
        return ProvidersError(f"{source}: {where}: {problem}")

    unknown = set(data) - {"trunks", "routes", "fallback", "inbound"}
    if unknown:
        raise fail("top level", f"unknown key {sorted(unknown)[0]!r}")
    raw_trunks = data.get("trunks", {})
    if not isinstance(raw_trunks, dict):
        raise fail("trunks", "must be a table of [trunks.<name>]")
    trunks: dict[str, Trunk] = {}
    for name, raw in raw_trunks.items():
        trunks[name] = parse_trunk(name, raw, env, partial(fail, f"trunk {name!r}"))
    if DEFAULT_TRUNK not in trunks and default is not None:
        trunks[DEFAULT_TRUNK] = default

    raw_routes = data.get("routes", [])
    if not isinstance(raw_routes, list):
        raise fail("routes", "must be an array of [[routes]] tables")
    routes = tuple(
        _route(number, raw, trunks, partial(fail, f"route {number}"))
        for number, raw in enumerate(raw_routes, start=1)
    )

    fallback = data.get("fallback", "")
    if not isinstance(fallback, str):
        raise fail("fallback", "must be a trunk name")
    if fallback and fallback not in trunks:
        raise fail("fallback", _unknown_trunk(fallback))
    raw_inbound = data.get("inbound", [])
    if not isinstance(raw_inbound, list):
        raise fail("inbound", "must be an array of [[inbound]] tables")
    inbound = tuple(
        replace(
            parse_inbound(raw, trunks, partial(fail, f"inbound {number}")),
            name=f"inbound {number}",
        )
        for number, raw in enumerate(raw_inbound, start=1)
    )
    if not routes and not fallback and not inbound:
        # A file of [[inbound]] entries alone takes calls in and places none.
        raise fail("routes", "no [[routes]] and no fallback: every destination would be unknown")
    return Providers(
        trunks=trunks, routes=routes, fallback=fallback, source=source, inbound=inbound
    )


def _unknown_trunk(name: str) -> str:
    if name == DEFAULT_TRUNK:
        return "trunk 'default' is not defined (set SIP_TRUNK_HOST or add [trunks.default])"
    return f"unknown trunk {name!r}"


_ROUTE_KEYS = frozenset(
    {"match", "trunk", "user", "pattern", "allow_headers", "name", "allow", "deny"}
)


def _route(number: int, raw: object, trunks: Mapping[str, Trunk], fail: Fail) -> Route:
    if not isinstance(raw, dict):
        raise fail("must be a table")
    unknown = set(raw) - _ROUTE_KEYS
    if unknown:
        raise fail(f"unknown key {sorted(unknown)[0]!r}")
    match = str_key(raw, "match", fail)
    if not match:
        raise fail("match is missing")
    trunk = str_key(raw, "trunk", fail)
    if not trunk:
        raise fail("trunk is missing")
    if trunk not in trunks:
        raise fail(_unknown_trunk(trunk))
    is_pattern = raw.get("pattern", False)
    if not isinstance(is_pattern, bool):
        raise fail("pattern must be true or false")
    compiled: re.Pattern[str] | None = None
    if is_pattern:
        try:
            compiled = re.compile(match)
        except re.error as exc:
            raise fail(f"bad regex {match!r}: {exc}") from None
    user = str_key(raw, "user", fail)
    # The same check as the SIP agent's Request-URI, so a route cannot fail at dial time.
    if user and not re.fullmatch(
        r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/#]|%[0-9A-Fa-f]{2}){1,128}", user
    ):
        raise fail(f"user {user!r} is not a SIP user part")
    name = str_key(raw, "name", fail)
    if name and not re.fullmatch(r"[A-Za-z0-9_\-]{1,64}", name):
        raise fail(f"name {name!r} must be letters, digits, - or _")
    return Route(
        match=match,
        trunk=trunk,
        user=user,
        pattern=compiled,
        allow_headers=tokens_key(raw, "allow_headers", fail),
        name=name,
        allow=patterns_key(raw, "allow", fail),
        deny=patterns_key(raw, "deny", fail) or (),
    )
