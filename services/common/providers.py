"""Several SIP providers routed by destination: the ``PROVIDERS_FILE`` and its rules.

Pure code, no I/O beyond reading the file: named trunks, routes from a
destination to a trunk and a target user, and the custom SIP headers a call
may carry (static per trunk, per call from the browser). Signaling uses it to
refuse an unknown destination or a header it may not send before any work is
published; the SIP agent uses it to pick the trunk of each INVITE.

The seed's single-trunk ``.env`` (``SIP_TRUNK_HOST``…) is the trunk named
``default``: with no providers file every destination goes to it; with one,
routes may name it, and ``fallback = "default"`` sends what no route matches
there. ``docs/configuration.md`` describes the file.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from services.common.custom_headers import (
    RESERVED,
    RESERVED_COMPACT,
    HeaderError,
    check_header,
    header_value,
    is_token,
)
from services.common.dialplan import Pattern, parse_patterns
from services.common.inbound_routes import (
    InboundAuth,
    InboundRoute,
    Network,
    parse_inbound,
    parse_inbound_auth,
    parse_inbound_from,
)
from services.common.sipaddr import DEFAULT_PORTS, OutboundProxy, parse_outbound_proxy

DEFAULT_TRUNK = "default"
"Name of the trunk made of the ``SIP_TRUNK_*`` settings."

CODECS = ("PCMU", "PCMA", "OPUS", "G722")
"Codecs a trunk may be offered, by their SDP encoding names."
TRANSPORTS = ("udp", "tcp", "tls")
DTMF_MODES = ("rfc4733", "info")
TRANSFER_MODES = ("follow", "decline")
SRTP_MODES = ("off", "optional", "required")
"What a REFER from the trunk gets: a new call to its target, or 603 Decline."

DEFAULT_REGISTER_EXPIRES = 600
"Seconds of binding a REGISTER asks for by default (a dead agent's binding lasts that long)."
REGISTER_EXPIRES_RANGE = (30, 86400)
"Lowest and highest ``register_expires`` / ``SIP_REGISTER_EXPIRES`` accepted."


class ProvidersError(ValueError):
    """The providers file is invalid; the message names the file, the entry and the problem."""


_Fail = Callable[[str], ProvidersError]


@dataclass(frozen=True)
class Trunk:
    """One SIP provider: the seed's five values, transport, codecs, static headers."""

    name: str
    host: str
    port: int = 0
    "0: not given; RFC 3263 resolution (NAPTR, SRV) finds it, else 5060 (5061 for tls)."
    username: str = ""
    password: str = field(default="", repr=False)
    password_env: str = ""
    "The environment variable the password comes from, if the file named one."
    password_file: str = ""
    "The file the password was read from (a mounted Secret), if the file named one."
    domain: str = ""
    transport: str = "udp"
    transport_explicit: bool = False
    "The transport was set (not the default): NAPTR does not choose it then."
    tls_ca: str = ""
    "PEM file of the CAs that sign the trunk's certificate; empty: the system's."
    outbound_proxy: OutboundProxy | None = None
    "Where requests toward this trunk go first (a preloaded Route)."
    codecs: tuple[str, ...] = ()
    "Codecs offered to this trunk, in order; empty: what media offers, unchanged."
    headers: tuple[tuple[str, str], ...] = ()
    "Static headers added to every INVITE toward this trunk."
    dtmf: str = "rfc4733"
    "How DTMF goes to this trunk: RTP events (``rfc4733``) or SIP INFO (``info``)."
    transfer: str = "follow"
    "What a REFER from this trunk gets: ``follow`` (call the target) or ``decline`` (603)."
    srtp: str = "off"
    """SRTP toward this trunk (SDES): ``off``, ``optional`` (offered, plain RTP if refused)
    or ``required`` (``RTP/SAVP``; an answer without keys ends the call)."""
    allow_headers: tuple[str, ...] | None = None
    "Header names a browser may set (case-insensitive); None: any ``X-`` name."
    register: bool = False
    "Whether the SIP agent keeps a REGISTER binding at this trunk."
    register_expires: int = DEFAULT_REGISTER_EXPIRES
    "Seconds of binding each REGISTER asks for (the registrar may grant other)."
    allow: tuple[Pattern, ...] | None = None
    "Destinations calls to this trunk may have (exact or ``prefix*``); None: any."
    deny: tuple[Pattern, ...] = ()
    "Destinations refused on this trunk, whatever else allows them."
    inbound_from: tuple[Network, ...] = ()
    "Networks this trunk's INVITEs may come from, besides the addresses its host resolves to."
    inbound_auth: InboundAuth | None = None
    "Digest credentials this trunk's INVITEs may prove themselves with instead of an address."

    @property
    def realm_domain(self) -> str:
        """The domain of Request-URIs and From: ``domain``, else the host."""
        return self.domain or self.host

    @property
    def default_port(self) -> int:
        """``port``, else the transport's well-known port."""
        return self.port or DEFAULT_PORTS.get(self.transport, 5060)

    @property
    def missing_secret(self) -> str:
        """The ``password_env`` variable that was not set (the trunk's or its
        ``inbound_auth``'s), or empty."""
        if self.password_env and not self.password:
            return self.password_env
        return self.inbound_auth.missing_secret if self.inbound_auth is not None else ""


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
        trunks[name] = _trunk(name, raw, env, partial(fail, f"trunk {name!r}"))
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


