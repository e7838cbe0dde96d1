"""The demo peer's asyncio adapter: SIP over UDP and TCP on one port, one echo socket per call."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import cast

from services.common.sip.framing import (
    PONG,
    MessageFramed,
    PingReceived,
    StreamBroken,
    StreamFramer,
)
from services.demo.echo import EchoPorts
from services.demo.events import Addr, CallAnswered, CallEnded
from services.demo.uas import DEFAULT_MAX_DURATION, DEFAULT_RING_DELAY, DemoUas

logger = logging.getLogger(__name__)

_WILDCARDS = ("", "0.0.0.0", "::")


class _SipDriver:
    """Moves bytes between one ``DemoUas`` and its transport and keeps its one timer armed."""

    def __init__(self, uas: DemoUas, send: Callable[[bytes, Addr], None]) -> None:
        self.uas = uas
        self._send = send
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None

    def receive(self, data: bytes, addr: Addr) -> None:
        self.uas.receive(data, addr, self._loop.time())
        self._flush()

    def shutdown(self) -> None:
        self.uas.shutdown(self._loop.time())
        self._flush()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        self.uas.handle_timer(self._loop.time())
        self._flush()

    def _flush(self) -> None:
        for data, addr in self.uas.datagrams_to_send():
            self._send(data, addr)
        while (event := self.uas.next_event()) is not None:
            if isinstance(event, CallAnswered):
                logger.info("demo call %s answered with %s", event.call_id, event.codec)
            elif isinstance(event, CallEnded):
                logger.info("demo call %s ended (%s)", event.call_id, event.reason)
        when = self.uas.get_timer()
        if self._timer is not None and (when is None or self._timer.when() != when):
            self._timer.cancel()
            self._timer = None
        if when is not None and self._timer is None:
            self._timer = self._loop.call_at(when, self._on_timer)


class _SipDatagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.driver: _SipDriver | None = None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.driver is not None:
            self.driver.receive(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        logger.debug("SIP UDP error: %s", exc)


class _SipStreams:
    """The TCP connections of the peer, by remote address, so responses find their way back."""

    def __init__(self) -> None:
        self.driver: _SipDriver | None = None
        self.connections: dict[Addr, asyncio.Transport] = {}

    def send(self, data: bytes, addr: Addr) -> None:
        transport = self.connections.get(addr)
        if transport is None:
            logger.debug("no TCP connection to %s any more", addr)
        else:
            transport.write(data)

    def close_all(self) -> None:
        for transport in list(self.connections.values()):
            transport.close()


class _SipStream(asyncio.Protocol):
    def __init__(self, streams: _SipStreams) -> None:
        self._streams = streams
        self._framer = StreamFramer()
        self._transport: asyncio.Transport | None = None
        self._peer: Addr = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self._peer = (peer[0], peer[1])
        self._streams.connections[self._peer] = self._transport

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        driver = self._streams.driver
        for event in self._framer.receive(data):
            if isinstance(event, MessageFramed):
                if driver is not None:
                    driver.receive(event.data, self._peer)
            elif isinstance(event, PingReceived):
                self._transport.write(PONG)  # RFC 5626 keep-alive
            elif isinstance(event, StreamBroken):
                logger.info("closing SIP TCP connection from %s: %s", self._peer, event.reason)
                self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._streams.connections.get(self._peer) is self._transport:
            del self._streams.connections[self._peer]


def _advertised_host(host: str) -> str:
    # A wildcard cannot go in SDP or Contact; the demo peer runs beside the bridge.
    if host in _WILDCARDS:
        return "::1" if host == "::" else "127.0.0.1"
    return host


async def serve(
    host: str,
    port: int,
    stop: asyncio.Event,
    *,
    ring_delay: float = DEFAULT_RING_DELAY,
    max_duration: float = DEFAULT_MAX_DURATION,
    echo_delay: float = 0.0,
) -> None:
    """Answer SIP calls on UDP and TCP at host:port with an RTP echo, until ``stop`` is set.

    ``port`` 0 picks a free port (logged). Calls still up at the stop get a BYE.
    """
    loop = asyncio.get_running_loop()
    advertised = _advertised_host(host)
    rtp_ports = EchoPorts(host, echo_delay)

    udp_protocol = _SipDatagrams()
    udp, _ = await loop.create_datagram_endpoint(lambda: udp_protocol, local_addr=(host, port))
    port = udp.get_extra_info("sockname")[1]

    def make_uas(transport: str) -> DemoUas:
        return DemoUas(
            local_addr=(advertised, port),
            rtp_host=advertised,
            rtp_ports=rtp_ports,
            transport=transport,
            ring_delay=ring_delay,
            max_duration=max_duration,
        )

    udp_protocol.driver = _SipDriver(make_uas("UDP"), udp.sendto)
    streams = _SipStreams()
    server: asyncio.Server | None = None
    try:
        server = await loop.create_server(lambda: _SipStream(streams), host, port)
    except OSError as exc:
        # UDP is what the bridge uses; TCP is a convenience.
        logger.warning("demo SIP peer: no TCP on %s:%d: %s", host, port, exc)
    else:
        streams.driver = _SipDriver(make_uas("TCP"), streams.send)
    logger.info(
        "demo SIP peer listening on %s:%d (%s)", host, port, "UDP, TCP" if server else "UDP"
    )
    try:
        await stop.wait()
    finally:
        for driver in (udp_protocol.driver, streams.driver):
            if driver is not None:
                driver.shutdown()
        rtp_ports.close_all()
        udp.close()
        if server is not None:
            server.close()
            streams.close_all()
            await server.wait_closed()
        logger.info("demo SIP peer stopped")
