"""Settings from the environment, then ``.env`` (the environment wins).

One struct for every service. A missing or invalid value raises
``SettingsError`` whose message names the setting, so the process can print
one line and exit non-zero. Each concept reads its own settings, and
``load_settings`` composes them: ``nats_settings`` (the bus),
``env_trunk_settings`` (``SIP_TRUNK_*``), ``sip_transport_settings``,
``inbound_settings`` (calls from the trunks), ``ice_settings`` (ICE and
TURN); the providers file is ``providers``; the shared readers are
``setting_readers``.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from services.common.access import Access, AccessError, load_access
from services.common.env_trunk_settings import DEFAULT_SRTP, DEFAULT_TRANSFER, load_env_trunk
from services.common.ice_settings import (
    DEFAULT_ICE_TRANSPORT_POLICY,
    DEFAULT_TURN_TTL,
    load_ice,
)
from services.common.inbound_routes import (
    DEFAULT_RING_TIMEOUT,
    InboundRoute,
    Network,
    default_user_route,
)
from services.common.inbound_settings import DEFAULT_MAX_RINGING, load_inbound
from services.common.nats_settings import DEFAULT_NATS_URL, load_nats, load_nats_url
from services.common.nats_settings import nats_urls as nats_urls
from services.common.nats_settings import redact_url as redact_url
from services.common.provider_fields import ProvidersError
from services.common.providers import Providers, load_providers
from services.common.rates import PER_SECOND_50, Rate, parse_rate
from services.common.setting_readers import SettingsError as SettingsError
from services.common.setting_readers import boolean, host, seconds, whole
from services.common.setting_readers import parse_dotenv as parse_dotenv
from services.common.sip_transport_settings import (
    DEFAULT_BIND_HOST,
    DEFAULT_KEEPALIVE_INTERVAL,
    DEFAULT_TLS_PORT,
    load_sip_transport,
)
from services.common.sipaddr import OutboundProxy
from services.common.trunks import DEFAULT_REGISTER_EXPIRES, DEFAULT_TRUNK, Trunk

MAX_MEDIA_WORKERS = 1024
"The most media worker processes one ``bridge media`` runs."


SIP_UNKNOWN_SOURCE_MODES = ("reject", "drop")


@dataclass(frozen=True)
class Settings:
    nats_url: str = DEFAULT_NATS_URL
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
    sip_tls_port: int = DEFAULT_TLS_PORT
    "``SIP_TLS_PORT``: where it listens for TLS when SIP_TRANSPORT is not tls (0: any port)."
    inbound_user: str = ""
    "``INBOUND_USER``: the identity every call from the ``.env`` trunk rings."
    inbound_ring_timeout: float = DEFAULT_RING_TIMEOUT
    "``INBOUND_RING_TIMEOUT``: seconds an ``INBOUND_USER`` call rings before 480."
    sip_inbound_from: tuple[Network, ...] = ()
    "``SIP_INBOUND_FROM``: networks the ``.env`` trunk's INVITEs may come from, besides its host."
    inbound_max_ringing: int = DEFAULT_MAX_RINGING
    "``INBOUND_MAX_RINGING``: calls from the trunks one SIP agent lets ring at once; beyond: 486."
    sip_nonce_secret: bytes = field(default=b"", repr=False)
    """``SIP_NONCE_SECRET`` (or ``SIP_NONCE_SECRET_FILE``): signs the digest nonces of
    ``inbound_auth`` challenges, the same for every SIP agent; empty: random per process."""
    sip_dns_servers: tuple[tuple[str, int], ...] = ()
    "``SIP_DNS_SERVERS``: (ip, port) pairs used instead of /etc/resolv.conf."
    sip_outbound_proxy: OutboundProxy | None = None
    sip_bind_host: str = DEFAULT_BIND_HOST
    sip_local_port: int = 0
    public_ip: str = ""
    default_destination: str = ""
    invite_timeout: float = 60.0
    sip_keepalive_interval: float = DEFAULT_KEEPALIVE_INTERVAL
    "Seconds between in-dialog OPTIONS keep-alives toward the trunk; 0: none."
    sip_transfer: str = DEFAULT_TRANSFER
    sip_srtp: str = DEFAULT_SRTP
    "``SIP_SRTP``: SRTP toward the ``.env`` trunk (SDES): ``off``, ``optional``, ``required``."
    "What a REFER from the default trunk gets: ``follow`` or ``decline``."
    setup_timeout: float = 10.0
    rtp_bind_host: str = "0.0.0.0"
    rtp_port_min: int = 10000
    rtp_port_max: int = 20000
    ice_servers: tuple[str, ...] = ()
    ice_username: str = ""
    ice_credential: str = field(default="", repr=False)
    ice_transport_policy: str = DEFAULT_ICE_TRANSPORT_POLICY
    "``ICE_TRANSPORT_POLICY``: the page's ``all`` candidates, or ``relay`` (TURN only)."
    turn_urls: tuple[str, ...] = ()
    "``TURN_URLS``: TURN servers the page gets short-lived credentials for."
    turn_secret: str = field(default="", repr=False)
    "``TURN_SECRET``: the TURN server's ``static-auth-secret`` (TURN REST API)."
    turn_ttl: int = DEFAULT_TURN_TTL
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


def load_settings(
    environ: Mapping[str, str] | None = None, dotenv: str | Path | None = ".env"
) -> Settings:
    """Read settings from ``environ`` (default ``os.environ``) over ``dotenv``."""
    env: dict[str, str] = {}
    if dotenv is not None and Path(dotenv).is_file():
        env.update(parse_dotenv(Path(dotenv).read_text(encoding="utf-8")))
    env.update(os.environ if environ is None else environ)

    sip = load_sip_transport(env)

    public_ip = env.get("PUBLIC_IP", "").strip()
    if public_ip:
        try:
            ipaddress.ip_address(public_ip)
        except ValueError:
            raise SettingsError(f"PUBLIC_IP must be an IP address, got {public_ip!r}") from None

    rtp_min = whole(env, "RTP_PORT_MIN", 10000, 1024, 65534)
    rtp_max = whole(env, "RTP_PORT_MAX", 20000, 1025, 65535)
    if rtp_max - rtp_min < 1:
        raise SettingsError(f"RTP_PORT_MAX ({rtp_max}) must be above RTP_PORT_MIN ({rtp_min})")

    sip_codecs = _codecs(env)
    ice = load_ice(env)
    nats_url = load_nats_url(env)

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

    heartbeat_interval = seconds(env, "HEARTBEAT_INTERVAL", Settings.heartbeat_interval, hi=60)
    lease_timeout = seconds(env, "LEASE_TIMEOUT", Settings.lease_timeout, hi=600)
    if lease_timeout < 2 * heartbeat_interval:
        # One lost heartbeat must not make an instance look dead.
        raise SettingsError(
            f"LEASE_TIMEOUT ({lease_timeout:g}) must be at least twice "
            f"HEARTBEAT_INTERVAL ({heartbeat_interval:g})"
        )

    trunk = load_env_trunk(env)
    inbound = load_inbound(env)

    http_host = host(env, "HTTP_HOST", Settings.http_host)
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
    nats = load_nats(env, nats_url)

    settings = Settings(
        nats_url=nats.url,
        nats_creds=nats.creds,
        nats_user=nats.user,
        nats_password=nats.password,
        nats_tls_ca=nats.tls_ca,
        nats_tls_cert=nats.tls_cert,
        nats_tls_key=nats.tls_key,
        sip_unknown_sources=unknown_sources,
        sip_source_rate=sip_source_rate,
        access=access,
        http_host=http_host,
        http_port=whole(env, "HTTP_PORT", Settings.http_port, 0, 65535),
        sip_trunk_host=trunk.host,
        sip_trunk_port=trunk.port,
        sip_username=trunk.username,
        sip_password=trunk.password,
        sip_domain=trunk.domain,
        sip_transport=sip.transport,
        sip_register=trunk.register,
        sip_register_expires=trunk.register_expires,
        sip_transport_explicit=sip.transport_explicit,
        sip_tls_ca=sip.tls_ca,
        sip_tls_verify=sip.tls_verify,
        sip_tls_cert=sip.tls_cert,
        sip_tls_key=sip.tls_key,
        sip_tls_port=sip.tls_port,
        inbound_user=inbound.user,
        inbound_ring_timeout=inbound.ring_timeout,
        sip_inbound_from=inbound.inbound_from,
        inbound_max_ringing=inbound.max_ringing,
        sip_nonce_secret=inbound.nonce_secret,
        sip_dns_servers=sip.dns_servers,
        sip_outbound_proxy=sip.outbound_proxy,
        sip_bind_host=sip.bind_host,
        sip_local_port=sip.local_port,
        public_ip=public_ip,
        default_destination=env.get("DEFAULT_DESTINATION", "").strip(),
        invite_timeout=seconds(env, "INVITE_TIMEOUT", Settings.invite_timeout),
        sip_keepalive_interval=sip.keepalive_interval,
        sip_transfer=trunk.transfer,
        sip_srtp=trunk.srtp,
        setup_timeout=seconds(env, "SETUP_TIMEOUT", Settings.setup_timeout),
        rtp_bind_host=host(env, "RTP_BIND_HOST", Settings.rtp_bind_host),
        rtp_port_min=rtp_min,
        rtp_port_max=rtp_max,
        ice_servers=ice.servers,
        sip_codecs=sip_codecs,
        rtp_timeout=seconds(env, "RTP_TIMEOUT", Settings.rtp_timeout, hi=86400),
        ice_username=ice.username,
        ice_credential=ice.credential,
        ice_transport_policy=ice.transport_policy,
        turn_urls=ice.turn_urls,
        turn_secret=ice.turn_secret,
        turn_ttl=ice.turn_ttl,
        max_calls=whole(env, "MAX_CALLS", Settings.max_calls, 1, 100000),
        media_workers=whole(
            env, "MEDIA_WORKERS", min(cores(), MAX_MEDIA_WORKERS), 1, MAX_MEDIA_WORKERS
        ),
        log_level=level,
        data_dir=env.get("DATA_DIR", "").strip() or Settings.data_dir,
        instance_id=env.get("INSTANCE_ID", "").strip()
        or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
        demo=boolean(env, "BRIDGE_DEMO"),
        ops_host=host(env, "OPS_HOST", Settings.ops_host),
        ops_port=whole(env, "OPS_PORT", Settings.ops_port, 0, 65535),
        drain_timeout=seconds(env, "DRAIN_TIMEOUT", Settings.drain_timeout, hi=86400),
        log_format=log_format,
        otlp_endpoint=otlp_endpoint,
        heartbeat_interval=heartbeat_interval,
        lease_timeout=lease_timeout,
        kv_replicas=whole(env, "KV_REPLICAS", Settings.kv_replicas, 1, 5),
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