_TRUNK_KEYS = frozenset(
    {
        "host",
        "port",
        "username",
        "password",
        "password_env",
        "password_file",
        "domain",
        "transport",
        "codecs",
        "headers",
        "dtmf",
        "srtp",
        "transfer",
        "allow_headers",
        "register",
        "register_expires",
        "tls_ca",
        "outbound_proxy",
        "allow",
        "deny",
        "inbound_from",
        "inbound_auth",
    }
)


def _trunk(name: str, raw: object, env: Mapping[str, str], fail: _Fail) -> Trunk:
    if not is_token(name):
        raise fail("the name must be letters, digits, - or _")
    if not isinstance(raw, dict):
        raise fail("must be a table")
    unknown = set(raw) - _TRUNK_KEYS
    if unknown:
        raise fail(f"unknown key {sorted(unknown)[0]!r}")
    host = _text(raw, "host", fail)
    if not host:
        raise fail("host is missing")
    if any(c.isspace() for c in host) or "/" in host or "@" in host:
        raise fail(f"host must be a host name or IP address, got {host!r}")
    port = raw.get("port", 0)  # 0: not given, resolved per RFC 3263
    bad_port = not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535
    if "port" in raw and bad_port:
        raise fail(f"port must be a whole number from 1 to 65535, got {port!r}")
    username = _text(raw, "username", fail)
    if "password" in raw and "password_env" in raw:
        raise fail("give password or password_env, not both")
    password = raw.get("password", "")
    if not isinstance(password, str):
        raise fail("password must be a string")  # never echo it
    password_env = _text(raw, "password_env", fail)
    if password_env:
        password = env.get(password_env, "")
    password_file = _text(raw, "password_file", fail)
    if password_file:
        if "password" in raw or password_env:
            raise fail("give one of password, password_env and password_file")
        password = _read_secret(password_file, fail)
    if (password or password_env) and not username:
        raise fail("username is required with a password")
    domain = _text(raw, "domain", fail)
    if any(c.isspace() for c in domain) or "/" in domain or "@" in domain:
        raise fail(f"domain must be a host name, got {domain!r}")
    transport = (_text(raw, "transport", fail) or "udp").lower()
    if transport not in TRANSPORTS:
        raise fail(f"transport must be udp, tcp or tls, got {transport!r}")
    tls_ca = _text(raw, "tls_ca", fail)
    if tls_ca and not Path(tls_ca).is_file():
        raise fail(f"tls_ca {tls_ca} is not a readable file")
    proxy = _text(raw, "outbound_proxy", fail)
    outbound_proxy = None
    if proxy:
        try:
            outbound_proxy = parse_outbound_proxy(proxy)
        except ValueError as exc:
            raise fail(f"outbound_proxy: {exc}") from None
    codecs = _names(raw, "codecs", fail)
    for codec in codecs or ():
        if codec.upper() not in CODECS:
            raise fail(f"codec {codec!r} is not one of {', '.join(CODECS)}")
    if codecs is not None and not codecs:
        raise fail("codecs must name at least one codec")
    dtmf = (_text(raw, "dtmf", fail) or "rfc4733").lower()
    if dtmf not in DTMF_MODES:
        raise fail(f"dtmf must be rfc4733 or info, got {dtmf!r}")
    transfer = (_text(raw, "transfer", fail) or "follow").lower()
    if transfer not in TRANSFER_MODES:
        raise fail(f"transfer must be follow or decline, got {transfer!r}")
    srtp = (_text(raw, "srtp", fail) or "off").lower()
    if srtp not in SRTP_MODES:
        raise fail(f"srtp must be off, optional or required, got {srtp!r}")
    raw_headers = raw.get("headers", {})
    if not isinstance(raw_headers, dict):
        raise fail("headers must be a table of names to values")
    headers: list[tuple[str, str]] = []
    for header, value in raw_headers.items():
        lower = header.lower()
        if lower in RESERVED or lower in RESERVED_COMPACT:
            raise fail(f"header {header} is set by the bridge itself")
        try:
            text = header_value(value)
            check_header(header, text)
        except HeaderError as exc:
            raise fail(str(exc)) from None
        headers.append((header, text))
    allow = _names(raw, "allow_headers", fail)
    register, register_expires = _register(raw, username, fail)
    return Trunk(
        name=name,
        host=host,
        port=port,
        username=username,
        password=password,
        password_env=password_env,
        password_file=password_file,
        domain=domain,
        transport=transport,
        transport_explicit="transport" in raw,
        tls_ca=tls_ca,
        outbound_proxy=outbound_proxy,
        codecs=tuple(c.upper() for c in codecs or ()),
        headers=tuple(headers),
        dtmf=dtmf,
        srtp=srtp,
        transfer=transfer,
        allow_headers=allow,
        register=register,
        register_expires=register_expires,
        allow=_patterns(raw, "allow", fail),
        deny=_patterns(raw, "deny", fail) or (),
        inbound_from=parse_inbound_from(raw.get("inbound_from", []), fail),
        inbound_auth=(
            parse_inbound_auth(
                raw["inbound_auth"], env, lambda path: _read_secret(path, fail), fail
            )
            if "inbound_auth" in raw
            else None
        ),
    )


