"""Plain RTP load on loopback: timestamped PCMU streams, an echo, their statistics.

Each call is a pair of UDP sockets on 127.0.0.1: the *caller* (A) sends one
20 ms PCMU packet a tick toward a target (a relay's port, or B itself for the
direct baseline), the *echo* (B) records when it arrived and sends it back to
where it came from, stamped with its own send time; A records the return.
One tick drives every call, so N calls send N packets each 20 ms in a burst,
as a media server's packetisation timer would.

The payload carries the send times (``time.monotonic_ns``, one clock for both
ends since both live in this process), so each direction's one-way delay is
measured: arrival minus send. A relay's *added* delay is that minus the same
measurement with the relay taken out (``target`` = B).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

PTIME = 0.020
SAMPLES = 160
"PCMU samples (bytes) in 20 ms at 8 kHz."
PCMU = 0
HEADER = struct.Struct("!BBHII")
"Version 2, no padding/extension/CSRC; marker+payload type; sequence; timestamp; SSRC."
STAMP = struct.Struct("!QIIQ")
"In the payload: A's send time (ns), call index, packet index, B's echo time (ns)."
STAMP_AT = HEADER.size
ECHO_AT = STAMP_AT + 16
FILL = b"\xff" * (SAMPLES - STAMP.size)
"PCMU silence after the stamp."
_ECHO_TIME = struct.Struct("!Q")


def rtp_packet(seq: int, timestamp: int, ssrc: int, payload: bytes, pt: int = PCMU) -> bytes:
    return HEADER.pack(0x80, pt & 0x7F, seq & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc) + payload


def stamped_packet(call: int, index: int, ssrc: int, now_ns: int) -> bytes:
    """Packet ``index`` of ``call``: sequence and timestamp follow the index."""
    return rtp_packet(index, index * SAMPLES, ssrc, STAMP.pack(now_ns, call, index, 0) + FILL)


def read_stamp(packet: bytes) -> tuple[int, int, int, int]:
    """(A's send ns, call index, packet index, B's echo ns) of a stamped packet."""
    sent, call, index, echoed = STAMP.unpack_from(packet, STAMP_AT)
    return sent, call, index, echoed


def restamp(packet: bytes, echo_ns: int) -> bytes:
    """``packet`` with B's echo time written into its stamp."""
    return packet[:ECHO_AT] + _ECHO_TIME.pack(echo_ns) + packet[ECHO_AT + 8 :]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of ``values`` (0 for none)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))])


@dataclass
class Stats:
    sent: int = 0
    "Packets A sent."
    forwarded: int = 0
    "Packets B received."
    echoed: int = 0
    "Packets B sent back."
    returned: int = 0
    "Packets A received."
    foreign: int = 0
    "Datagrams that were not our stamped packets."
    late_ticks: int = 0
    "Ticks that began more than one packet time late (the sender could not keep up)."
    recording: bool = False
    per_call: list[int] = field(default_factory=list)
    "Packets B received, by call index."
    forward_ns: list[int] = field(default_factory=list)
    back_ns: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        def ms(values: list[int], q: float) -> float:
            return percentile(values, q) / 1e6

        return {
            "sent": self.sent,
            "forward_loss_pct": 100.0 * (1 - self.forwarded / self.sent) if self.sent else 0.0,
            "back_loss_pct": 100.0 * (1 - self.returned / self.echoed) if self.echoed else 0.0,
            "forward_p50_ms": ms(self.forward_ns, 0.5),
            "forward_p99_ms": ms(self.forward_ns, 0.99),
            "back_p50_ms": ms(self.back_ns, 0.5),
            "back_p99_ms": ms(self.back_ns, 0.99),
            "silent_calls": sum(1 for count in self.per_call if count == 0),
            "late_ticks": self.late_ticks,
            "foreign": self.foreign,
        }


class _Caller(asyncio.DatagramProtocol):
    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        now = time.monotonic_ns()
        stats = self.stats
        if len(data) != HEADER.size + SAMPLES:
            stats.foreign += 1
            return
        stats.returned += 1
        if stats.recording:
            stats.back_ns.append(now - _ECHO_TIME.unpack_from(data, ECHO_AT)[0])


