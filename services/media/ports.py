"""Trunk RTP ports: even numbers from a range, bound for real, quarantined after use.

The allocator binds the UDP socket itself and hands it over, so no other
process can take the port between the check and its use. A released port
rests for ``quarantine`` seconds: packets of the call that just ended may
still be in flight, and a new call must never hear them.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from proto import errors

DEFAULT_QUARANTINE = 5.0


class NoPortsError(RuntimeError):
    """Every port of the range is in use, quarantined or taken by another process."""

    code = errors.NO_PORTS


class PortAllocator:
    """Hands out even RTP ports of ``[port_min, port_max]`` (RTCP would use port + 1)."""

    def __init__(
        self,
        port_min: int,
        port_max: int,
        host: str = "0.0.0.0",
        quarantine: float = DEFAULT_QUARANTINE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        first = port_min + (port_min & 1)
        if first + 1 > port_max:
            raise ValueError(f"no even RTP port with its RTCP pair in {port_min}-{port_max}")
        self._ports = range(first, port_max, 2)
        self._host = host
        self._family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._quarantine = quarantine
        self._clock = clock
        self._in_use: set[int] = set()
        self._resting: dict[int, float] = {}
        self._next = 0  # round robin, so a port is reused as late as possible

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    def allocate(self) -> tuple[int, socket.socket, socket.socket]:
        """A free even port, and non-blocking UDP sockets bound to it (RTP) and the next (RTCP)."""
        now = self._clock()
        count = len(self._ports)
        for step in range(count):
            index = (self._next + step) % count
            port = self._ports[index]
            if port in self._in_use:
                continue
            until = self._resting.get(port)
            if until is not None:
                if until > now:
                    continue
                del self._resting[port]
            sock = self._bind(port)
            if sock is None:
                continue
            rtcp = self._bind(port + 1)
            if rtcp is None:
                sock.close()
                continue
            self._in_use.add(port)
            self._next = (index + 1) % count
            return port, sock, rtcp
        raise NoPortsError(
            f"no free RTP port in {self._ports.start}-{self._ports.stop} "
            f"({len(self._in_use)} in use, {len(self._resting)} quarantined)"
        )

    def _bind(self, port: int) -> socket.socket | None:
        sock = socket.socket(self._family, socket.SOCK_DGRAM)
        try:
            sock.bind((self._host, port))
        except OSError:
            sock.close()  # another process holds it
            return None
        sock.setblocking(False)
        return sock

    def release(self, port: int) -> None:
        """Give ``port`` back; it is handed out again after the quarantine."""
        if port in self._in_use:
            self._in_use.discard(port)
            self._resting[port] = self._clock() + self._quarantine
