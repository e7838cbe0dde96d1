"""Calls from the trunks: which identities a called number rings, and which trunks may call.

Pure code, no I/O beyond reading a password file. The providers file's
``[[inbound]]`` entries map a DID (exact ``number``, or a ``pattern`` in the
syntax of the routes' ``allow``) to one identity (``user``) or several
(``users``: ring all, the first to accept wins); the first entry that matches
wins. ``INBOUND_USER`` adds one entry after them for the ``.env`` trunk:
every number it sends rings that user. Per trunk, ``inbound_from`` (CIDRs)
widens the addresses it may call from, and ``inbound_auth`` lets it prove
itself by digest instead. ``docs/configuration.md`` describes them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from services.common.dialplan import (
    MAX_NUMBER_DIGITS,
    DestinationError,
    National,
    Pattern,
    normalize,
    parse_pattern,
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_RING_TIMEOUT = 30.0
"Seconds an inbound call rings before the trunk gets 480 (``ring_timeout``)."
RING_TIMEOUT_RANGE = (1.0, 600.0)
"Lowest and highest ``ring_timeout`` / ``INBOUND_RING_TIMEOUT`` accepted, in seconds."
REJECT_STATUSES = (486, 603)
"What the trunk hears when every listener declined: 486 Busy Here (default) or 603 Decline."
MAX_USERS = 32
"Identities one entry rings at most."
MAX_IDENTITY = 128
"Characters of an identity at most (as a client token's ``sub``)."
ANY_TRUNK = ""
"``InboundRoute.trunk`` of an entry that takes calls from every trunk."

Fail = Callable[[str], ValueError]
"Builds the error to raise, naming the file and entry (the providers file's ``fail``)."


@dataclass(frozen=True)
class InboundRoute:
    """``[[inbound]]``: the DIDs it matches, the trunk they come from, who they ring."""

    match: Pattern
    "An exact number or name, or a prefix (``+1555*``); numbers match with or without ``+``."
    users: tuple[str, ...]
    "Identities rung, all at once; the first to accept wins."
    trunk: str = ANY_TRUNK
    "Only calls from this trunk; empty: from any."
    ring_timeout: float = DEFAULT_RING_TIMEOUT
    reject_status: int = 486
    "The final status when every listener declined (486 or 603)."
    name: str = ""
    "How messages name the entry (``inbound 2``, ``INBOUND_USER``)."

    def matches(self, did: str, trunk: str) -> bool:
        """Whether a call to ``did`` (``normalize_did``) from ``trunk`` is this entry's."""
        if self.trunk and trunk != self.trunk:
            return False
        return self.match.matches(did, loose=True)


DIGEST_ALGORITHMS = ("SHA-256", "MD5")
"What ``inbound_auth`` challenges with by default, most preferred first (RFC 8760)."


@dataclass(frozen=True)
class InboundAuth:
    """A trunk's ``inbound_auth``: the digest credentials its INVITEs must answer with."""

    username: str
    password: str = field(repr=False)
    password_env: str = ""
    "The environment variable the password comes from, if the file named one."
    algorithms: tuple[str, ...] = DIGEST_ALGORITHMS
    """Digest algorithms to challenge with, in order of preference (``algorithms``): a peer that
    only reads the first challenge and lacks SHA-256 (sipp, some older PBXs) needs ``["MD5"]``."""

    @property
    def missing_secret(self) -> str:
        """The ``password_env`` variable that was not set, or empty."""
        return self.password_env if not self.password else ""


def normalize_did(raw: str, national: National | None = None) -> str:
    """The called number as rules see it; ``DestinationError`` if it is neither number nor name.

    As ``dialplan.normalize``, except that a long number without its
    country (``15550001111``, as many trunks send) stays digits: the
    entries' numbers match it with or without ``+``.
    """
    try:
        return normalize(raw, national)
    except DestinationError:
        digits = raw.strip().split("@", 1)[0].split(";", 1)[0].lstrip("+")
        if digits.isascii() and digits.isdigit() and len(digits) <= MAX_NUMBER_DIGITS:
            return digits
        raise


def route_inbound(
    routes: Sequence[InboundRoute], did: str, trunk: str | Iterable[str]
) -> tuple[InboundRoute, str] | None:
    """The first entry for ``did`` from ``trunk`` (or from one of several candidate trunks
    sharing an address), and the trunk it takes; None: no entry, the trunk gets 404."""
    candidates = (trunk,) if isinstance(trunk, str) else tuple(trunk)
    for route in routes:
        for name in candidates:
            if route.matches(did, name):
                return route, name
    return None


def default_user_route(user: str, ring_timeout: float, trunk: str) -> InboundRoute:
    """``INBOUND_USER``: every number from the ``.env`` trunk rings ``user``."""
    return InboundRoute(
        match=Pattern("", True),
        users=(user,),
        trunk=trunk,
        ring_timeout=ring_timeout,
        name="INBOUND_USER",
    )


def check_identity(user: object) -> str:
    """``user`` as an identity; ``ValueError`` saying what one is."""
    if not isinstance(user, str) or not 0 < len(user) <= MAX_IDENTITY or not user.isprintable():
        raise ValueError(f"an identity is 1-{MAX_IDENTITY} printable characters, got {user!r}")
    if user != user.strip():
        raise ValueError(f"identity {user!r} has spaces around it")
    return user


# --- the providers file ---------------------------------------------------------------

