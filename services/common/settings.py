"""Settings from the environment, then ``.env`` (the environment wins).

One struct for every service. A missing or invalid value raises
``SettingsError`` whose message names the setting, so the process can print
one line and exit non-zero.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from services.common import env_values
from services.common.access import Access, AccessError, load_access
from services.common.inbound_routes import (
    DEFAULT_RING_TIMEOUT,
    RING_TIMEOUT_RANGE,
    InboundRoute,
    Network,
    check_identity,
    default_user_route,
    parse_inbound_from,
)
from services.common.providers import (
    DEFAULT_REGISTER_EXPIRES,
    DEFAULT_TRUNK,
    REGISTER_EXPIRES_RANGE,
    SRTP_MODES,
    TRANSFER_MODES,
    Providers,
    ProvidersError,
    Trunk,
    load_providers,
    read_secret_file,
)
from services.common.rates import PER_SECOND_50, Rate, parse_rate
from services.common.sipaddr import (
    TRANSPORTS,
    OutboundProxy,
    parse_dns_servers,
    parse_outbound_proxy,
)


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names it."""


MAX_MEDIA_WORKERS = 1024
"The most media worker processes one ``bridge media`` runs."


SIP_UNKNOWN_SOURCE_MODES = ("reject", "drop")


@dataclass(frozen=True)
class Settings:
    nats_url: str = "nats://127.0.0.1:4222"
    nats_creds: str = ""
    "``NATS_CREDS``: a NATS credentials file (user JWT and seed)."
    nats_user: str = ""
    nats_password: str = field(default="", repr=False)
    "``NATS_PASSWORD`` (or the content of ``NATS_PASSWORD_FILE``)."
    nats_tls_ca: str = ""
    "``NATS_TLS_CA``: PEM of the CAs that sign the NATS server's certificate."
    nats_tls_cert: str = ""
    nats_tls_key: str = ""
    "``NATS_TLS_CERT`` / ``NATS_TLS_KEY``: a client certificate for NATS (mutual TLS)."
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    # The trunk: the five values of the provider guide, plus transport.
    sip_trunk_host: str = ""
    sip_trunk_port: int = 0
    "0: not set; RFC 3263 (NAPTR, SRV) finds it, else 5060 (5061 for tls)."
    sip_username: str = ""
    sip_password: str = field(default="", repr=False)
    sip_domain: str = ""
    sip_transport: str = "udp"
    sip_register: bool = False
    "Keep a REGISTER binding at the ``default`` trunk."
    sip_register_expires: int = DEFAULT_REGISTER_EXPIRES
    sip_transport_explicit: bool = False
    "SIP_TRANSPORT was set: NAPTR does not choose the transport."
    sip_tls_ca: str = ""
    sip_tls_verify: bool = True
    sip_tls_cert: str = ""
    sip_tls_key: str = ""
    "``SIP_TLS_CERT`` / ``SIP_TLS_KEY``: the SIP agent's certificate; set: it listens for TLS."
    sip_tls_port: int = 5061
    "``SIP_TLS_PORT``: where it listens for TLS when SIP_TRANSPORT is not tls (0: any port)."
    inbound_user: str = ""
    "``INBOUND_USER``: the identity every call from the ``.env`` trunk rings."
    inbound_ring_timeout: float = DEFAULT_RING_TIMEOUT
    "``INBOUND_RING_TIMEOUT``: seconds an ``INBOUND_USER`` call rings before 480."
    sip_inbound_from: tuple[Network, ...] = ()
    "``SIP_INBOUND_FROM``: networks the ``.env`` trunk's INVITEs may come from, besides its host."
    sip_dns_servers: tuple[tuple[str, int], ...] = ()
    "``SIP_DNS_SERVERS``: (ip, port) pairs used instead of /etc/resolv.conf."
    sip_outbound_proxy: OutboundProxy | None = None
    sip_bind_host: str = "0.0.0.0"
    sip_local_port: int = 0
    public_ip: str = ""
    default_destination: str = ""
    invite_timeout: float = 60.0
    sip_keepalive_interval: float = 30.0
    "Seconds between in-dialog OPTIONS keep-alives toward the trunk; 0: none."
    sip_transfer: str = "follow"
    sip_srtp: str = "off"
    "``SIP_SRTP``: SRTP toward the ``.env`` trunk (SDES): ``off``, ``optional``, ``required``."
    "What a REFER from the default trunk gets: ``follow`` or ``decline``."
    setup_timeout: float = 10.0
    rtp_bind_host: str = "0.0.0.0"
    rtp_port_min: int = 10000
    rtp_port_max: int = 20000
    ice_servers: tuple[str, ...] = ()
    ice_username: str = ""
    ice_credential: str = field(default="", repr=False)
    ice_transport_policy: str = "all"
    "``ICE_TRANSPORT_POLICY``: the page's ``all`` candidates, or ``relay`` (TURN only)."
    turn_urls: tuple[str, ...] = ()
    "``TURN_URLS``: TURN servers the page gets short-lived credentials for."
    turn_secret: str = field(default="", repr=False)
    "``TURN_SECRET``: the TURN server's ``static-auth-secret`` (TURN REST API)."
    turn_ttl: int = 3600
    "``TURN_TTL``: seconds a minted TURN credential lasts."
    max_calls: int = 50
    "Calls one media worker (process) takes."
    media_workers: int = 1
    "``MEDIA_WORKERS``: processes of ``bridge media`` and ``bridge up``; unset: one per core."
    sip_codecs: tuple[str, ...] = ("PCMU", "PCMA")
    "``SIP_CODECS``: the trunk offer's codecs in order; the browser answer takes the first it has."
    rtp_timeout: float = 30.0
    "``RTP_TIMEOUT``: seconds a leg may send no RTP, after the answer and off hold, before the end."
    log_level: str = "INFO"
    data_dir: str = ".data"
    instance_id: str = ""
    demo: bool = False
    ops_host: str = "127.0.0.1"
    ops_port: int = 9090
    drain_timeout: float = 600.0
    log_format: str = "text"
    otlp_endpoint: str = ""
    heartbeat_interval: float = 1.0
    lease_timeout: float = 3.0
    kv_replicas: int = 1
    sip_unknown_sources: str = "reject"
    "``SIP_UNKNOWN_SOURCES``: requests from an address that is no trunk get 403 or silence."
    sip_source_rate: Rate | None = PER_SECOND_50
    "``SIP_SOURCE_RATE``: SIP requests one address may send; beyond it they are dropped."
    access: Access = field(default_factory=Access)
    "Client tokens, the dial plan's deny list, abuse limits, origins (``services.common.access``)."
    providers_file: str = ""
    providers_config: Providers | None = field(default=None, repr=False, compare=False)
    "The parsed ``PROVIDERS_FILE``; None without one."

    @property
    def default_trunk(self) -> Trunk | None:
        """The ``SIP_TRUNK_*`` settings as the trunk named ``default``; None without a host."""
        if not self.sip_trunk_host:
            return None
        return Trunk(
            name=DEFAULT_TRUNK,
            host=self.sip_trunk_host,
            port=self.sip_trunk_port,
            username=self.sip_username,
            password=self.sip_password,
            domain=self.sip_domain,
            transport=self.sip_transport,
            register=self.sip_register,
            register_expires=self.sip_register_expires,
            transport_explicit=self.sip_transport_explicit,
            tls_ca=self.sip_tls_ca,
            outbound_proxy=self.sip_outbound_proxy,
            transfer=self.sip_transfer,
            srtp=self.sip_srtp,
            inbound_from=self.sip_inbound_from,
        )

    @property
    def providers(self) -> Providers:
        """The routing in force: the providers file, else every destination to ``default``."""
        if self.providers_config is not None:
            return self.providers_config
        trunk = self.default_trunk or Trunk(name=DEFAULT_TRUNK, host="", srtp=self.sip_srtp)
        return Providers.single(trunk)

    @property
    def inbound_routes(self) -> tuple[InboundRoute, ...]:
        """``[[inbound]]`` in file order, then ``INBOUND_USER`` for the ``.env`` trunk."""
        routes = self.providers.inbound
        if self.inbound_user:
            last = default_user_route(self.inbound_user, self.inbound_ring_timeout, DEFAULT_TRUNK)
            routes = (*routes, last)
        return routes

    @property
    def trunk_configured(self) -> bool:
        return bool(self.sip_trunk_host or self.providers_config)

    @property
    def sip_realm_domain(self) -> str:
        """The domain of Request-URIs: SIP_DOMAIN, else the trunk host."""
        return self.sip_domain or self.sip_trunk_host


