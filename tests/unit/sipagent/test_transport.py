"""TCP connection handling, with ``asyncio.open_connection`` replaced (no sockets)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from services.sipagent import transport as transport_module
from services.sipagent.transport import Addr, TcpTransport, via_return_addr

TRUNK = ("198.51.100.7", 5060)
OPTIONS = (
    b"OPTIONS sip:bridge@192.0.2.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 198.51.100.7;branch=z9hG4bK1\r\n"
    b"From: <sip:trunk@x>;tag=a\r\nTo: <sip:bridge@y>\r\n"
    b"Call-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)


class FakeWriter:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True


class PeerWriter(FakeWriter):
    """The writer of a connection a peer opened from ``peer``."""

    def __init__(self, peer: Addr) -> None:
        super().__init__()
        self.peer = peer

    def get_extra_info(self, name: str) -> Any:
        return self.peer if name == "peername" else None


async def until(predicate: Any) -> None:
    async with asyncio.timeout(5.0):
        while not predicate():
            await asyncio.sleep(0.001)


async def test_tcp_connect_timeout_drops_queued_messages_and_reconnects(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    attempts: list[Addr] = []

    async def never(host: str, port: int) -> Any:
        attempts.append((host, port))
        await asyncio.sleep(3600)

    monkeypatch.setattr(asyncio, "open_connection", never)
    monkeypatch.setattr(transport_module, "CONNECT_TIMEOUT", 0.01)
    tcp = TcpTransport(lambda data, addr: None)
    tcp.send(b"INVITE", TRUNK)
    tcp.send(b"INVITE again", TRUNK)
    await until(lambda: "dropping 2 message(s)" in caplog.text)
    assert "no connection in 0.01 s" in caplog.text
    # The failed connection is forgotten: the next send tries again.
    tcp.send(b"BYE", TRUNK)
    await until(lambda: len(attempts) == 2)
    await tcp.close()


async def test_tcp_reader_bug_is_logged_and_next_send_reconnects(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    writers: list[FakeWriter] = []
    readers: list[asyncio.StreamReader] = []

    async def connect(host: str, port: int) -> tuple[asyncio.StreamReader, FakeWriter]:
        readers.append(asyncio.StreamReader())
        writers.append(FakeWriter())
        return readers[-1], writers[-1]

    def on_message(data: bytes, addr: Addr) -> None:
        raise RuntimeError("bug in the agent")

    monkeypatch.setattr(asyncio, "open_connection", connect)
    tcp = TcpTransport(on_message)
    tcp.send(b"INVITE", TRUNK)
    await until(lambda: bool(writers) and writers[0].written == [b"INVITE"])
    readers[0].feed_data(OPTIONS)
    await until(lambda: writers[0].closed)
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and r.exc_info]
    assert logged == ["tcp connection to 198.51.100.7:5060: unexpected error"]
    tcp.send(b"BYE", TRUNK)
    await until(lambda: len(writers) == 2 and writers[1].written == [b"BYE"])
    await tcp.close()


def test_the_return_address_is_the_source_ip_and_the_top_via_port() -> None:
    invite = OPTIONS.replace(b"198.51.100.7;branch", b"trunk.example:5080;branch")
    invite = invite.replace(b"Via:", b"Via: SIP/2.0/TCP 10.0.0.9:7000;branch=z9hG4bK0\r\nVia:", 0)
    assert via_return_addr(invite, ("203.0.113.5", 40123), 5060) == ("203.0.113.5", 5080)
    # No port in the sent-by: the transport's default.
    assert via_return_addr(OPTIONS, ("203.0.113.5", 40123), 5061) == ("203.0.113.5", 5061)
    compact = OPTIONS.replace(b"Via: SIP/2.0/TCP 198.51.100.7", b"v:SIP/2.0/TLS [2001:db8::1]:5071")
    assert via_return_addr(compact, ("2001:db8::1", 40123), 5061) == ("2001:db8::1", 5071)
    response = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK1\r\n\r\n"
    assert via_return_addr(response, ("192.0.2.1", 5060), 5060) is None
    assert via_return_addr(b"OPTIONS sip:a SIP/2.0\r\n\r\n", ("192.0.2.1", 1), 5060) is None


async def test_once_the_peers_connection_closes_replies_go_to_its_via_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opened: list[Addr] = []
    writers: list[FakeWriter] = []

    async def connect(host: str, port: int) -> tuple[asyncio.StreamReader, FakeWriter]:
        opened.append((host, port))
        writers.append(FakeWriter())
        return asyncio.StreamReader(), writers[-1]

    accept: list[Any] = []

    class Socket:
        def getsockname(self) -> Addr:
            return ("0.0.0.0", 5060)

    class Server:
        def __init__(self) -> None:
            self.sockets = [Socket()]

        def close(self) -> None:
            pass

    async def start_server(callback: Any, host: str, port: int) -> Server:
        accept.append(callback)
        return Server()

    monkeypatch.setattr(asyncio, "open_connection", connect)
    monkeypatch.setattr(asyncio, "start_server", start_server)
    received: list[Addr] = []
    tcp = await TcpTransport.open("0.0.0.0", 5060, lambda data, addr: received.append(addr))
    peer = ("198.51.100.7", 40123)
    reader, accepted = asyncio.StreamReader(), PeerWriter(peer)
    serving = asyncio.create_task(accept[0](reader, accepted))
    reader.feed_data(OPTIONS)
    await until(lambda: received == [peer])
    tcp.send(b"SIP/2.0 200 OK", peer)
    assert accepted.written == [b"SIP/2.0 200 OK"]  # on the peer's own connection
    reader.feed_eof()
    await serving
    tcp.send(b"BYE", peer)
    await until(lambda: bool(writers) and writers[0].written == [b"BYE"])
    assert opened == [("198.51.100.7", 5060)]  # its Via names no port: 5060
    tcp.send(b"BYE again", peer)
    assert opened == [("198.51.100.7", 5060)] and writers[0].written[-1] == b"BYE again"
    await tcp.close()