_INBOUND_KEYS = frozenset(
    {"number", "pattern", "trunk", "user", "users", "ring_timeout", "reject_status"}
)


def parse_inbound(raw: object, trunks: Iterable[str], fail: Fail) -> InboundRoute:
    """One ``[[inbound]]`` table; ``fail(problem)`` builds the error naming the entry."""
    if not isinstance(raw, dict):
        raise fail("must be a table")
    unknown = set(raw) - _INBOUND_KEYS
    if unknown:
        raise fail(f"unknown key {sorted(unknown)[0]!r}")
    if ("number" in raw) == ("pattern" in raw):
        raise fail("give number (one DID) or pattern (such as '+1555*'), one of them")
    key = "number" if "number" in raw else "pattern"
    text = raw[key]
    if not isinstance(text, str) or not text.strip():
        raise fail(f"{key} must be a non-empty string")
    try:
        match = parse_pattern(text)
    except ValueError as exc:
        raise fail(f"{key}: {exc}") from None
    if key == "number" and match.prefix:
        raise fail(f"number {text!r} ends in *: use pattern for a prefix")
    trunk = raw.get("trunk", ANY_TRUNK)
    if not isinstance(trunk, str):
        raise fail("trunk must be a trunk name")
    if trunk and trunk not in set(trunks):
        raise fail(f"unknown trunk {trunk!r}")
    return InboundRoute(
        match=match,
        users=_users(raw, fail),
        trunk=trunk,
        ring_timeout=_ring_timeout(raw.get("ring_timeout", DEFAULT_RING_TIMEOUT), fail),
        reject_status=_reject_status(raw.get("reject_status", 486), fail),
    )


def _users(raw: Mapping[str, object], fail: Fail) -> tuple[str, ...]:
    if ("user" in raw) == ("users" in raw):
        raise fail('give user = "alice" or users = ["alice", "bob"], one of them')
    value = raw["user"] if "user" in raw else raw["users"]
    items = [value] if "user" in raw else value
    if not isinstance(items, list) or not items:
        raise fail("users must be a non-empty array of identities")
    if len(items) > MAX_USERS:
        raise fail(f"users rings at most {MAX_USERS} identities")
    users: list[str] = []
    for item in items:
        try:
            user = check_identity(item)
        except ValueError as exc:
            raise fail(f"{'user' if 'user' in raw else 'users'}: {exc}") from None
        if user in users:
            raise fail(f"users names {user!r} twice")
        users.append(user)
    return tuple(users)


def _ring_timeout(value: object, fail: Fail) -> float:
    lo, hi = RING_TIMEOUT_RANGE
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise fail(f"ring_timeout must be seconds from {lo:g} to {hi:g}, got {value!r}")
    return float(value)


def _reject_status(value: object, fail: Fail) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value not in REJECT_STATUSES:
        raise fail(f"reject_status must be 486 or 603, got {value!r}")
    return value


def parse_inbound_from(value: object, fail: Fail, key: str = "inbound_from") -> tuple[Network, ...]:
    """``inbound_from``: an array of IP addresses or CIDRs (``203.0.113.0/24``)."""
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise fail(f"{key} must be an array of IP addresses or CIDRs")
    networks: list[Network] = []
    for item in value:
        try:
            networks.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            raise fail(f"{key}: {item!r} is not an IP address or CIDR") from None
    return tuple(networks)


_AUTH_KEYS = frozenset({"username", "password", "password_env", "password_file", "algorithms"})


def parse_inbound_auth(
    value: object,
    env: Mapping[str, str],
    read_secret: Callable[[str], str],
    fail: Fail,
) -> InboundAuth:
    """``inbound_auth = { username = "...", password_file = "..." }`` (or ``password``,
    ``password_env``). ``read_secret(path)`` reads a password file, raising ``fail``'s error."""
    if not isinstance(value, dict):
        raise fail("inbound_auth must be a table: { username = ..., password_file = ... }")
    unknown = set(value) - _AUTH_KEYS
    if unknown:
        raise fail(f"inbound_auth: unknown key {sorted(unknown)[0]!r}")
    username = value.get("username", "")
    if not isinstance(username, str) or not username.strip():
        raise fail("inbound_auth: username is missing")
    given = [key for key in ("password", "password_env", "password_file") if key in value]
    if len(given) != 1:
        raise fail("inbound_auth: give one of password, password_env and password_file")
    source = value[given[0]]
    if not isinstance(source, str):
        raise fail(f"inbound_auth: {given[0]} must be a string")  # never echo it
    password, password_env = source, ""
    if given[0] == "password_env":
        password_env = source.strip()
        password = env.get(password_env, "")
    elif given[0] == "password_file":
        password = read_secret(source.strip())
    elif not password:
        raise fail("inbound_auth: password is empty")
    algorithms = value.get("algorithms", list(DIGEST_ALGORITHMS))
    if (
        not isinstance(algorithms, list)
        or not algorithms
        or any(a not in DIGEST_ALGORITHMS for a in algorithms)
        or len(set(algorithms)) != len(algorithms)
    ):
        raise fail('inbound_auth: algorithms must list "SHA-256" and/or "MD5", each once')
    return InboundAuth(
        username=username.strip(),
        password=password,
        password_env=password_env,
        algorithms=tuple(algorithms),
    )


def in_networks(host: str, networks: Iterable[Network]) -> bool:
    """Whether ``host`` (an address as the transports report it) is in one of ``networks``."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)
