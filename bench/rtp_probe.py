"""A peer's audio as a measuring probe: tagged tone packets out, what comes back counted.

``ProbeStream`` makes one RTP packet per 20 ms from payloads computed once
per process (``tone_payloads``: a 1 kHz tone, PCMU or Opus) and counts what
arrives: packets, bytes, sequence gaps, RFC 3550 interarrival jitter. For
PCMU it writes a tag into the first 8 payload bytes (``b"LG"``, the peer's
16-bit id, a 32-bit packet counter) and keeps the send time of the last
``RING`` counters: the demo trunk echoes the payload and the bridge relays
PCMU untouched, so a packet that comes back with our tag gives one round
trip, and one with another peer's id is audio delivered to the wrong call.
Opus is converted by the bridge, so it is sent untagged and only counted.

``open_window`` and ``close_window`` bracket the measurement: loss is counted
for packets sent (echo) and sequence numbers received (return path) between
the two, round trips for tags sent between them.
"""

from __future__ import annotations

import functools
import math
import struct
from array import array
from dataclasses import dataclass

import numpy as np

from bench.webrtc_sdp import OPUS, PCMU, AudioCodec

TAG = b"LG"
TAG_SIZE = 8
RING = 1024
"Send times kept per peer: 20 s of packets; an echo later than that is not timed."
TONE_HZ = 1000.0
_HEADER = struct.Struct("!BBHII")
_TAGGED = struct.Struct("!BBHII2sHI")
_TAG = struct.Struct("!2sHI")


@functools.cache
def tone_payloads(codec_name: str, frames: int = 150) -> tuple[bytes, ...]:
    """``frames`` 20 ms payloads of a 1 kHz tone, made once per process."""
    if codec_name == PCMU.name:
        from services.media.g711 import ulaw_encode

        n = 160
        t = np.arange(n * frames) / 8000.0
        pcm = (8000 * np.sin(2 * math.pi * TONE_HZ * t)).astype(np.int16)
        return tuple(ulaw_encode(pcm[i * n : (i + 1) * n]) for i in range(frames))
    if codec_name == OPUS.name:
        from services.media.opus import OpusEncoder

        n = 960
        t = np.arange(n * frames) / 48000.0
        pcm = (8000 * np.sin(2 * math.pi * TONE_HZ * t)).astype("=i2")
        encoder = OpusEncoder(48000, 1, fec=False, expected_loss_percent=0)
        try:
            return tuple(encoder.encode(pcm[i * n : (i + 1) * n].tobytes()) for i in range(frames))
        finally:
            encoder.close()
    raise ValueError(f"no tone for {codec_name!r}")


@dataclass(slots=True)
class WindowCounts:
    """What one peer measured between ``open_window`` and ``close_window``."""

    sent: int = 0
    echoed: int = 0
    "Tagged packets sent in the window that came back (PCMU only)."
    received: int = 0
    bytes: int = 0
    "RTP bytes received in the window (headers included, SRTP trailer not)."
    expected: int = 0
    "Sequence numbers the bridge used in the window: received plus lost."
    jitter_ms: float = 0.0
    jitter_max_ms: float = 0.0


