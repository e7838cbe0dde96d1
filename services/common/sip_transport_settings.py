"""How the SIP agent speaks SIP: transport, TLS, DNS, outbound proxy, ports, keep-alives. Pure.

``SIP_TRANSPORT`` (``udp``, ``tcp``, ``tls``), ``SIP_TLS_CA``/``SIP_TLS_VERIFY``
(checking the trunk), ``SIP_TLS_CERT``/``SIP_TLS_KEY``/``SIP_TLS_PORT`` (our
certificate: we listen for TLS), ``SIP_DNS_SERVERS``, ``SIP_OUTBOUND_PROXY``,
``SIP_BIND_HOST``, ``SIP_LOCAL_PORT`` and ``SIP_KEEPALIVE_INTERVAL``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.common.setting_readers import SettingsError, boolean, host, seconds, whole
from services.common.sipaddr import (
    TRANSPORTS,
    OutboundProxy,
    parse_dns_servers,
    parse_outbound_proxy,
)

DEFAULT_TLS_PORT = 5061
"Where the SIP agent listens for TLS when SIP_TRANSPORT is not tls."
DEFAULT_BIND_HOST = "0.0.0.0"
DEFAULT_KEEPALIVE_INTERVAL = 30.0
"Seconds between in-dialog OPTIONS keep-alives toward the trunk."


@dataclass(frozen=True)
class SipTransportSettings:
    """The SIP transport settings, checked."""

    transport: str = "udp"
    transport_explicit: bool = False
    "SIP_TRANSPORT was set: NAPTR does not choose the transport."
    tls_ca: str = ""
    tls_verify: bool = True
    tls_cert: str = ""
    tls_key: str = ""
    tls_port: int = DEFAULT_TLS_PORT
    dns_servers: tuple[tuple[str, int], ...] = ()
    outbound_proxy: OutboundProxy | None = None
    bind_host: str = DEFAULT_BIND_HOST
    local_port: int = 0
    keepalive_interval: float = DEFAULT_KEEPALIVE_INTERVAL


def load_sip_transport(env: Mapping[str, str]) -> SipTransportSettings:
    """Every SIP transport setting of ``env``; ``SettingsError`` names a wrong one."""
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

    sip_tls_cert, sip_tls_key = (env.get(n, "").strip() for n in ("SIP_TLS_CERT", "SIP_TLS_KEY"))
    if bool(sip_tls_cert) != bool(sip_tls_key):
        raise SettingsError("SIP_TLS_CERT and SIP_TLS_KEY go together: set both or neither")
    for name, path in (("SIP_TLS_CERT", sip_tls_cert), ("SIP_TLS_KEY", sip_tls_key)):
        if path and not Path(path).is_file():
            raise SettingsError(f"{name} {path} is not a readable file")
    return SipTransportSettings(
        transport=transport,
        transport_explicit=bool(env.get("SIP_TRANSPORT", "").strip()),
        tls_ca=tls_ca,
        tls_verify=boolean(env, "SIP_TLS_VERIFY", default=True),
        tls_cert=sip_tls_cert,
        tls_key=sip_tls_key,
        tls_port=whole(env, "SIP_TLS_PORT", DEFAULT_TLS_PORT, 0, 65535),
        dns_servers=dns_servers,
        outbound_proxy=outbound_proxy,
        bind_host=host(env, "SIP_BIND_HOST", DEFAULT_BIND_HOST),
        local_port=whole(env, "SIP_LOCAL_PORT", 0, 0, 65535),
        keepalive_interval=_keepalive(env),
    )


def _keepalive(env: Mapping[str, str]) -> float:
    """SIP_KEEPALIVE_INTERVAL: seconds, or 0 for no keep-alive."""
    raw = env.get("SIP_KEEPALIVE_INTERVAL", "").strip()
    try:
        if raw and float(raw) == 0:
            return 0.0
    except ValueError:
        pass
    return seconds(env, "SIP_KEEPALIVE_INTERVAL", DEFAULT_KEEPALIVE_INTERVAL, hi=3600)
