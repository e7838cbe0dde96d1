"""The RTP echo of one demo call: every packet goes straight back to where it came from."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import cast

logger = logging.getLogger(__name__)

Addr = tuple[str, int]


class EchoProtocol(asyncio.DatagramProtocol):
    """Sends each datagram back to its source, after ``delay`` seconds when non-zero.

    The bridge's RTP is symmetric, so the source address is where it listens. Nothing is
    logged or allocated per packet: at 50 packets a second per call, that adds up.
    """

    def __init__(self, delay: float = 0.0) -> None:
        self._delay = delay
        self._transport: asyncio.DatagramTransport | None = None
        self._closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector transport does not subclass DatagramTransport, though it is one.
        self._transport = cast(asyncio.DatagramTransport, transport)
        if self._closed:  # closed before the endpoint was ready
            self._transport.close()

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self._delay > 0:
            asyncio.get_running_loop().call_later(self._delay, self._send_later, data, addr)
        else:
            transport.sendto(data, addr)

    def _send_later(self, data: bytes, addr: Addr) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable once the caller has gone: expected, not worth a log line.
        pass

    def close(self) -> None:
        self._closed = True
        if self._transport is not None:
            self._transport.close()


class EchoPorts:
    """Opens one echo socket per call: the ``RtpPorts`` of the demo UAS.

    ``open`` must return the port at once, so the socket is bound synchronously and handed
    to asyncio, which finishes setting the endpoint up in a task.
    """

    def __init__(self, host: str, delay: float = 0.0) -> None:
        self._host = host
        self._delay = delay
        self._echoes: dict[str, EchoProtocol] = {}
        self._tasks: set[asyncio.Task[object]] = set()

    def open(self, call_id: str) -> int:
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((self._host, 0))
            port: int = sock.getsockname()[1]
        except OSError:
            sock.close()
            raise
        echo = EchoProtocol(self._delay)
        self.close(call_id)
        self._echoes[call_id] = echo
        loop = asyncio.get_running_loop()
        task: asyncio.Task[object] = loop.create_task(
            loop.create_datagram_endpoint(lambda: echo, sock=sock)
        )
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._started(t, sock))
        return port

    def _started(self, task: asyncio.Task[object], sock: socket.socket) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is not None:
            # The endpoint never took the socket over, so it is ours to close.
            sock.close()
            if not task.cancelled():
                logger.warning("echo socket failed: %s", task.exception())

    def close(self, call_id: str) -> None:
        echo = self._echoes.pop(call_id, None)
        if echo is not None:
            echo.close()

    def close_all(self) -> None:
        for call_id in list(self._echoes):
            self.close(call_id)

    def __len__(self) -> int:
        return len(self._echoes)
