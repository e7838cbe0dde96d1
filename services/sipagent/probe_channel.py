"""The probe's connection to a trunk: one UDP socket, or one TCP or TLS connection.

Bytes go out with ``send``; whole SIP messages come back on ``incoming``
(``b''`` once a connection is closed by the far end). For TLS,
``certificate_summary`` describes the certificate the trunk presented.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ssl

from cryptography import x509

from services.common.sip.framing import MessageFramed, StreamFramer

Addr = tuple[str, int]


class Channel:
    """Bytes to the trunk and SIP messages back (one UDP socket or one TCP connection)."""

    name = "udp"
    reliable = False
    local_port = 0

    def __init__(self) -> None:
        self.incoming: asyncio.Queue[bytes] = asyncio.Queue()
        "Received messages; ``b''`` once a connection is closed by the far end."

    def send(self, data: bytes) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, queue: asyncio.Queue[bytes]) -> None:
        self._queue = queue

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        pass  # retransmissions and the timeout handle a lost datagram


class UdpChannel(Channel):
    def __init__(self, address: Addr) -> None:
        super().__init__()
        self._address = address
        self._transport: asyncio.DatagramTransport | None = None

    async def open(self, bind_host: str) -> None:
        loop = asyncio.get_running_loop()
        wildcard = "::" if ":" in self._address[0] else "0.0.0.0"
        if not bind_host or (":" in bind_host) != (":" in self._address[0]):
            bind_host = wildcard
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self.incoming), local_addr=(bind_host, 0)
        )
        self._transport = transport
        self.local_port = int(transport.get_extra_info("sockname")[1])

    def send(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(data, self._address)

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class TcpChannel(Channel):
    name = "tcp"
    reliable = True

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str = "tcp"
    ) -> None:
        super().__init__()
        self.name = name
        "``tcp``, or ``tls`` over an SSL stream."
        self._writer = writer
        self.ssl_object: ssl.SSLObject | None = writer.get_extra_info("ssl_object")
        self.local_port = int(writer.get_extra_info("sockname")[1])
        self._task = asyncio.create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        framer = StreamFramer()
        try:
            while not framer.broken and (data := await reader.read(65536)):
                for event in framer.receive(data):
                    if isinstance(event, MessageFramed):
                        self.incoming.put_nowait(event.data)
        except OSError:
            pass
        self.incoming.put_nowait(b"")

    def send(self, data: bytes) -> None:
        if not self._writer.is_closing():
            self._writer.write(data)

    async def close(self) -> None:
        self._task.cancel()
        self._writer.close()
        with contextlib.suppress(OSError, asyncio.CancelledError):
            await self._writer.wait_closed()


def certificate_summary(channel: TcpChannel) -> str:
    """``subject CN=…, expires 2027-01-31 (issuer CN=…)`` of the trunk's certificate."""
    ssl_object = channel.ssl_object
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        return "no certificate"
    cert = x509.load_der_x509_certificate(der)
    expires = cert.not_valid_after_utc
    left = expires - datetime.datetime.now(datetime.UTC)
    when = f"expires {expires:%Y-%m-%d}"
    if left.total_seconds() < 0:
        when = f"EXPIRED {expires:%Y-%m-%d}"
    elif left.days < 14:
        when += f" (in {left.days} days)"
    subject = cert.subject.rfc4514_string() or "(empty subject)"
    return f"subject {subject}, {when}, issuer {cert.issuer.rfc4514_string()}"


def tls_failure(exc: ssl.SSLError) -> str:
    """A readable reason for a refused TLS handshake."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate refused: {exc.verify_message or exc.reason}"
    return f"TLS handshake failed: {exc.reason or exc}"
