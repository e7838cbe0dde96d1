"""DTMF as RFC 4733 telephone-events in the trunk's RTP stream: sans-I/O sender and receiver.

``DtmfSender`` shares the voice stream's ``RtpSession`` (one SSRC, one
sequence space, one media clock): while it plays an event the leg sends no
voice. It is driven by ``queue(digits, duration_ms, now)``, ``get_timer()``
and ``handle_timer(now)``, which returns the packets due. ``DtmfReceiver``
turns the trunk's event packets into digits, each event once.
"""

from __future__ import annotations

import struct
from collections import deque

from services.media.rtp import RtpSession

DIGITS = "0123456789*#ABCD"
"Event codes 0-15 of RFC 4733 section 3.2, in order."
EVENT_CODES = {digit: code for code, digit in enumerate(DIGITS)}

PACKET_INTERVAL = 0.02
"One event packet per 20 ms, the voice packet interval."
PACKET_SAMPLES = 160
"Timestamp units per packet interval at 8 kHz."
DIGIT_GAP = 0.08
"Silence between two digits, so the far end hears them apart."
END_COPIES = 3
"The end packet is sent three times (RFC 4733 section 2.5.1.4) against loss."
VOLUME = 10
"Power level of the tone, in -dBm0 (RFC 4733 section 2.3.4)."
MIN_DURATION_MS = 40
MAX_DURATION_MS = 2000

_EVENT = struct.Struct("!BBH")
_END = 0x80


def event_payload(code: int, end: bool, duration: int) -> bytes:
    """The 4-byte payload of RFC 4733 section 2.3: event, E bit and volume, duration."""
    return _EVENT.pack(code, (_END if end else 0) | VOLUME, duration)


class DtmfSender:
    """Plays queued digits as telephone-events on ``session`` with ``payload_type``.

    Each digit is one event: its first packet carries the marker bit, all its
    packets the timestamp of its start, and their duration grows by one
    packet interval until the last, which has the E bit and goes three times.
    The event's time counts on the media clock, so voice resumes with a
    timestamp that accounts for it.
    """

    def __init__(self, session: RtpSession, payload_type: int) -> None:
        self.session = session
        self.payload_type = payload_type
        self._digits: deque[tuple[int, int]] = deque()
        "Queued events: (event code, duration in timestamp units)."
        self._code = 0
        self._length = 0
        self._start = 0
        "Timestamp of the event being sent."
        self._sent = 0
        "Packet intervals of the current event already sent."
        self._playing = False
        self._due: float | None = None

    @property
    def active(self) -> bool:
        """True while an event is being sent: the voice path must stay silent."""
        return self._playing

    def queue(self, digits: str, duration_ms: int, now: float) -> None:
        """Queue ``digits`` (already checked) for ``duration_ms`` each; unknown ones are skipped."""
        duration_ms = min(max(duration_ms, MIN_DURATION_MS), MAX_DURATION_MS)
        length = duration_ms * PACKET_SAMPLES // 20
        for digit in digits:
            code = EVENT_CODES.get(digit.upper())
            if code is not None:
                self._digits.append((code, length))
        if self._due is None and self._digits:
            self._due = now

    def clear(self) -> None:
        """Drop queued digits; an event under way still ends properly."""
        self._digits.clear()
        if not self._playing:
            self._due = None

    def get_timer(self) -> float | None:
        """When ``handle_timer`` should next run, or None when nothing is queued."""
        return self._due

    def handle_timer(self, now: float) -> list[bytes]:
        """The packets due at ``now`` (empty when it is not yet time)."""
        if self._due is None or now < self._due:
            return []
        if not self._playing:
            if not self._digits:
                self._due = None
                return []
            self._code, self._length = self._digits.popleft()
            self._start = self.session.next_timestamp
            self._sent = 0
            self._playing = True
        self._sent += 1
        duration = min(self._sent * PACKET_SAMPLES, self._length)
        end = duration >= self._length
        payload = event_payload(self._code, end, duration)
        session = self.session
        packets = [
            bytes(
                session.event_packet(self.payload_type, payload, self._start, self._sent == 1, now)
            )
        ]
        # The interval this packet covers is on the media clock, as voice would be.
        session.advance(PACKET_SAMPLES)
        if end:
            for _ in range(END_COPIES - 1):
                packets.append(
                    bytes(session.event_packet(self.payload_type, payload, self._start, False, now))
                )
            self._playing = False
            self._due = self._due + PACKET_INTERVAL + DIGIT_GAP if self._digits else None
        else:
            self._due += PACKET_INTERVAL
        # A late timer must not bunch packets up: the next one is at least an interval away.
        if self._due is not None and self._due < now:
            self._due = now + (PACKET_INTERVAL if self._playing else DIGIT_GAP)
        return packets


class DtmfReceiver:
    """Digits from the trunk's telephone-event packets, one per event.

    An event is told apart by its RTP timestamp: its repeated packets, and
    the copies of its end packet, share it. Events 16 and above (flash and
    the like) are not digits and are ignored.
    """

    def __init__(self) -> None:
        self._last: int | None = None

    def receive(self, timestamp: int, payload: bytes) -> str | None:
        """The digit of a new event, or None for a packet of an event already reported."""
        if timestamp == self._last or len(payload) < 4:
            return None
        self._last = timestamp
        code = payload[0]
        return DIGITS[code] if code < len(DIGITS) else None
