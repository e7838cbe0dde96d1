"""RTP (RFC 3550) for the trunk leg: a pure packet codec and a sans-I/O session.

``RtpSession`` never touches a socket or a clock: the adapter passes every
datagram with its source address and the current time, and sends whatever
bytes ``packet_for`` returns to ``remote``.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

RTP_VERSION = 2
HEADER_SIZE = 12
MAX_PAYLOAD = 1500 - HEADER_SIZE
STALE_GRACE = 2.0
"Seconds after a retarget during which the previous address cannot latch the stream again."
MAX_FORWARD_GAP = 3000
"A jump of more sequence numbers than this in a relayed stream is a new stream, not loss."
MAX_FORWARD_JUMP = 10.0
"Likewise a timestamp jump of more seconds than this."

_HEADER = struct.Struct("!BBHII")
_EXTENSION = struct.Struct("!HH")

Address = tuple[str, int]
EventSink = Callable[[int, bytes | memoryview], None]
"Takes the RTP timestamp and payload of one telephone-event packet."


class RtpError(ValueError):
    """A datagram is not a valid RTP packet."""


def parse_header(data: bytes | memoryview) -> tuple[int, int, int, int, int, int, int]:
    """``(first byte, second byte, sequence, timestamp, ssrc, payload start, payload end)``."""
    if len(data) < HEADER_SIZE:
        raise RtpError(f"packet too short ({len(data)} bytes)")
    first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
    if first >> 6 != RTP_VERSION:
        raise RtpError(f"unsupported RTP version {first >> 6}")
    start = HEADER_SIZE + 4 * (first & 0x0F)
    end = len(data)
    if first & 0x10:
        if start + 4 > end:
            raise RtpError("header extension past the end")
        _profile, words = _EXTENSION.unpack_from(data, start)
        start += 4 + 4 * words
    if start > end:
        raise RtpError("CSRC list or header extension past the end")
    if first & 0x20:
        padding = data[-1]
        if padding == 0 or start + padding > end:
            raise RtpError(f"invalid padding length {padding}")
        end -= padding
    return first, second, sequence, timestamp, ssrc, start, end


@dataclass(slots=True)
class RtpPacket:
    """One RTP packet; CSRCs and header extensions are kept only as far as parsing needs."""

    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: list[int] = field(default_factory=list)

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        first, second, sequence, timestamp, ssrc, start, end = parse_header(data)
        count = first & 0x0F
        csrc = list(struct.unpack_from(f"!{count}I", data, HEADER_SIZE)) if count else []
        return cls(
            payload_type=second & 0x7F,
            sequence_number=sequence,
            timestamp=timestamp,
            ssrc=ssrc,
            payload=data[start:end],
            marker=bool(second & 0x80),
            csrc=csrc,
        )

    def __bytes__(self) -> bytes:
        first = (RTP_VERSION << 6) | len(self.csrc)
        second = (0x80 if self.marker else 0) | self.payload_type
        header = _HEADER.pack(first, second, self.sequence_number, self.timestamp, self.ssrc)
        csrc = struct.pack(f"!{len(self.csrc)}I", *self.csrc) if self.csrc else b""
        return header + csrc + self.payload


@dataclass(slots=True)
class RtpStats:
    """Counters of one session, read for the end-of-call log line."""

    packets_in: int = 0
    bytes_in: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    lost: int = 0
    "Packets missing from the remote sequence (gaps; late arrivals are credited back)."
    dropped: int = 0
    "Datagrams refused: malformed, another payload type, or not from the latched peer."
    last_in: float | None = None
    last_out: float | None = None
    jitter: float = 0.0
    "Interarrival jitter of received packets (RFC 3550 section 6.4.1), in timestamp units."


class RtpSession:
    """One RTP stream pair with the trunk, sans I/O.

    The remote starts at the address of the trunk's SDP; the first valid packet
    latches it to where the trunk actually sends from (symmetric RTP, which
    gets through NATs in front of the trunk). Once latched, packets from any
    other address are dropped so that a stale or stray stream cannot mix in.
    """

    def __init__(
        self,
        remote: Address,
        payload_type: int,
        *,
        ssrc: int | None = None,
        sequence: int | None = None,
        timestamp: int | None = None,
        clock_rate: int = 8000,
    ) -> None:
        self.remote = remote
        self.payload_type = payload_type
        self.event_payload_type: int | None = None
        "The trunk's telephone-event payload type; its packets go to ``on_event``, not audio."
        self.on_event: EventSink | None = None
        self.latched = False
        self.stats = RtpStats()
        # Outgoing stream state: random starts (RFC 3550 section 5.1) unless given.
        self.ssrc = secrets.randbits(32) if ssrc is None else ssrc
        self._sequence = secrets.randbits(16) if sequence is None else sequence & 0xFFFF
        self._timestamp = secrets.randbits(32) if timestamp is None else timestamp & 0xFFFFFFFF
        self._first_out = True
        self._buffer = bytearray(HEADER_SIZE + MAX_PAYLOAD)
        self._view = memoryview(self._buffer)
        # Incoming stream state.
        self._remote_ssrc: int | None = None
        self._last_sequence = 0
        self._base_sequence = 0
        self._cycles = 0
        self._received = 0
        "Packets of the current remote SSRC (RTCP's expected/received, RFC 3550 A.3)."
        self._clock_rate = clock_rate
        self._transit: float | None = None
        self._stale: Address | None = None
        self._stale_until = 0.0
        self.in_ssrc = 0
        self.in_sequence = 0
        self.in_timestamp = 0
        self.in_marker = False
        "Header fields of the packet ``receive`` accepted last (read them to relay it)."
        # Relaying (``forward``): where the relayed source's numbering meets ours.
        self._fwd_ssrc: int | None = None
        self._fwd_seq_in = 0
        self._fwd_seq_out = 0
        self._fwd_ts_in = 0
        self._fwd_ts_out = 0
        self._fwd_highest = 0
        "Sequence offset from the resync point of the newest relayed packet."
        self._fwd_step = clock_rate // 50
        "Timestamp units one relayed packet covers (20 ms until packets say otherwise)."
        self._last_out_ts: int | None = None
        self._last_out_time = 0.0

    def reception(self) -> tuple[int, int, int, int] | None:
        """What we received of the remote source, for an RTCP report block:
        (its SSRC, extended highest sequence, packets expected, packets received)."""
        if self._remote_ssrc is None:
            return None
        highest = self._cycles + self._last_sequence
        return self._remote_ssrc, highest, highest - self._base_sequence + 1, self._received

    def timestamp_at(self, now: float) -> int:
        """Our stream's RTP timestamp for the instant ``now`` (an SR's sender info)."""
        if self._last_out_ts is None:
            return self._timestamp
        elapsed = round((now - self._last_out_time) * self._clock_rate)
        return (self._last_out_ts + elapsed) & 0xFFFFFFFF

    @property
    def clock_rate(self) -> int:
        """Timestamp units per second of both directions."""
        return self._clock_rate

    def retarget(self, remote: Address, payload_type: int, now: float) -> None:
        """Follow a new SDP answer (e.g. 200 OK after 183): new address, latch again.

        Early media still in flight from the previous address (an announcement
        server, say) must not win the new latch: for ``STALE_GRACE`` seconds its
        packets are dropped unless the new answer names that very address.
        """
        if remote != self.remote:
            self._stale, self._stale_until = self.remote, now + STALE_GRACE
        self.remote = remote
        self.payload_type = payload_type
        self.latched = False
        self._remote_ssrc = None

    def receive(
        self, data: bytes | memoryview, addr: Address, now: float
    ) -> bytes | memoryview | None:
        """The audio payload of a datagram from ``addr``, or None if it is dropped.

        The payload is a slice of ``data`` (a view when ``data`` is a memoryview);
        ``in_ssrc``, ``in_sequence``, ``in_timestamp`` and ``in_marker`` hold its header.
        """
        stats = self.stats
        if self.latched and addr != self.remote:
            stats.dropped += 1
            return None
        if not self.latched and addr == self._stale and now < self._stale_until:
            stats.dropped += 1
            return None
        try:
            _first, second, sequence, timestamp, ssrc, start, end = parse_header(data)
        except RtpError:
            stats.dropped += 1
            return None
        if second & 0x7F != self.payload_type:
            if second & 0x7F == self.event_payload_type and self.on_event is not None:
                self._receive_event(data, addr, now, ssrc, sequence, timestamp, start, end)
                return None
            # Comfort noise, an unknown payload type or RTCP muxed by mistake.
            stats.dropped += 1
            return None
        if not self.latched:
            self.remote = addr
            self.latched = True
        stats.packets_in += 1
        stats.bytes_in += len(data)
        stats.last_in = now
        self._count_loss(ssrc, sequence)
        self._count_jitter(timestamp, now)
        self.in_ssrc = ssrc
        self.in_sequence = sequence
        self.in_timestamp = timestamp
        self.in_marker = bool(second & 0x80)
        return data[start:end]

    def _receive_event(
        self,
        data: bytes | memoryview,
        addr: Address,
        now: float,
        ssrc: int,
        sequence: int,
        timestamp: int,
        start: int,
        end: int,
    ) -> None:
        # Events share the voice sequence space: count them or voice after
        # them would look lost. Their timestamp stands still, so no jitter.
        if not self.latched:
            self.remote = addr
            self.latched = True
        stats = self.stats
        stats.packets_in += 1
        stats.bytes_in += len(data)
        stats.last_in = now
        self._count_loss(ssrc, sequence)
        assert self.on_event is not None
        self.on_event(timestamp, data[start:end])

    def _count_jitter(self, timestamp: int, now: float) -> None:
        transit = now * self._clock_rate - timestamp
        if self._transit is not None:
            # Signed difference modulo 2^32: a timestamp wrap is not jitter.
            step = (transit - self._transit + 0x80000000) % 0x100000000 - 0x80000000
            self.stats.jitter += (abs(step) - self.stats.jitter) / 16
        self._transit = transit

    def _count_loss(self, ssrc: int, sequence: int) -> None:
        self._received += 1
        if ssrc != self._remote_ssrc:
            # A new source restarts its sequence: no gap to count.
            self._remote_ssrc = ssrc
            self._last_sequence = self._base_sequence = sequence
            self._cycles = 0
            self._received = 1
            self._transit = None
            return
        delta = (sequence - self._last_sequence) & 0xFFFF
        if delta == 0:
            return
        if delta < 0x8000:
            self.stats.lost += delta - 1
            if sequence < self._last_sequence:
                self._cycles += 0x10000
            self._last_sequence = sequence
        elif self.stats.lost > 0:
            # A late packet filled a gap counted earlier.
            self.stats.lost -= 1

    @property
    def next_timestamp(self) -> int:
        """The timestamp the next voice packet will carry."""
        return self._timestamp

    def advance(self, samples: int) -> None:
        """Move the media clock on by ``samples`` without sending (an event or a pause)."""
        self._timestamp = (self._timestamp + samples) & 0xFFFFFFFF

    def new_talkspurt(self) -> None:
        """Mark the next voice packet as the start of a talkspurt (after hold, say)."""
        self._first_out = True
        self._fwd_ssrc = None

    def forward(
        self,
        payload: bytes | memoryview,
        ssrc: int,
        sequence: int,
        timestamp: int,
        marker: bool,
        now: float,
        scale: tuple[int, int] = (1, 1),
    ) -> memoryview | None:
        """The next outgoing packet relaying ``payload`` of another stream, or None to drop it.

        Sequence numbers and timestamps follow the relayed stream's, offset so
        that ours stay continuous whatever happens upstream: a new source (a
        re-INVITE, a transfer, the switch from early to final media), our own
        packets in between (DTMF events, hold), or a jump too large to be loss
        start a new mapping from where our stream stands. Gaps and reordering
        inside a mapping pass through, so the far end's loss and jitter
        figures stay true. ``scale`` converts the relayed clock into ours
        (``(1, 6)``: 8 kHz in, 48 kHz out).
        """
        num, den = scale
        if ssrc != self._fwd_ssrc:
            self._resync(ssrc, sequence, timestamp, now)
            marker = True
        d_seq = (sequence - self._fwd_seq_in) & 0xFFFF
        if d_seq >= 0x8000:
            d_seq -= 0x10000
        d_ts = (timestamp - self._fwd_ts_in) & 0xFFFFFFFF
        if d_ts >= 0x80000000:
            d_ts -= 0x100000000
        if d_seq < 0:
            return None  # older than the mapping: a straggler from before it
        if (
            d_seq - self._fwd_highest > MAX_FORWARD_GAP
            or abs(d_ts) * den > MAX_FORWARD_JUMP * self._clock_rate * num
        ):
            self._resync(ssrc, sequence, timestamp, now)
            d_seq = d_ts = 0
            marker = True
        size = HEADER_SIZE + len(payload)
        if size > len(self._buffer):
            return None
        out_seq = (self._fwd_seq_out + d_seq) & 0xFFFF
        out_ts = (self._fwd_ts_out + d_ts * den // num) & 0xFFFFFFFF
        second = self.payload_type | (0x80 if marker or self._first_out else 0)
        self._first_out = False
        _HEADER.pack_into(self._buffer, 0, 0x80, second, out_seq, out_ts, self.ssrc)
        self._buffer[HEADER_SIZE:size] = payload
        if d_seq > self._fwd_highest or self._last_out_ts is None:
            if d_seq == self._fwd_highest + 1 and self._last_out_ts is not None:
                step = (out_ts - self._last_out_ts) & 0xFFFFFFFF
                if 0 < step < self._clock_rate:
                    self._fwd_step = step
            self._fwd_highest = d_seq
            self._sequence = (out_seq + 1) & 0xFFFF
            self._timestamp = (out_ts + self._fwd_step) & 0xFFFFFFFF
            self._last_out_ts = out_ts
            self._last_out_time = now
        stats = self.stats
        stats.packets_out += 1
        stats.bytes_out += size
        stats.last_out = now
        return self._view[:size]

    def _resync(self, ssrc: int, sequence: int, timestamp: int, now: float) -> None:
        """Map ``sequence``/``timestamp`` of ``ssrc`` onto where our stream stands at ``now``.

        The media clock runs while nothing is sent (RFC 3550 5.1): after a hold
        or a pause the timestamp moves on by the time elapsed, never back.
        """
        self._fwd_ssrc = ssrc
        self._fwd_seq_in, self._fwd_ts_in = sequence, timestamp
        self._fwd_seq_out = self._sequence
        out_ts = self._timestamp
        if self._last_out_ts is not None:
            by_clock = (
                self._last_out_ts + round((now - self._last_out_time) * self._clock_rate)
            ) & 0xFFFFFFFF
            if 0 < (by_clock - out_ts) & 0xFFFFFFFF < 0x80000000:
                out_ts = by_clock
        self._fwd_ts_out = out_ts
        self._fwd_highest = 0
        # From here the mapping's first packet is the newest relayed one.
        self._last_out_ts = None

    def event_packet(
        self, payload_type: int, payload: bytes, timestamp: int, marker: bool, now: float
    ) -> memoryview:
        """The next outgoing packet with its own payload type and ``timestamp`` (an RFC 4733
        event): same SSRC and sequence space as voice; the media clock is left alone."""
        size = HEADER_SIZE + len(payload)
        second = payload_type | (0x80 if marker else 0)
        _HEADER.pack_into(self._buffer, 0, 0x80, second, self._sequence, timestamp, self.ssrc)
        self._buffer[HEADER_SIZE:size] = payload
        self._sequence = (self._sequence + 1) & 0xFFFF
        self._fwd_ssrc = None  # relaying resumes after our own packets
        stats = self.stats
        stats.packets_out += 1
        stats.bytes_out += size
        stats.last_out = now
        return self._view[:size]

    def packet_for(self, payload: bytes, timestamp_step: int, now: float) -> memoryview:
        """The next outgoing packet carrying ``payload``; then advance by ``timestamp_step``.

        The packet is a view of a buffer reused by the next call: send it at
        once (asyncio copies a datagram only when it has to queue it).
        """
        size = HEADER_SIZE + len(payload)
        if size > len(self._buffer):
            raise ValueError(f"payload of {len(payload)} bytes does not fit one packet")
        second = self.payload_type
        if self._first_out:
            second |= 0x80  # marker: start of a talkspurt
            self._first_out = False
        _HEADER.pack_into(self._buffer, 0, 0x80, second, self._sequence, self._timestamp, self.ssrc)
        self._buffer[HEADER_SIZE:size] = payload
        self._last_out_ts, self._last_out_time = self._timestamp, now
        self._fwd_ssrc = None  # relaying resumes after our own packets
        self._sequence = (self._sequence + 1) & 0xFFFF
        self._timestamp = (self._timestamp + timestamp_step) & 0xFFFFFFFF
        stats = self.stats
        stats.packets_out += 1
        stats.bytes_out += size
        stats.last_out = now
        return self._view[:size]
