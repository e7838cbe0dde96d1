"""Peers for integration tests: the demo SIP peer as a process, a trunk's RTP socket."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.media.rtp import RtpPacket
from tests.integration.harness import Process, free_udp_port, service_env, start_service


@pytest.fixture
def demo_peer(tmp_path: Path) -> Iterator[int]:
    """The built-in echo peer (``python -m services.demo``); yields its SIP port."""
    port = free_udp_port()
    env = service_env("nats://unused", DEMO_SIP_HOST="127.0.0.1", DEMO_SIP_PORT=str(port))
    process: Process = start_service("demo", env, tmp_path)
    deadline = time.monotonic() + 15
    while "demo SIP peer listening" not in process.log():
        if not process.alive() or time.monotonic() > deadline:
            process.stop()
            pytest.fail(f"the demo peer did not start:\n{process.log()}")
        time.sleep(0.05)
    yield port
    process.stop()


class RtpPeer:
    """The trunk's RTP end: a real UDP socket on loopback that records what the bridge sends."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]
        self.bridge: tuple[str, int] | None = None
        "Where the bridge's RTP comes from (its trunk-side port), once a packet arrived."

    async def receive(self, timeout: float = 10.0) -> RtpPacket:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            data, addr = await loop.sock_recvfrom(self.sock, 2048)
        self.bridge = (addr[0], addr[1])
        return RtpPacket.parse(data)

    def send(self, packet: RtpPacket) -> None:
        assert self.bridge is not None, "no RTP from the bridge yet"
        self.sock.sendto(bytes(packet), self.bridge)

    def close(self) -> None:
        self.sock.close()
