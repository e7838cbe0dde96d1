"""The trunk's media address from its SDP: an IP literal, or a host name resolved."""

from __future__ import annotations

import asyncio
import ipaddress
import socket


def is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


async def resolve(host: str, port: int) -> str:
    """An IP address for the trunk's ``c=`` (RFC 4566 allows a host name there)."""
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    infos = await asyncio.wait_for(
        loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM), timeout=5.0
    )
    if not infos:
        raise OSError(f"cannot resolve {host!r}")
    return str(infos[0][4][0])