def parse_dotenv(text: str) -> dict[str, str]:
    """Parse ``KEY=value`` lines; ``#`` comments, ``export`` and quotes allowed."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise SettingsError(f".env line {number}: expected KEY=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        else:
            # An unquoted value ends at an inline comment.
            value = value.split(" #", 1)[0].rstrip()
        values[key] = value
    return values


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    return env_values.whole(env, name, default, lo, hi, SettingsError)


def _seconds(env: Mapping[str, str], name: str, default: float, hi: float = 3600) -> float:
    return env_values.seconds(env, name, default, hi, SettingsError)


def _keepalive(env: Mapping[str, str]) -> float:
    """SIP_KEEPALIVE_INTERVAL: seconds, or 0 for no keep-alive."""
    raw = env.get("SIP_KEEPALIVE_INTERVAL", "").strip()
    try:
        if raw and float(raw) == 0:
            return 0.0
    except ValueError:
        pass
    return _seconds(env, "SIP_KEEPALIVE_INTERVAL", Settings.sip_keepalive_interval, hi=3600)


MEDIA_CODECS = {"pcmu": "PCMU", "pcma": "PCMA", "opus": "opus", "g722": "G722"}
"Codecs the media tier relays or converts, by their name in SIP_CODECS (any case)."


def _codecs(env: Mapping[str, str]) -> tuple[str, ...]:
    """SIP_CODECS: comma-separated codec names, at least one, no repeats."""
    raw = env.get("SIP_CODECS", "").strip()
    if not raw:
        return Settings.sip_codecs
    names: list[str] = []
    for item in raw.split(","):
        name = MEDIA_CODECS.get(item.strip().lower())
        if name is None:
            known = ", ".join(MEDIA_CODECS.values())
            raise SettingsError(f"SIP_CODECS: unknown codec {item.strip()!r} (known: {known})")
        if name not in names:
            names.append(name)
    return tuple(names)


def _secret(env: Mapping[str, str], name: str) -> str:
    """``name``, or the content of the file ``<name>_FILE`` names (a mounted Secret)."""
    path = env.get(f"{name}_FILE", "").strip()
    if not path:
        return env.get(name, "")
    if env.get(name, ""):
        raise SettingsError(f"set {name} or {name}_FILE, not both")
    try:
        return read_secret_file(path)
    except (OSError, UnicodeDecodeError):
        raise SettingsError(f"{name}_FILE {path} is not a readable text file") from None


def _turn(
    env: Mapping[str, str], ice_servers: tuple[str, ...]
) -> tuple[tuple[str, ...], str, int, str]:
    """TURN_URLS, TURN_SECRET (or TURN_SECRET_FILE), TURN_TTL and ICE_TRANSPORT_POLICY."""
    urls = tuple(url.strip() for url in env.get("TURN_URLS", "").split(",") if url.strip())
    for url in urls:
        if not url.startswith(("turn:", "turns:")):
            raise SettingsError(f"TURN_URLS entries must start with turn: or turns:, got {url!r}")
    secret = _secret(env, "TURN_SECRET").strip()
    if urls and not secret:
        raise SettingsError("TURN_URLS needs TURN_SECRET (the TURN server's static-auth-secret)")
    if secret and not urls:
        raise SettingsError("TURN_SECRET needs TURN_URLS (the TURN servers it is for)")
    ttl = _int(env, "TURN_TTL", Settings.turn_ttl, 60, 86400)
    policy = env.get("ICE_TRANSPORT_POLICY", "").strip().lower() or Settings.ice_transport_policy
    if policy not in ("all", "relay"):
        raise SettingsError(f"ICE_TRANSPORT_POLICY must be all or relay, got {policy!r}")
    if policy == "relay" and not urls and not any(u.startswith("turn") for u in ice_servers):
        raise SettingsError(
            "ICE_TRANSPORT_POLICY=relay needs TURN_URLS or a turn: ICE_SERVERS entry"
        )
    return urls, secret, ttl, policy


def _bool(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    return env_values.boolean(env, name, default, SettingsError)


def _host(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip() or default
    if any(c.isspace() for c in value) or "/" in value or "@" in value:
        raise SettingsError(f"{name} must be a host name or IP address, got {value!r}")
    return value


def load_settings(
    environ: Mapping[str, str] | None = None, dotenv: str | Path | None = ".env"
) -> Settings:
    """Read settings from ``environ`` (default ``os.environ``) over ``dotenv``."""
    env: dict[str, str] = {}
    if dotenv is not None and Path(dotenv).is_file():
        env.update(parse_dotenv(Path(dotenv).read_text(encoding="utf-8")))
    env.update(os.environ if environ is None else environ)

    transport = env.get("SIP_TRANSPORT", "").strip().lower() or "udp"
    if transport not in TRANSPORTS:
        raise SettingsError(f"SIP_TRANSPORT must be udp, tcp or tls, got {transport!r}")
    tls_ca = env.get("SIP_TLS_CA", "").strip()
    if tls_ca and not Path(tls_ca).is_file():
        raise SettingsError(f"SIP_TLS_CA {tls_ca} is not a readable file")
    try:
        dns_servers = parse_dns_servers(env.get("SIP_DNS_SERVERS", ""))
    except ValueError as exc:
        raise SettingsError(f"SIP_DNS_SERVERS: {exc}") from None
    proxy_text = env.get("SIP_OUTBOUND_PROXY", "").strip()
    outbound_proxy = None
    if proxy_text:
        try:
            outbound_proxy = parse_outbound_proxy(proxy_text)
        except ValueError as exc:
            raise SettingsError(f"SIP_OUTBOUND_PROXY: {exc}") from None

    public_ip = env.get("PUBLIC_IP", "").strip()
    if public_ip:
        try:
            ipaddress.ip_address(public_ip)
        except ValueError:
            raise SettingsError(f"PUBLIC_IP must be an IP address, got {public_ip!r}") from None

    rtp_min = _int(env, "RTP_PORT_MIN", 10000, 1024, 65534)
    rtp_max = _int(env, "RTP_PORT_MAX", 20000, 1025, 65535)
    if rtp_max - rtp_min < 1:
        raise SettingsError(f"RTP_PORT_MAX ({rtp_max}) must be above RTP_PORT_MIN ({rtp_min})")

    sip_codecs = _codecs(env)
    ice_servers = tuple(url.strip() for url in env.get("ICE_SERVERS", "").split(",") if url.strip())
    for url in ice_servers:
        if not url.startswith(("stun:", "turn:", "turns:")):
            raise SettingsError(
                f"ICE_SERVERS entries must start with stun:, turn: or turns:, got {url!r}"
            )

    turn_urls, turn_secret, turn_ttl, ice_policy = _turn(env, ice_servers)

    nats_url = env.get("NATS_URL", "").strip() or Settings.nats_url
    for url in nats_urls(nats_url):
        if not url.startswith(("nats://", "tls://", "ws://", "wss://")):
            raise SettingsError(f"NATS_URL must be nats:// URLs (comma-separated), got {url!r}")

    level = env.get("LOG_LEVEL", "").strip().upper() or "INFO"
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise SettingsError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {level!r}")

    log_format = env.get("LOG_FORMAT", "").strip().lower() or Settings.log_format
    if log_format not in ("text", "json"):
        raise SettingsError(f"LOG_FORMAT must be text or json, got {log_format!r}")

    otlp_endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if otlp_endpoint and not otlp_endpoint.startswith(("http://", "https://")):
        raise SettingsError(
            f"OTEL_EXPORTER_OTLP_ENDPOINT must be an http:// or https:// URL, got {otlp_endpoint!r}"
        )

    heartbeat_interval = _seconds(env, "HEARTBEAT_INTERVAL", Settings.heartbeat_interval, hi=60)
    lease_timeout = _seconds(env, "LEASE_TIMEOUT", Settings.lease_timeout, hi=600)
    if lease_timeout < 2 * heartbeat_interval:
        # One lost heartbeat must not make an instance look dead.
        raise SettingsError(
            f"LEASE_TIMEOUT ({lease_timeout:g}) must be at least twice "
            f"HEARTBEAT_INTERVAL ({heartbeat_interval:g})"
        )

    sip_srtp = env.get("SIP_SRTP", "").strip().lower() or Settings.sip_srtp
    if sip_srtp not in SRTP_MODES:
        raise SettingsError(f"SIP_SRTP must be off, optional or required, got {sip_srtp!r}")
    sip_transfer = env.get("SIP_TRANSFER", "").strip().lower() or Settings.sip_transfer
    if sip_transfer not in TRANSFER_MODES:
        raise SettingsError(f"SIP_TRANSFER must be follow or decline, got {sip_transfer!r}")

    trunk_host = _host(env, "SIP_TRUNK_HOST", "")
    username = env.get("SIP_USERNAME", "").strip()
    password = _secret(env, "SIP_PASSWORD")
    if trunk_host and password and not username:
        raise SettingsError("SIP_USERNAME is required when SIP_PASSWORD is set")
    register = _bool(env, "SIP_REGISTER")
    if register and not trunk_host:
        raise SettingsError("SIP_REGISTER=true needs SIP_TRUNK_HOST (the registrar)")
    if register and not username:
        raise SettingsError("SIP_REGISTER=true needs SIP_USERNAME")
    register_expires = _int(
        env, "SIP_REGISTER_EXPIRES", DEFAULT_REGISTER_EXPIRES, *REGISTER_EXPIRES_RANGE
    )

    sip_tls_cert, sip_tls_key = (env.get(n, "").strip() for n in ("SIP_TLS_CERT", "SIP_TLS_KEY"))
    if bool(sip_tls_cert) != bool(sip_tls_key):
        raise SettingsError("SIP_TLS_CERT and SIP_TLS_KEY go together: set both or neither")
    for name, path in (("SIP_TLS_CERT", sip_tls_cert), ("SIP_TLS_KEY", sip_tls_key)):
        if path and not Path(path).is_file():
            raise SettingsError(f"{name} {path} is not a readable file")
    inbound_user = env.get("INBOUND_USER", "").strip()
    if inbound_user:
        try:
            check_identity(inbound_user)
        except ValueError as exc:
            raise SettingsError(f"INBOUND_USER: {exc}") from None
    ring_timeout = _seconds(
        env, "INBOUND_RING_TIMEOUT", DEFAULT_RING_TIMEOUT, hi=RING_TIMEOUT_RANGE[1]
    )
    if ring_timeout < RING_TIMEOUT_RANGE[0]:
        raise SettingsError(f"INBOUND_RING_TIMEOUT must be at least {RING_TIMEOUT_RANGE[0]:g} s")
    sip_inbound_from = parse_inbound_from(
        env.get("SIP_INBOUND_FROM", ""), SettingsError, key="SIP_INBOUND_FROM"
    )

    http_host = _host(env, "HTTP_HOST", Settings.http_host)
    try:
        access = load_access(env, http_host)
    except AccessError as exc:
        raise SettingsError(str(exc)) from None
    unknown_sources = env.get("SIP_UNKNOWN_SOURCES", "").strip().lower() or "reject"
    if unknown_sources not in SIP_UNKNOWN_SOURCE_MODES:
        raise SettingsError(f"SIP_UNKNOWN_SOURCES must be reject or drop, got {unknown_sources!r}")
    try:
        sip_source_rate = parse_rate(env.get("SIP_SOURCE_RATE", "").strip() or "50/s")
    except ValueError as exc:
        raise SettingsError(f"SIP_SOURCE_RATE {exc}") from None
    nats_tls = {}
    for name in ("NATS_CREDS", "NATS_TLS_CA", "NATS_TLS_CERT", "NATS_TLS_KEY"):
        path = env.get(name, "").strip()
        if path and not Path(path).is_file():
            raise SettingsError(f"{name} {path} is not a readable file")
        nats_tls[name] = path
    if bool(nats_tls["NATS_TLS_CERT"]) != bool(nats_tls["NATS_TLS_KEY"]):
        raise SettingsError("NATS_TLS_CERT and NATS_TLS_KEY go together: set both or neither")
    nats_user = env.get("NATS_USER", "").strip()
    nats_password = _secret(env, "NATS_PASSWORD")
    if nats_password and not nats_user:
        raise SettingsError("NATS_USER is required when NATS_PASSWORD is set")

    settings = Settings(
        nats_url=nats_url,
        nats_creds=nats_tls["NATS_CREDS"],
        nats_user=nats_user,
        nats_password=nats_password,
        nats_tls_ca=nats_tls["NATS_TLS_CA"],
        nats_tls_cert=nats_tls["NATS_TLS_CERT"],
        nats_tls_key=nats_tls["NATS_TLS_KEY"],
        sip_unknown_sources=unknown_sources,
        sip_source_rate=sip_source_rate,
        access=access,
        http_host=http_host,
        http_port=_int(env, "HTTP_PORT", Settings.http_port, 0, 65535),
        sip_trunk_host=trunk_host,
        sip_trunk_port=_int(env, "SIP_TRUNK_PORT", 0, 1, 65535),
        sip_username=username,
        sip_password=password,
        sip_domain=_host(env, "SIP_DOMAIN", ""),
        sip_transport=transport,
        sip_register=register,
        sip_register_expires=register_expires,
        sip_transport_explicit=bool(env.get("SIP_TRANSPORT", "").strip()),
        sip_tls_ca=tls_ca,
        sip_tls_verify=_bool(env, "SIP_TLS_VERIFY", default=True),
        sip_tls_cert=sip_tls_cert,
        sip_tls_key=sip_tls_key,
        sip_tls_port=_int(env, "SIP_TLS_PORT", Settings.sip_tls_port, 0, 65535),
        inbound_user=inbound_user,
        inbound_ring_timeout=ring_timeout,
        sip_inbound_from=sip_inbound_from,
        sip_dns_servers=dns_servers,
        sip_outbound_proxy=outbound_proxy,
        sip_bind_host=_host(env, "SIP_BIND_HOST", Settings.sip_bind_host),
        sip_local_port=_int(env, "SIP_LOCAL_PORT", 0, 0, 65535),
        public_ip=public_ip,
        default_destination=env.get("DEFAULT_DESTINATION", "").strip(),
        invite_timeout=_seconds(env, "INVITE_TIMEOUT", Settings.invite_timeout),
        sip_keepalive_interval=_keepalive(env),
        sip_transfer=sip_transfer,
        sip_srtp=sip_srtp,
        setup_timeout=_seconds(env, "SETUP_TIMEOUT", Settings.setup_timeout),
        rtp_bind_host=_host(env, "RTP_BIND_HOST", Settings.rtp_bind_host),
        rtp_port_min=rtp_min,
        rtp_port_max=rtp_max,
        ice_servers=ice_servers,
        sip_codecs=sip_codecs,
        rtp_timeout=_seconds(env, "RTP_TIMEOUT", Settings.rtp_timeout, hi=86400),
        ice_username=env.get("ICE_USERNAME", "").strip(),
        ice_credential=env.get("ICE_CREDENTIAL", ""),
        ice_transport_policy=ice_policy,
        turn_urls=turn_urls,
        turn_secret=turn_secret,
        turn_ttl=turn_ttl,
        max_calls=_int(env, "MAX_CALLS", Settings.max_calls, 1, 100000),
        media_workers=_int(
            env, "MEDIA_WORKERS", min(cores(), MAX_MEDIA_WORKERS), 1, MAX_MEDIA_WORKERS
        ),
        log_level=level,
        data_dir=env.get("DATA_DIR", "").strip() or Settings.data_dir,
        instance_id=env.get("INSTANCE_ID", "").strip()
        or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
        demo=_bool(env, "BRIDGE_DEMO"),
        ops_host=_host(env, "OPS_HOST", Settings.ops_host),
        ops_port=_int(env, "OPS_PORT", Settings.ops_port, 0, 65535),
        drain_timeout=_seconds(env, "DRAIN_TIMEOUT", Settings.drain_timeout, hi=86400),
        log_format=log_format,
        otlp_endpoint=otlp_endpoint,
        heartbeat_interval=heartbeat_interval,
        lease_timeout=lease_timeout,
        kv_replicas=_int(env, "KV_REPLICAS", Settings.kv_replicas, 1, 5),
        providers_file=env.get("PROVIDERS_FILE", "").strip(),
    )
    if not settings.providers_file:
        return settings
    try:
        providers = load_providers(settings.providers_file, env, settings.default_trunk)
    except ProvidersError as exc:
        raise SettingsError(str(exc)) from None
    return replace(settings, providers_config=providers)


def cores() -> int:
    """The cores this process may run on: its CPU affinity, else ``os.cpu_count()``.

    In a container this is the node's cores unless a cpuset pins it: a CPU
    limit (a quota) does not show here, so Kubernetes sets MEDIA_WORKERS.
    """
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def nats_urls(nats_url: str) -> list[str]:
    """The servers of ``NATS_URL``: one URL, or several separated by commas (a cluster)."""
    return [url.strip() for url in nats_url.split(",") if url.strip()] or [nats_url]


def local_address_toward(host: str, port: int) -> str:
    """The local IP address the kernel would use to reach ``host``.

    Used for SDP and Contact when PUBLIC_IP is not set. No packet is sent.
    """
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((host, port))
            return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"


def redact_url(url: str) -> str:
    """``url`` without the user and password it may carry, for messages and logs."""
    if "," in url:
        return ",".join(redact_url(part) for part in url.split(","))
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    return f"{scheme}://***@{rest.split('@', 1)[1]}"