def read_secret_file(path: str) -> str:
    """A secret mounted as a file (a Kubernetes Secret): its text without the final newline.

    ``OSError`` when it cannot be read; the caller names the setting, never the content.
    """
    return Path(path).read_text(encoding="utf-8").rstrip("\r\n")


def _read_secret(path: str, fail: _Fail) -> str:
    try:
        return read_secret_file(path)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise fail(f"password_file {path}: cannot read: {reason}") from None


def _patterns(raw: Mapping[str, object], key: str, fail: _Fail) -> tuple[Pattern, ...] | None:
    """``allow`` / ``deny``: an array of destinations or ``prefix*`` entries."""
    if key not in raw:
        return None
    value = raw[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise fail(f"{key} must be an array of strings")
    try:
        return parse_patterns(value)
    except ValueError as exc:
        raise fail(f"{key}: {exc}") from None


def _register(raw: Mapping[str, object], username: str, fail: _Fail) -> tuple[bool, int]:
    """``register`` and ``register_expires`` of a trunk table."""
    register = raw.get("register", False)
    if not isinstance(register, bool):
        raise fail("register must be true or false")
    if register and not username:
        raise fail("register = true needs a username")
    expires = raw.get("register_expires", DEFAULT_REGISTER_EXPIRES)
    lo, hi = REGISTER_EXPIRES_RANGE
    if not isinstance(expires, int) or isinstance(expires, bool) or not lo <= expires <= hi:
        raise fail(f"register_expires must be a whole number from {lo} to {hi}, got {expires!r}")
    return register, expires


_ROUTE_KEYS = frozenset(
    {"match", "trunk", "user", "pattern", "allow_headers", "name", "allow", "deny"}
)


def _route(number: int, raw: object, trunks: Mapping[str, Trunk], fail: _Fail) -> Route:
    if not isinstance(raw, dict):
        raise fail("must be a table")
    unknown = set(raw) - _ROUTE_KEYS
    if unknown:
        raise fail(f"unknown key {sorted(unknown)[0]!r}")
    match = _text(raw, "match", fail)
    if not match:
        raise fail("match is missing")
    trunk = _text(raw, "trunk", fail)
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
    user = _text(raw, "user", fail)
    # The same check as the SIP agent's Request-URI, so a route cannot fail at dial time.
    if user and not re.fullmatch(
        r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/#]|%[0-9A-Fa-f]{2}){1,128}", user
    ):
        raise fail(f"user {user!r} is not a SIP user part")
    name = _text(raw, "name", fail)
    if name and not re.fullmatch(r"[A-Za-z0-9_\-]{1,64}", name):
        raise fail(f"name {name!r} must be letters, digits, - or _")
    return Route(
        match=match,
        trunk=trunk,
        user=user,
        pattern=compiled,
        allow_headers=_names(raw, "allow_headers", fail),
        name=name,
        allow=_patterns(raw, "allow", fail),
        deny=_patterns(raw, "deny", fail) or (),
    )


def _text(raw: Mapping[str, object], key: str, fail: _Fail) -> str:
    value = raw.get(key, "")
    if not isinstance(value, str):
        raise fail(f"{key} must be a string")
    return value.strip()


def _names(raw: Mapping[str, object], key: str, fail: _Fail) -> tuple[str, ...] | None:
    if key not in raw:
        return None
    value = raw[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise fail(f"{key} must be an array of strings")
    for name in value:
        if not is_token(name):
            raise fail(f"{key}: {name!r} is not a SIP token")
    return tuple(value)
