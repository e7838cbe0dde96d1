"""Free ports on 127.0.0.1 for the processes the benchmark starts.

Media port ranges are taken below the kernel's ephemeral range, so that the
sockets the benchmark itself binds to port 0 (its peers, its RTP generator)
never land inside a relay's range while it runs.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOWEST = 10000


def ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def port_free(port: int, kind: int = socket.SOCK_DGRAM, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_port_range(
    size: int, attempts: int = 50, rng: random.Random | None = None
) -> tuple[int, int]:
    """(first, last) of ``size`` consecutive UDP ports, even-aligned, all free now,
    below the ephemeral range when it leaves room, else above it."""
    rng = rng or random.Random()
    low, high = ephemeral_range()
    spans = [(LOWEST, low - 1), (high + 1, 65535)]
    spans = [(a, b) for a, b in spans if b - a + 1 >= size]
    if not spans:
        raise RuntimeError(f"no span of {size} ports outside the ephemeral range {low}-{high}")
    for _ in range(attempts):
        first, last = rng.choice(spans)
        start = rng.randrange(first, last - size + 2) // 2 * 2
        start = max(start, first + first % 2)
        if start + size - 1 > last:
            continue
        if all(port_free(port) for port in range(start, start + size)):
            return start, start + size - 1
    raise RuntimeError(f"no free range of {size} UDP ports")