class EchoProtocol(asyncio.DatagramProtocol):
    """Sends every datagram back to where it came from.

    With ``stats`` it takes the packets for stamped ones: it records their
    one-way delay and writes its own send time into them. Without, it echoes
    any RTP as is (the far end of a WebRTC call, whose audio must stay intact).
    """

    def __init__(self, stats: Stats | None = None) -> None:
        self.stats = stats
        self.transport: asyncio.DatagramTransport | None = None
        self.received = 0
        self.source: tuple[str, int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.received += 1
        self.source = addr
        stats = self.stats
        if stats is None:
            self.transport.sendto(data, addr)
            return
        now = time.monotonic_ns()
        if len(data) != HEADER.size + SAMPLES:
            stats.foreign += 1
            return
        stats.forwarded += 1
        sent_ns, call, _, _ = STAMP.unpack_from(data, STAMP_AT)
        if call < len(stats.per_call):
            stats.per_call[call] += 1
        if stats.recording:
            stats.forward_ns.append(now - sent_ns)
        stats.echoed += 1
        self.transport.sendto(restamp(data, time.monotonic_ns()), addr)


@dataclass
class StreamPair:
    """One call's two ends: the caller A and the echo B, each a loopback UDP socket."""

    index: int
    caller: asyncio.DatagramTransport
    echo: asyncio.DatagramTransport
    ssrc: int
    target: tuple[str, int] | None = None
    "Where A sends (a relay's A-side port); ``echo_address`` for the direct baseline."

    @property
    def caller_port(self) -> int:
        return int(self.caller.get_extra_info("sockname")[1])

    @property
    def echo_port(self) -> int:
        return int(self.echo.get_extra_info("sockname")[1])

    @property
    def echo_address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.echo_port)


async def open_echo(stats: Stats | None = None, host: str = "127.0.0.1") -> EchoProtocol:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_datagram_endpoint(
        lambda: EchoProtocol(stats), local_addr=(host, 0)
    )
    return protocol


class RtpLoad:
    """``calls`` stream pairs driven by one 20 ms tick."""

    def __init__(self) -> None:
        self.stats = Stats()
        self.pairs: list[StreamPair] = []

    async def open(self, calls: int) -> RtpLoad:
        loop = asyncio.get_running_loop()
        self.stats.per_call = [0] * calls
        for index in range(calls):
            caller, _ = await loop.create_datagram_endpoint(
                lambda: _Caller(self.stats), local_addr=("127.0.0.1", 0)
            )
            echo, _ = await loop.create_datagram_endpoint(
                lambda: EchoProtocol(self.stats), local_addr=("127.0.0.1", 0)
            )
            _grow_buffers(caller)
            _grow_buffers(echo)
            self.pairs.append(StreamPair(index, caller, echo, ssrc=0x10000 + index))
        return self

    async def run(self, seconds: float, warmup: float = 1.0, drain: float = 0.3) -> None:
        """Send for ``warmup`` + ``seconds``; delays are recorded after the warm-up only.

        Counters (and so loss) cover the whole run; the last ``drain`` seconds
        only listen, for packets still on their way.
        """
        if any(pair.target is None for pair in self.pairs):
            raise RuntimeError("every pair needs a target before run()")
        stats = self.stats
        ticks = max(1, round((warmup + seconds) / PTIME))
        warm_ticks = round(warmup / PTIME)
        start = time.monotonic()
        for tick in range(ticks):
            due = start + tick * PTIME
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif -delay > PTIME:
                stats.late_ticks += 1
            if tick == warm_ticks:
                stats.recording = True
            for pair in self.pairs:
                pair.caller.sendto(
                    stamped_packet(pair.index, tick, pair.ssrc, time.monotonic_ns()), pair.target
                )
            stats.sent += len(self.pairs)
        await asyncio.sleep(drain)
        stats.recording = False

    def close(self) -> None:
        for pair in self.pairs:
            pair.caller.close()
            pair.echo.close()


def _grow_buffers(transport: asyncio.BaseTransport, size: int = 1 << 20) -> None:
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, size)


def plain_sdp(port: int, host: str = "127.0.0.1", session: int = 1) -> str:
    """An RTP/AVP PCMU (and telephone-event) offer or answer for ``host:port``."""
    return "\r\n".join(
        [
            "v=0",
            f"o=bench {session} 1 IN IP4 {host}",
            "s=bench",
            f"c=IN IP4 {host}",
            "t=0 0",
            f"m=audio {port} RTP/AVP 0 101",
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-16",
            "a=ptime:20",
            "a=sendrecv",
            "",
        ]
    )


def audio_address(sdp: str) -> tuple[str, int]:
    """(connection address, port) of the first audio section of ``sdp``."""
    session_host: str | None = None
    media_host: str | None = None
    port: int | None = None
    in_audio = False
    for line in sdp.splitlines():
        line = line.strip()
        if line.startswith("m="):
            if in_audio:
                break
            fields = line[2:].split()
            in_audio = fields[0] == "audio"
            if in_audio:
                port = int(fields[1])
        elif line.startswith("c="):
            address = line.split()[-1].split("/")[0]
            if port is None and not in_audio:
                session_host = address
            elif in_audio:
                media_host = address
    host = media_host or session_host
    if host is None or port is None:
        raise ValueError(f"no audio address in SDP:\n{sdp}")
    return host, port


def describe(summary: dict[str, Any]) -> str:
    return (
        f"loss → {summary['forward_loss_pct']:.2f} % ← {summary['back_loss_pct']:.2f} %,"
        f" one-way → p50 {summary['forward_p50_ms']:.3f} ms p99 {summary['forward_p99_ms']:.3f} ms,"
        f" ← p50 {summary['back_p50_ms']:.3f} ms p99 {summary['back_p99_ms']:.3f} ms"
    )
