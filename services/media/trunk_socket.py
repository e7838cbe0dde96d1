"""The trunk leg's UDP socket: datagrams in to one callback, packets out, nothing else.

The call's ``MediaCore`` decides everything about the packets; this
``DatagramProtocol`` only moves bytes, in the event loop's own callback.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import cast

DatagramSink = Callable[[bytes, tuple[str, int]], None]
"Takes one datagram and the (host, port) it came from."


class TrunkSocket(asyncio.DatagramProtocol):
    """Serves a bound socket (the port allocator's); ``close`` closes it."""

    def __init__(self, sink: DatagramSink) -> None:
        self._sink = sink
        self._transport: asyncio.DatagramTransport | None = None
        self.send_errors = 0

    @classmethod
    async def open(cls, sock: socket.socket, sink: DatagramSink) -> TrunkSocket:
        loop = asyncio.get_running_loop()
        _transport, protocol = await loop.create_datagram_endpoint(lambda: cls(sink), sock=sock)
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        # IPv6 addresses come as 4-tuples; RTP latching compares (host, port).
        self._sink(data, addr if len(addr) == 2 else (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        # ICMP unreachable and the like arrive per packet: count, never log here.
        self.send_errors += 1

    def sendto(self, data: bytes | memoryview, addr: tuple[str, int] | None) -> None:
        transport = self._transport
        if transport is not None and addr is not None:
            transport.sendto(data, addr)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
