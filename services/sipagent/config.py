"""What a ``SipAgent`` is configured with, and why a dial can fail."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.common.rates import PER_SECOND_50, Rate
from services.common.settings import Settings
from services.common.sip.transaction import T1
from services.common.sipaddr import OutboundProxy


class DialError(Exception):
    """The call could not be placed; the message says why."""


class UnreachableError(DialError):
    """The trunk's name did not resolve to any target."""


@dataclass(frozen=True)
class AgentConfig:
    trunk_host: str
    trunk_port: int = 0
    "0: not given (RFC 3263 resolution)."
    domain: str = ""
    username: str = ""
    password: str = field(default="", repr=False)
    transport: str = "udp"
    transport_explicit: bool = True
    bind_host: str = "0.0.0.0"
    local_port: int = 0
    public_ip: str = ""
    invite_timeout: float = 60.0
    t1: float = T1
    tls_ca: str = ""
    tls_verify: bool = True
    tls_cert: str = ""
    tls_key: str = ""
    "The agent's certificate and key (PEM): set, it listens for TLS (trunks call in over it)."
    tls_port: int = 5061
    "Where it listens for TLS when ``transport`` is not tls (0: any port)."
    dns_servers: tuple[tuple[str, int], ...] = ()
    outbound_proxy: OutboundProxy | None = None
    keepalive_interval: float = 30.0
    "Seconds between in-dialog OPTIONS keep-alives; 0: none."
    transfer: str = "follow"
    "What the default trunk's REFER gets: ``follow`` or ``decline``."
    unknown_sources: str = "reject"
    "What a request from an address that is no trunk's gets: ``reject`` (403) or ``drop``."
    source_rate: Rate | None = PER_SECOND_50
    "Messages per source address (known trunks: ten times that); None: no limit."

    @classmethod
    def from_settings(cls, settings: Settings) -> AgentConfig:
        return cls(
            trunk_host=settings.sip_trunk_host,
            trunk_port=settings.sip_trunk_port,
            domain=settings.sip_realm_domain,
            username=settings.sip_username,
            password=settings.sip_password,
            transport=settings.sip_transport,
            transport_explicit=settings.sip_transport_explicit,
            bind_host=settings.sip_bind_host,
            local_port=settings.sip_local_port,
            public_ip=settings.public_ip,
            invite_timeout=settings.invite_timeout,
            tls_ca=settings.sip_tls_ca,
            tls_verify=settings.sip_tls_verify,
            tls_cert=settings.sip_tls_cert,
            tls_key=settings.sip_tls_key,
            tls_port=settings.sip_tls_port,
            dns_servers=settings.sip_dns_servers,
            outbound_proxy=settings.sip_outbound_proxy,
            keepalive_interval=settings.sip_keepalive_interval,
            transfer=settings.sip_transfer,
            unknown_sources=settings.sip_unknown_sources,
            source_rate=settings.sip_source_rate,
        )
