"""SIP over UDP, TCP or TLS: bytes in, bytes out, nothing else.

Each transport hands every received message (a datagram, or one message cut
from a TCP stream by ``framing.StreamFramer``) to ``on_message(data, addr)``
and sends with ``send(data, addr)``, which never blocks: TCP and TLS
connections are opened on first use and reused, one per remote address, and
answer RFC 5626 keep-alive pings themselves. What comes in on a connection a
peer opened goes back on it; once that connection is closed, messages for
it go to a new connection to the port of its top Via's sent-by (RFC 3261
18.2.2; 5060, or 5061 over TLS, when it names none). A connection that cannot be
opened (refused, timed out, TLS handshake or certificate refused) is reported
to ``on_error(addr, reason)`` so the calls waiting on it end at once instead
of at Timer B.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import ssl
from collections.abc import Callable

from services.common.sip.framing import (
    PONG,
    MessageFramed,
    PingReceived,
    StreamBroken,
    StreamFramer,
)
from services.common.sip.transaction import T1
from services.common.sipaddr import host_literal

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 64 * T1
"Seconds allowed to open a TCP connection: the transaction timeout (Timer B/F)."

Addr = tuple[str, int]
OnMessage = Callable[[bytes, Addr], None]
OnError = Callable[[Addr, str], None]

MAX_REROUTES = 4096
"Closed peer connections remembered with the address their requests named (Via sent-by)."

_TOP_VIA = re.compile(
    rb"^(?:via|v)[ \t]*:[ \t]*SIP[ \t]*/[ \t]*2\.0[ \t]*/[ \t]*[a-z]+[ \t]+"
    rb"(\[[0-9a-f:.]+\]|[^\s;:,]+)(?::([0-9]+))?",
    re.IGNORECASE | re.MULTILINE,
)


def via_return_addr(message: bytes, source: Addr, default_port: int) -> Addr | None:
    """Where responses to a request received from ``source`` go once its connection is
    closed (RFC 3261 18.2.2): ``source``'s IP (Via ``received``), the port of the top Via's
    sent-by, else ``default_port``. None for a response, or a request with no Via."""
    head = message.split(b"\r\n\r\n", 1)[0]
    if head.startswith(b"SIP/"):
        return None
    via = _TOP_VIA.search(head)
    if via is None:
        return None
    port = int(via.group(2)) if via.group(2) else default_port
    if not 0 < port < 65536:
        return None
    return (source[0], port)


class SipTransport:
    """What the agent needs from a transport."""

    name = ""
    "``udp`` or ``tcp``: the Via transport and Contact ``transport=`` value."
    local_port = 0
    on_error: OnError | None = None
    "Told when a connection toward an address could not be opened."

    def send(self, data: bytes, addr: Addr) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


async def open_transport(
    name: str,
    host: str,
    port: int,
    on_message: OnMessage,
    server_context: ssl.SSLContext | None = None,
) -> SipTransport:
    """Bind a transport (port 0: an ephemeral one). ``server_context``: TLS listens with it."""
    if name == "tcp":
        return await TcpTransport.open(host, port, on_message)
    if name == "tls":
        return await TlsTransport.open(host, port, on_message, server_context)
    return await UdpTransport.open(host, port, on_message)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, on_message: OnMessage) -> None:
        self._on_message = on_message

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._on_message(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: retransmissions or timers handle it.
        log.debug("udp error: %s", exc)


class UdpTransport(SipTransport):
    name = "udp"

    def __init__(self, transport: asyncio.DatagramTransport) -> None:
        self._transport = transport
        self.local_port = int(transport.get_extra_info("sockname")[1])

    @classmethod
    async def open(cls, host: str, port: int, on_message: OnMessage) -> UdpTransport:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(on_message), local_addr=(host, port)
        )
        return cls(transport)

    def send(self, data: bytes, addr: Addr) -> None:
        if not self._transport.is_closing():
            self._transport.sendto(data, addr)

    async def close(self) -> None:
        self._transport.close()


class _Connection:
    """One TCP connection, outbound or accepted, with bytes queued until it is up."""

    def __init__(self) -> None:
        self.writer: asyncio.StreamWriter | None = None
        self.pending: list[bytes] = []
        self.task: asyncio.Task[None] | None = None
        self.return_addr: Addr | None = None
        "Accepted: where its peer's requests said to reach it (their Via sent-by port)."


class TcpTransport(SipTransport):
    name = "tcp"
    default_port = 5060
    "The port of a Via sent-by that names none."

    def __init__(self, on_message: OnMessage) -> None:
        self._on_message = on_message
        self._server: asyncio.Server | None = None
        self._connections: dict[Addr, _Connection] = {}
        self._reroutes: dict[Addr, Addr] = {}
        "Closed connections peers opened: where messages for them go now."

    @classmethod
    async def open(cls, host: str, port: int, on_message: OnMessage) -> TcpTransport:
        self = cls(on_message)
        # A listener so the Contact port reaches us if the trunk opens its own connection.
        self._server = await asyncio.start_server(self._accepted, host, port)
        self.local_port = int(self._server.sockets[0].getsockname()[1])
        return self

    def send(self, data: bytes, addr: Addr) -> None:
        connection = self._connections.get(addr)
        if connection is None and addr in self._reroutes:
            addr = self._reroutes[addr]  # the peer's connection is gone: its Via sent-by
            connection = self._connections.get(addr)
        if connection is None:
            connection = _Connection()
            self._connections[addr] = connection
            connection.task = asyncio.create_task(self._run(addr, connection, None, None))
        if connection.writer is None:
            connection.pending.append(data)
        else:
            connection.writer.write(data)

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        addr = (str(peer[0]), int(peer[1]))
        connection = _Connection()
        self._connections[addr] = connection
        self._reroutes.pop(addr, None)
        await self._run(addr, connection, reader, writer, accepted=True)

    async def _run(
        self,
        addr: Addr,
        connection: _Connection,
        reader: asyncio.StreamReader | None,
        writer: asyncio.StreamWriter | None,
        *,
        accepted: bool = False,
    ) -> None:
        try:
            if reader is None or writer is None:
                streams = await self._connect(addr, connection)
                if streams is None:
                    return
                reader, writer = streams
            connection.writer = writer
            for data in connection.pending:
                writer.write(data)
            connection.pending.clear()
            framer = StreamFramer()
            while not framer.broken and (data := await reader.read(65536)):
                for event in framer.receive(data):
                    if isinstance(event, MessageFramed):
                        if accepted and connection.return_addr is None:
                            connection.return_addr = via_return_addr(
                                event.data, addr, self.default_port
                            )
                        self._on_message(event.data, addr)
                    elif isinstance(event, PingReceived):
                        writer.write(PONG)  # RFC 5626 keep-alive
                    elif isinstance(event, StreamBroken):
                        log.warning(
                            "closing %s connection to %s: %s", self.name, _where(addr), event.reason
                        )
        except OSError as exc:
            log.warning("tcp connection to %s:%d failed: %s", addr[0], addr[1], exc)
        except Exception:
            # A bug must not end the connection silently; the next send reconnects.
            log.exception("tcp connection to %s:%d: unexpected error", addr[0], addr[1])
        finally:
            # Forget the connection first, so a send from here on opens a new one.
            if self._connections.get(addr) is connection:
                del self._connections[addr]
            if connection.return_addr not in (None, addr):
                self._remember_return(addr, connection.return_addr)
            connection.pending.clear()
            if writer is not None:
                writer.close()

    def _remember_return(self, addr: Addr, return_addr: Addr | None) -> None:
        if return_addr is None:
            return
        if len(self._reroutes) >= MAX_REROUTES:
            del self._reroutes[next(iter(self._reroutes))]  # the oldest
        self._reroutes[addr] = return_addr

    async def _open_connection(
        self, addr: Addr
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(addr[0], addr[1])

    def _failure(self, exc: OSError) -> str:
        """A readable reason for a connection that could not be opened."""
        if isinstance(exc, TimeoutError):
            return f"no connection in {CONNECT_TIMEOUT:g} s"
        return exc.strerror or str(exc) or type(exc).__name__

    async def _connect(
        self, addr: Addr, connection: _Connection
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """Open an outbound connection; None, its queued messages dropped, if it fails."""
        try:
            return await asyncio.wait_for(self._open_connection(addr), CONNECT_TIMEOUT)
        except OSError as exc:  # TimeoutError and ssl.SSLError included
            reason = f"{self.name} connection to {_where(addr)} failed: {self._failure(exc)}"
            log.warning("%s: dropping %d message(s)", reason, len(connection.pending))
            connection.pending.clear()
            if self.on_error is not None:
                # The calls waiting on it end now (or try their next target).
                self.on_error(addr, reason)
            return None

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        connections = list(self._connections.values())
        self._connections.clear()
        for connection in connections:
            if connection.writer is not None:
                connection.writer.close()
            if connection.task is not None:
                connection.task.cancel()
        for connection in connections:
            if connection.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await connection.task


class TlsTransport(TcpTransport):
    """SIP over TLS (RFC 3261 26.2, RFC 5922): outbound connections, reused, and inbound ones
    when the agent has a certificate (``SIP_TLS_CERT``/``SIP_TLS_KEY``).

    Without a certificate it accepts no TLS connection: the trunk's requests
    come back over the connection the bridge opened (kept for the whole
    call), and ``local_port`` is a bound, unlistened port that only fills Via
    and Contact. With one it listens there, so trunks call in over TLS.
    """

    name = "tls"
    default_port = 5061

    def __init__(self, on_message: OnMessage) -> None:
        super().__init__(on_message)
        self._peers: dict[Addr, tuple[str, ssl.SSLContext]] = {}
        self._reserved: socket.socket | None = None
        self.default_context: ssl.SSLContext | None = None
        "For an address nobody announced (a recovered dialog's BYE): checked against its IP."

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        on_message: OnMessage,
        server_context: ssl.SSLContext | None = None,
    ) -> TlsTransport:
        self = cls(on_message)
        if server_context is not None:
            self._server = await asyncio.start_server(
                self._accepted,
                host,
                port,
                ssl=server_context,
                ssl_handshake_timeout=CONNECT_TIMEOUT,
            )
            self.local_port = int(self._server.sockets[0].getsockname()[1])
            return self
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        reserved = socket.socket(family, socket.SOCK_STREAM)
        try:
            reserved.bind((host, port))
        except OSError:
            reserved.close()
            raise
        self._reserved = reserved
        self.local_port = int(reserved.getsockname()[1])
        return self

    def expect(self, addr: Addr, server_name: str, context: ssl.SSLContext) -> None:
        """Connections to ``addr`` check ``server_name`` against ``context``'s CAs."""
        self._peers[addr] = (server_name, context)

    async def _open_connection(
        self, addr: Addr
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        context = self.default_context or client_context()
        server_name, context = self._peers.get(addr) or (addr[0], context)
        return await asyncio.open_connection(
            addr[0],
            addr[1],
            ssl=context,
            server_hostname=server_name,
            ssl_handshake_timeout=CONNECT_TIMEOUT,
        )

    def _failure(self, exc: OSError) -> str:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return f"certificate refused: {exc.verify_message or exc.reason}"
        if isinstance(exc, ssl.SSLError):
            return f"TLS handshake failed: {exc.reason or exc}"
        return super()._failure(exc)

    async def close(self) -> None:
        await super().close()
        if self._reserved is not None:
            self._reserved.close()


def server_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """A TLS server context with the agent's certificate chain and key (PEM files)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    return context


def client_context(cafile: str = "", verify: bool = True) -> ssl.SSLContext:
    """A TLS client context: the system CAs or ``cafile``; nothing checked if not ``verify``."""
    context = ssl.create_default_context(cafile=cafile or None)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _where(addr: Addr) -> str:
    return f"{host_literal(addr[0])}:{addr[1]}"
