"""TCP connection handling, with ``asyncio.open_connection`` replaced (no sockets)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from services.sipagent import transport as transport_module
from services.sipagent.transport import Addr, TcpTransport

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
