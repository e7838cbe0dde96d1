"""Addresses of SIP servers in settings: the outbound proxy and DNS servers.

Pure parsing, ``ValueError`` with a readable reason; the caller names the
setting. Shared by the settings, the providers file and the SIP agent.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from services.common.digits import is_number

TRANSPORTS = ("udp", "tcp", "tls")
"Transports toward a trunk or proxy (the Via transport, lower-case)."

DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}
"RFC 3261 19.1.2: 5061 for sips/TLS, 5060 otherwise."

# host (name, IPv4, [IPv6]) and an optional port
_HOSTPORT = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-_]+)(?::(?P<port>\d{1,5}))?")


def host_literal(host: str) -> str:
    """``host`` as it stands in a URI or host:port: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


@dataclass(frozen=True)
class OutboundProxy:
    """``SIP_OUTBOUND_PROXY`` / a trunk's ``outbound_proxy``: where every request goes first."""

    host: str
    "Name or IP (IPv6 without brackets)."
    port: int = 0
    "0: not given (resolved per RFC 3263)."
    transport: str = ""
    "``udp``/``tcp``/``tls``; empty: the trunk's transport."
    sips: bool = False

    def route(self, transport: str) -> str:
        """The preloaded ``Route`` value (RFC 3261 8.1.2), loose routing."""
        scheme = "sips" if self.sips or transport == "tls" else "sip"
        host = host_literal(self.host)
        port = f":{self.port}" if self.port else ""
        params = f";transport={self.transport}" if self.transport and scheme == "sip" else ""
        return f"<{scheme}:{host}{port}{params};lr>"


def parse_outbound_proxy(text: str) -> OutboundProxy:
    """``sip:host[:port][;transport=x][;lr]``, ``sips:host[:port]`` or ``host[:port]``."""
    value = text.strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1].strip()
    sips = False
    lower = value.lower()
    if lower.startswith("sips:"):
        sips, value = True, value[5:]
    elif lower.startswith("sip:"):
        value = value[4:]
    if "@" in value:
        raise ValueError("a proxy address has no user part")
    hostport, *params = value.split(";")
    match = _HOSTPORT.fullmatch(hostport)
    if not match:
        raise ValueError("expected sip:host[:port][;transport=udp|tcp|tls] or host[:port]")
    host = match["host"].strip("[]")
    port = int(match["port"] or 0)
    if match["port"] is not None and not 1 <= port <= 65535:
        raise ValueError(f"port must be between 1 and 65535, got {port}")
    transport = "tls" if sips else ""
    for param in params:
        name, _, raw = param.partition("=")
        name = name.strip().lower()
        if name == "transport":
            transport = raw.strip().lower()
            if transport not in TRANSPORTS:
                raise ValueError(f"transport must be udp, tcp or tls, got {raw.strip()!r}")
        elif name not in ("lr", ""):
            raise ValueError(f"unknown parameter {name!r} (only transport and lr)")
    if sips and transport not in ("", "tls"):
        raise ValueError("a sips: proxy takes transport tls only")
    return OutboundProxy(host=host, port=port, transport=transport, sips=sips)


def parse_dns_servers(text: str) -> tuple[tuple[str, int], ...]:
    """``ip[:port]`` entries, comma-separated (``[v6]:port`` for IPv6 with a port)."""
    servers: list[tuple[str, int]] = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        host, port = entry, 53
        if entry.startswith("["):
            inner, _, rest = entry[1:].partition("]")
            host = inner
            if rest:
                if not rest.startswith(":"):
                    raise ValueError(f"expected ip[:port], got {entry!r}")
                port = _port(rest[1:], entry)
        elif entry.count(":") == 1:
            host, _, raw_port = entry.partition(":")
            port = _port(raw_port, entry)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"expected an IP address, got {entry!r}") from None
        servers.append((host, port))
    return tuple(servers)


def _port(raw: str, entry: str) -> int:
    if not is_number(raw) or not 1 <= int(raw) <= 65535:
        raise ValueError(f"port must be between 1 and 65535 in {entry!r}")
    return int(raw)


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True
