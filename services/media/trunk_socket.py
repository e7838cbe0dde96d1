"""The trunk leg's UDP socket: datagrams in to one callback, packets out, nothing else.

The call's ``MediaCore`` decides everything about the packets; this
``DatagramProtocol`` only moves bytes, in the event loop's own callback,
and applies SRTP (or SRTCP, for the RTCP socket) once ``secure`` has the
SDES keys: what fails authentication is dropped and counted.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import cast

from services.media.srtp import SrtpError, SrtpTransform

DatagramSink = Callable[[bytes | memoryview, tuple[str, int]], None]
"Takes one datagram and the (host, port) it came from."


class TrunkSocket(asyncio.DatagramProtocol):
    """Serves a bound socket (the port allocator's); ``close`` closes it."""

    def __init__(self, sink: DatagramSink, rtcp: bool = False) -> None:
        self._sink = sink
        self._rtcp = rtcp
        self._transport: asyncio.DatagramTransport | None = None
        self._protect: SrtpTransform | None = None
        self._unprotect: SrtpTransform | None = None
        self.send_errors = 0
        self.refused = 0
        "Datagrams that failed SRTP authentication (or were replays)."

    @classmethod
    async def open(cls, sock: socket.socket, sink: DatagramSink, rtcp: bool = False) -> TrunkSocket:
        loop = asyncio.get_running_loop()
        _transport, protocol = await loop.create_datagram_endpoint(
            lambda: cls(sink, rtcp), sock=sock
        )
        return protocol

    def secure(self, protect: SrtpTransform, unprotect: SrtpTransform) -> None:
        """From now on packets go out protected and come in unprotected (SDES keys)."""
        self._protect, self._unprotect = protect, unprotect

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        # IPv6 addresses come as 4-tuples; RTP latching compares (host, port).
        source = addr if len(addr) == 2 else (addr[0], addr[1])
        unprotect = self._unprotect
        if unprotect is None:
            self._sink(data, source)
            return
        try:
            clear = unprotect.unprotect_rtcp(data) if self._rtcp else unprotect.unprotect(data)
        except SrtpError:
            self.refused += 1
            return
        self._sink(clear, source)

    def error_received(self, exc: Exception) -> None:
        # ICMP unreachable and the like arrive per packet: count, never log here.
        self.send_errors += 1

    def sendto(self, data: bytes | memoryview, addr: tuple[str, int] | None) -> None:
        transport = self._transport
        if transport is None or addr is None:
            return
        protect = self._protect
        if protect is not None:
            try:
                data = protect.protect_rtcp(data) if self._rtcp else protect.protect(data)
            except SrtpError:
                self.send_errors += 1
                return
        # bytes: a loop that must queue the datagram (uvloop on EAGAIN) keeps the object
        # it was given, and ``data`` is a view of a buffer the next packet reuses.
        transport.sendto(bytes(data), addr)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
