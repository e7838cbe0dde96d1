"""One SIP provider of the ``PROVIDERS_FILE`` (``[trunks.<name>]``), or of the ``.env``. Pure.

``Trunk`` is what the SIP agent needs to call through a provider and to let it
call in (address, credentials, transport, codecs, static headers, DTMF,
SRTP, REFER, REGISTER, allowed destinations, inbound sources); ``parse_trunk``
checks one table of the file. ``docs/configuration.md`` describes the keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.common.custom_headers import (
    RESERVED,
    RESERVED_COMPACT,
    HeaderError,
    check_header,
    header_value,
    is_token,
)
from services.common.dialplan import Pattern
from services.common.inbound_routes import (
    InboundAuth,
    Network,
    parse_inbound_auth,
    parse_inbound_from,
)
from services.common.provider_fields import (
    Fail,
    patterns_key,
    read_secret,
    str_key,
    tokens_key,
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


def parse_trunk(name: str, raw: object, env: Mapping[str, str], fail: Fail) -> Trunk:
    """``[trunks.<name>]``: ``fail`` makes the error naming the trunk."""
    if not is_token(name):
        raise fail("the name must be letters, digits, - or _")
    if not isinstance(raw, dict):
        raise fail("must be a table")
    unknown = set(raw) - _TRUNK_KEYS
    if unknown:
        raise fail(f"unknown key {sorted(unknown)[0]!r}")
    host = str_key(raw, "host", fail)
    if not host:
        raise fail("host is missing")
    if any(c.isspace() for c in host) or "/" in host or "@" in host:
        raise fail(f"host must be a host name or IP address, got {host!r}")
    port = raw.get("port", 0)  # 0: not given, resolved per RFC 3263
    bad_port = not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535
    if "port" in raw and bad_port:
        raise fail(f"port must be a whole number from 1 to 65535, got {port!r}")
    username = str_key(raw, "username", fail)
    if "password" in raw and "password_env" in raw:
        raise fail("give password or password_env, not both")
    password = raw.get("password", "")
    if not isinstance(password, str):
        raise fail("password must be a string")  # never echo it
    password_env = str_key(raw, "password_env", fail)
    if password_env:
        password = env.get(password_env, "")
    password_file = str_key(raw, "password_file", fail)
    if password_file:
        if "password" in raw or password_env:
            raise fail("give one of password, password_env and password_file")
        password = read_secret(password_file, fail)
    if (password or password_env) and not username:
        raise fail("username is required with a password")
    domain = str_key(raw, "domain", fail)
    if any(c.isspace() for c in domain) or "/" in domain or "@" in domain:
        raise fail(f"domain must be a host name, got {domain!r}")
    transport = (str_key(raw, "transport", fail) or "udp").lower()
    if transport not in TRANSPORTS:
        raise fail(f"transport must be udp, tcp or tls, got {transport!r}")
    tls_ca = str_key(raw, "tls_ca", fail)
    if tls_ca and not Path(tls_ca).is_file():
        raise fail(f"tls_ca {tls_ca} is not a readable file")
    proxy = str_key(raw, "outbound_proxy", fail)
    outbound_proxy = None
    if proxy:
        try:
            outbound_proxy = parse_outbound_proxy(proxy)
        except ValueError as exc:
            raise fail(f"outbound_proxy: {exc}") from None
    codecs = tokens_key(raw, "codecs", fail)
    for codec in codecs or ():
        if codec.upper() not in CODECS:
            raise fail(f"codec {codec!r} is not one of {', '.join(CODECS)}")
    if codecs is not None and not codecs:
        raise fail("codecs must name at least one codec")
    dtmf = (str_key(raw, "dtmf", fail) or "rfc4733").lower()
    if dtmf not in DTMF_MODES:
        raise fail(f"dtmf must be rfc4733 or info, got {dtmf!r}")
    transfer = (str_key(raw, "transfer", fail) or "follow").lower()
    if transfer not in TRANSFER_MODES:
        raise fail(f"transfer must be follow or decline, got {transfer!r}")
    srtp = (str_key(raw, "srtp", fail) or "off").lower()
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
    allow = tokens_key(raw, "allow_headers", fail)
    register, register_expires = register_keys(raw, username, fail)
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
        allow=patterns_key(raw, "allow", fail),
        deny=patterns_key(raw, "deny", fail) or (),
        inbound_from=parse_inbound_from(raw.get("inbound_from", []), fail),
        inbound_auth=(
            parse_inbound_auth(raw["inbound_auth"], env, lambda path: read_secret(path, fail), fail)
            if "inbound_auth" in raw
            else None
        ),
    )


def register_keys(raw: Mapping[str, object], username: str, fail: Fail) -> tuple[bool, int]:
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
