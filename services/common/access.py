"""Who may place calls, and how many: the access settings, parsed and checked.

Client tokens (``AUTH``, ``CLIENT_TOKEN_SECRET``, ``CLIENT_TOKEN_PUBLIC_KEY``,
``AUTH_AUDIENCE``), the dial plan's global deny list (``DIAL_DENY``), the
abuse limits, the origins a page may come from and the proxies whose
``X-Forwarded-For`` is believed. Signaling enforces them; ``bridge up``
refuses to expose an unauthenticated bridge. A bad value raises
``AccessError`` naming the setting, never a secret.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.common import env_values
from services.common.dialplan import National, Pattern, parse_prefixes
from services.common.rates import PER_MINUTE_10, PER_MINUTE_30, PER_SECOND_50, Rate, parse_rate

AUTH_MODES = ("required", "off")
DEFAULT_AUDIENCE = "webrtc-sip-bridge"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
MIN_SECRET_BYTES = 32
"HS256 secrets shorter than this are refused (RFC 7518 3.2: at least the hash size)."

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class AccessError(ValueError):
    """An access setting is invalid; the message names it."""


@dataclass(frozen=True)
class Key:
    """One verification key: an HS256 secret or a public key file, with its key id."""

    kid: str
    "Matches the token header's ``kid``; empty: tried for tokens without one."
    secret: str = field(default="", repr=False)
    public_key_file: str = ""


@dataclass(frozen=True)
class Access:
    auth: str = "off"
    "``required``: every WebSocket needs a client token; ``off``: none is asked for."
    allow_unauthenticated: bool = False
    "``ALLOW_UNAUTHENTICATED``: ``bridge up`` may expose ``AUTH=off`` beyond loopback."
    secrets: tuple[Key, ...] = ()
    "``CLIENT_TOKEN_SECRET``: HS256 keys (``kid:secret``, comma-separated); the first mints."
    public_keys: tuple[Key, ...] = ()
    "``CLIENT_TOKEN_PUBLIC_KEY``: PEM files (RS256 or ES256), ``kid:path`` comma-separated."
    audience: str = DEFAULT_AUDIENCE
    dial_deny: tuple[Pattern, ...] = ()
    "``DIAL_DENY``: destinations (prefixes) no call may have."
    national: National | None = None
    "``DIAL_COUNTRY_CODE`` and ``DIAL_NATIONAL_PREFIX``: national-format numbers to E.164."
    call_rate: Rate | None = PER_MINUTE_10
    "``CALL_RATE``: call attempts per identity."
    source_call_rate: Rate | None = PER_MINUTE_30
    "``SOURCE_CALL_RATE``: call attempts per source address."
    max_calls_per_user: int = 2
    "``MAX_CALLS_PER_USER``: concurrent calls per identity (a token's ``max_calls`` lowers it)."
    ws_per_source: int = 20
    "``WS_CONNECTIONS_PER_SOURCE``: open WebSockets per source address."
    ws_message_rate: Rate | None = PER_SECOND_50
    "``WS_MESSAGE_RATE``: messages per socket."
    max_call_duration: float = 4 * 3600.0
    "``MAX_CALL_DURATION``: seconds after the answer (a token's ``max_duration`` lowers it)."
    trusted_proxies: tuple[Network, ...] = ()
    "``TRUSTED_PROXIES``: whose ``X-Forwarded-For`` names the source address."
    allowed_origins: tuple[str, ...] = ()
    "``ALLOWED_ORIGINS``: page origins (``https://host[:port]``); empty: the Host must match."
    audit_log: str = ""
    "``AUDIT_LOG``: a file for the audit lines; empty: the log stream."

    @property
    def required(self) -> bool:
        return self.auth == "required"

    @property
    def keys(self) -> tuple[Key, ...]:
        return self.secrets + self.public_keys


def is_loopback(host: str) -> bool:
    host = host.lower()
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_access(env: Mapping[str, str], http_host: str) -> Access:
    """The access settings of ``env``; ``AccessError`` names the first bad one."""
    auth = env.get("AUTH", "").strip().lower()
    if not auth:
        auth = "off" if is_loopback(http_host) else "required"
    if auth not in AUTH_MODES:
        raise AccessError(f"AUTH must be required or off, got {auth!r}")
    secrets = _secrets(env.get("CLIENT_TOKEN_SECRET", ""))
    public_keys = _public_keys(env.get("CLIENT_TOKEN_PUBLIC_KEY", ""))
    audience = env.get("AUTH_AUDIENCE", "").strip() or DEFAULT_AUDIENCE
    try:
        dial_deny = parse_prefixes(env.get("DIAL_DENY", ""))
    except ValueError as exc:
        raise AccessError(f"DIAL_DENY: {exc}") from None
    return Access(
        national=_national(env),
        auth=auth,
        allow_unauthenticated=env_values.boolean(env, "ALLOW_UNAUTHENTICATED", False, AccessError),
        secrets=secrets,
        public_keys=public_keys,
        audience=audience,
        dial_deny=dial_deny,
        call_rate=_rate(env, "CALL_RATE", Access.call_rate),
        source_call_rate=_rate(env, "SOURCE_CALL_RATE", Access.source_call_rate),
        max_calls_per_user=_count(env, "MAX_CALLS_PER_USER", Access.max_calls_per_user),
        ws_per_source=_count(env, "WS_CONNECTIONS_PER_SOURCE", Access.ws_per_source),
        ws_message_rate=_rate(env, "WS_MESSAGE_RATE", Access.ws_message_rate),
        max_call_duration=env_values.seconds(
            env, "MAX_CALL_DURATION", Access.max_call_duration, 7 * 86400, AccessError
        ),
        trusted_proxies=_networks(env.get("TRUSTED_PROXIES", "")),
        allowed_origins=_origins(env.get("ALLOWED_ORIGINS", "")),
        audit_log=env.get("AUDIT_LOG", "").strip(),
    )


def serving_problem(access: Access, http_host: str) -> str | None:
    """Why the page and WebSocket must not be served on ``http_host`` with ``access``
    (one start-up line for signaling and ``bridge up``), or None."""
    if access.required and not access.keys:
        return (
            "AUTH=required needs CLIENT_TOKEN_SECRET or CLIENT_TOKEN_PUBLIC_KEY to check "
            "client tokens (AUTH is required by default when HTTP_HOST is not loopback)"
        )
    if not access.required and not is_loopback(http_host) and not access.allow_unauthenticated:
        return (
            f"AUTH=off on HTTP_HOST {http_host} would let anyone who reaches it place calls; "
            "set CLIENT_TOKEN_SECRET (AUTH=required), or ALLOW_UNAUTHENTICATED=true behind "
            "your own authentication"
        )
    return None


def _national(env: Mapping[str, str]) -> National | None:
    country = env.get("DIAL_COUNTRY_CODE", "").strip().lstrip("+")
    if not country:
        return None
    if not country.isdigit() or not 1 <= len(country) <= 3 or country.startswith("0"):
        raise AccessError(
            f"DIAL_COUNTRY_CODE must be a country calling code (1, 44), got {country!r}"
        )
    default = "1" if country == "1" else "0"
    prefix = env.get("DIAL_NATIONAL_PREFIX", default).strip()
    if prefix and not prefix.isdigit():
        raise AccessError(f"DIAL_NATIONAL_PREFIX must be digits or empty, got {prefix!r}")
    return National(country, prefix)


def _secrets(text: str) -> tuple[Key, ...]:
    keys: list[Key] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        kid, sep, secret = item.partition(":")
        if not sep:
            kid, secret = "", item
        if len(secret.encode("utf-8")) < MIN_SECRET_BYTES:
            shown = f"key {kid!r}" if kid else "a key"
            raise AccessError(
                f"CLIENT_TOKEN_SECRET: {shown} is shorter than {MIN_SECRET_BYTES} bytes "
                "(make one with: openssl rand -hex 32)"
            )
        keys.append(Key(kid=kid.strip(), secret=secret))
    _unique(keys, "CLIENT_TOKEN_SECRET")
    return tuple(keys)


def _public_keys(text: str) -> tuple[Key, ...]:
    keys: list[Key] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        kid, sep, path = item.partition(":")
        if not sep:
            kid, path = "", item
        if not Path(path).is_file():
            raise AccessError(f"CLIENT_TOKEN_PUBLIC_KEY: {path} is not a readable file")
        keys.append(Key(kid=kid.strip(), public_key_file=path.strip()))
    _unique(keys, "CLIENT_TOKEN_PUBLIC_KEY")
    return tuple(keys)


def _unique(keys: list[Key], name: str) -> None:
    kids = [k.kid for k in keys]
    for kid in kids:
        if kids.count(kid) > 1:
            shown = repr(kid) if kid else "(none)"
            raise AccessError(f"{name}: key id {shown} given twice; write kid:key for each")


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    return env_values.whole(env, name, default, 1, 100000, AccessError)


def _rate(env: Mapping[str, str], name: str, default: Rate | None) -> Rate | None:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return parse_rate(raw)
    except ValueError as exc:
        raise AccessError(f"{name} {exc}") from None


def _networks(text: str) -> tuple[Network, ...]:
    networks = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise AccessError(
                f"TRUSTED_PROXIES entries must be IP addresses or CIDRs, got {item!r}"
            ) from None
    return tuple(networks)


def _origins(text: str) -> tuple[str, ...]:
    origins = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        scheme, sep, rest = item.partition("://")
        if scheme.lower() not in ("http", "https") or not sep or not rest or "/" in rest:
            raise AccessError(
                f"ALLOWED_ORIGINS entries must be http(s)://host[:port], got {item!r}"
            )
        origins.append(f"{scheme.lower()}://{rest.lower()}")
    return tuple(origins)