class ProbeStream:
    """The RTP of one peer: ``next_packet`` to send, ``receive`` for each decrypted packet."""

    def __init__(self, codec: AudioCodec, ssrc: int, peer_id: int, first_seq: int = 0) -> None:
        self.codec = codec
        self.ssrc = ssrc
        self.peer_id = peer_id & 0xFFFF
        self.tagged = codec.name == PCMU.name
        self._payloads = tone_payloads(codec.name)
        self._index = 0
        self._seq = first_seq & 0xFFFF
        self._timestamp = 0
        self._marker = 0x80
        self._step = codec.samples_per_packet
        self.counter = 0
        "Packets sent so far; the next packet's tag."
        self._sent_at = array("d", bytes(8 * RING))
        # receive side
        self.clock_rate = codec.clock_rate
        self.packets = 0
        self.bytes = 0
        self.rtcp_packets = 0
        self.duplicates = 0
        self.late = 0
        self.misrouted = 0
        self.first_arrival = 0.0
        self.last_arrival = 0.0
        self._base = -1
        self._max = -1
        "Extended highest sequence number received."
        self._transit = 0.0
        self.jitter = 0.0
        "RFC 3550 interarrival jitter, in timestamp units."
        self.rtts: list[float] = []
        "Round trips (s) of tags sent in the window."
        self._window: tuple[int, int] | None = None
        "(first, end) counters whose echo is counted; end grows until the window closes."
        self._echoed = 0
        self._jitter_max = 0.0
        self._rx_start = (0, 0, 0)
        self._counts: WindowCounts | None = None

    def set_clock_rate(self, rate: int) -> None:
        """The answer's clock rate, when it differs from the offer's."""
        if rate > 0:
            self.clock_rate = rate

    def next_packet(self, now: float) -> bytes | bytearray:
        """The next packet in the clear; its send time is kept for the echo."""
        payload = self._payloads[self._index]
        self._index = (self._index + 1) % len(self._payloads)
        counter = self.counter
        b1 = self._marker | self.codec.payload_type
        self._marker = 0
        if self.tagged:
            packet = bytearray(12 + len(payload))
            packet[12 + TAG_SIZE :] = payload[TAG_SIZE:]
            _TAGGED.pack_into(
                packet, 0, 0x80, b1, self._seq, self._timestamp, self.ssrc,
                TAG, self.peer_id, counter,
            )  # fmt: skip
            self._sent_at[counter % RING] = now
        else:
            packet = _HEADER.pack(0x80, b1, self._seq, self._timestamp, self.ssrc) + payload
        self.counter = counter + 1
        self._seq = (self._seq + 1) & 0xFFFF
        self._timestamp = (self._timestamp + self._step) & 0xFFFFFFFF
        return packet

    def receive(self, packet: bytes | memoryview, now: float) -> None:
        """One decrypted RTP packet from the bridge, arrived at ``now``."""
        size = len(packet)
        if size < 12:
            return
        b0, _b1, seq, timestamp, _ssrc = _HEADER.unpack_from(packet)
        self.packets += 1
        self.bytes += size
        self.last_arrival = now
        if self._max < 0:
            self._base = self._max = seq
            self.first_arrival = now
        else:
            delta = (seq - self._max) & 0xFFFF
            if delta == 0:
                self.duplicates += 1
            elif delta < 0x8000:
                self._max += delta
            else:
                self.late += 1
        transit = now * self.clock_rate - timestamp
        if self.packets > 1:
            d = abs(transit - self._transit)
            if d < self.clock_rate:  # not a timestamp jump (a new stream after a re-INVITE)
                self.jitter += (d - self.jitter) / 16.0
                if self._window is not None and self.jitter > self._jitter_max:
                    self._jitter_max = self.jitter
        self._transit = transit
        if self.tagged:
            offset = 12 + 4 * (b0 & 0x0F)
            if b0 & 0x10 and size >= offset + 4:
                offset += 4 + 4 * int.from_bytes(packet[offset + 2 : offset + 4], "big")
            if size >= offset + TAG_SIZE and packet[offset : offset + 2] == TAG:
                _, peer_id, counter = _TAG.unpack_from(packet, offset)
                if peer_id != self.peer_id:
                    self.misrouted += 1
                    return
                window = self._window
                if window is not None and window[0] <= counter < window[1]:
                    if 0 <= self.counter - counter <= RING:
                        self.rtts.append(now - self._sent_at[counter % RING])
                    self._echoed += 1

    @property
    def expected(self) -> int:
        return 0 if self._max < 0 else self._max - self._base + 1

    def open_window(self) -> None:
        """Start counting loss and round trips from the next packet sent."""
        self._window = (self.counter, 1 << 62)
        self._echoed = 0
        self._jitter_max = self.jitter
        self.rtts = []
        self._rx_start = (self.packets, self.expected, self.bytes)

    def close_window(self) -> None:
        """Stop: packets sent from now on are not counted; echoes of earlier ones still are."""
        if self._window is None:
            return
        first = self._window[0]
        self._window = (first, self.counter)
        received = self.packets - self._rx_start[0]
        expected = self.expected - self._rx_start[1]
        self._counts = WindowCounts(
            sent=self.counter - first,
            received=received,
            bytes=self.bytes - self._rx_start[2],
            expected=expected,
            jitter_ms=1000.0 * self.jitter / self.clock_rate,
            jitter_max_ms=1000.0 * self._jitter_max / self.clock_rate,
        )

    def window_counts(self) -> WindowCounts:
        """The window's counts; echoes keep counting after ``close_window``."""
        counts = self._counts or WindowCounts()
        counts.echoed = self._echoed
        return counts
