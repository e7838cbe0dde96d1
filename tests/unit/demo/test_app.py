"""The demo peer on real sockets: in-process over UDP and TCP, and as a process under sipp."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sipmessage import Message, Response

from services.demo.app import serve
from services.demo.echo import EchoPorts
from tests.integration.harness import require_tool

pytestmark = pytest.mark.timeout(30)

HOST = "127.0.0.1"
OFFER = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 30000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
)


def free_port() -> int:
    """A port free for both UDP and TCP, as the peer listens on both."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((HOST, 0))
            port: int = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((HOST, port))
                except OSError:
                    continue
                return port


def request(method: str, call_id: str, port: int, body: bytes = b"", to_tag: str = "") -> bytes:
    to = f"<sip:echo@{HOST}:{port}>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} sip:echo@{HOST}:{port} SIP/2.0",
        f"Via: SIP/2.0/UDP {HOST}:1;branch=z9hG4bK{method}{call_id}",
        "From: <sip:test@127.0.0.1>;tag=t1",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {2 if method == 'BYE' else 1} {method}",
        "Contact: <sip:test@127.0.0.1:1>",
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait(data)


async def udp_socket() -> tuple[asyncio.DatagramTransport, Inbox]:
    loop = asyncio.get_running_loop()
    inbox = Inbox()
    transport, _ = await loop.create_datagram_endpoint(lambda: inbox, local_addr=(HOST, 0))
    return transport, inbox


async def next_response(inbox: Inbox, code: int) -> Response:
    while True:
        message = Message.parse(await asyncio.wait_for(inbox.queue.get(), 5))
        if isinstance(message, Response) and message.code == code:
            return message


@contextlib.asynccontextmanager
async def running_peer() -> AsyncIterator[int]:
    port = free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(serve(HOST, port, stop, ring_delay=0.05))
    await asyncio.sleep(0.1)
    try:
        yield port
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_call_echoes_rtp_and_ends_with_bye() -> None:
    async with running_peer() as port:
        sip, inbox = await udp_socket()
        sip.sendto(request("INVITE", "c1", port, OFFER), (HOST, port))
        ok = await next_response(inbox, 200)
        rtp_port = int(
            next(x for x in ok.body.decode().splitlines() if x.startswith("m=")).split()[1]
        )
        tag = ok.to_address.parameters["tag"] or ""
        sip.sendto(request("ACK", "c1", port, to_tag=tag), (HOST, port))

        media, media_inbox = await udp_socket()
        packet = b"\x80\x00\x00\x01" + bytes(168)
        media.sendto(packet, (HOST, rtp_port))
        assert await asyncio.wait_for(media_inbox.queue.get(), 5) == packet

        sip.sendto(request("BYE", "c1", port, to_tag=tag), (HOST, port))
        await next_response(inbox, 200)
        sip.close()
        media.close()


async def test_options_over_tcp() -> None:
    async with running_peer() as port:
        reader, writer = await asyncio.open_connection(HOST, port)
        data = request("OPTIONS", "o1", port).replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP")
        writer.write(b"\r\n\r\n" + data[:20])  # a keep-alive ping, then the message in pieces
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"  # the pong
        writer.write(data[20:])
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"SIP/2.0 200 OK\r\n")
        writer.close()
        await writer.wait_closed()


async def test_process_answers_sipp_uac(tmp_path: Path) -> None:
    sipp_tool = require_tool("sipp")
    port = free_port()
    env = dict(os.environ, DEMO_SIP_HOST=HOST, DEMO_SIP_PORT=str(port))
    demo = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.demo", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert demo.stderr is not None
        line = await asyncio.wait_for(demo.stderr.readline(), 10)
        assert b"listening" in line
        sipp = await asyncio.create_subprocess_exec(
            *(sipp_tool, "-sn", "uac", "-m", "1", "-nostdin", "-timeout", "15s", "-timeout_error"),
            *("-i", HOST, "-p", str(free_port()), f"{HOST}:{port}"),
            cwd=tmp_path,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert await asyncio.wait_for(sipp.wait(), 20) == 0
    finally:
        if demo.returncode is None:
            demo.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(demo.stderr.read(), 10) if demo.stderr else b""
        code = await asyncio.wait_for(demo.wait(), 10)
    assert code == 0
    assert b"answered with PCMU" in rest and b"ended (remote BYE)" in rest


async def test_echo_ports_delay_and_early_close() -> None:
    ports = EchoPorts(HOST, delay=0.02)
    closed_early = ports.open("early")
    ports.close("early")  # before asyncio finished setting the endpoint up
    port = ports.open("call")
    assert port != closed_early and len(ports) == 1
    await asyncio.sleep(0)
    media, inbox = await udp_socket()
    media.sendto(b"rtp", (HOST, port))
    assert await asyncio.wait_for(inbox.queue.get(), 5) == b"rtp"
    ports.close_all()
    await asyncio.sleep(0.01)
    media.close()
