"""RTCP (RFC 3550 section 6): the wire codec and one leg's reports, sans I/O.

RTCP is terminated per leg, never forwarded: the browser's reports are
about our stream to the browser, the trunk's about our stream to the trunk.
``RtcpLeg`` writes each leg's compound report (SR when we sent RTP since
the last one, else RR; a report block about what we received; SDES CNAME)
from the leg's own counters, and reads the peer's to learn the round trip
(LSR/DLSR) and what the peer lost of ours.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass

from services.media.rtp import RtpSession

SR = 200
RR = 201
SDES = 202
BYE = 203
INTERVAL = 5.0
"Seconds between reports (RFC 3550 6.2 minimum), randomised to 0.5-1.5 times."
NTP_EPOCH = 2208988800
"Seconds from 1900 (NTP) to 1970 (Unix)."

_HEADER = struct.Struct("!BBHI")
_WORD = struct.Struct("!BBH")
_SSRC = struct.Struct("!I")
_SENDER = struct.Struct("!IIIII")
_BLOCK = struct.Struct("!IIIIII")


class RtcpError(ValueError):
    """A datagram is not a valid RTCP compound packet."""


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """What a receiver says of one source (RFC 3550 6.4.1)."""

    ssrc: int
    fraction_lost: int
    "Lost since the previous report, out of 256."
    cumulative_lost: int
    highest_sequence: int
    "Extended: cycles of the sequence number in the upper 16 bits."
    jitter: int
    "Interarrival jitter, in timestamp units."
    lsr: int
    "Middle 32 bits of the NTP time of the last SR received from the source; 0: none yet."
    dlsr: int
    "Delay since that SR, in 1/65536 s."


@dataclass(frozen=True, slots=True)
class Report:
    """One SR or RR of a compound packet."""

    ssrc: int
    ntp: int | None
    "The sender info's NTP timestamp (SR only)."
    blocks: tuple[ReportBlock, ...]


def ntp_time(unix: float) -> int:
    """64-bit NTP timestamp of a Unix time."""
    return int((unix + NTP_EPOCH) * (1 << 32)) & 0xFFFFFFFFFFFFFFFF


def middle(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp (LSR, RFC 3550 6.4.1)."""
    return (ntp >> 16) & 0xFFFFFFFF


def parse(data: bytes | memoryview) -> list[Report]:
    """The sender and receiver reports of a compound packet; other packets are skipped."""
    reports: list[Report] = []
    offset, end = 0, len(data)
    if end < 8:
        raise RtcpError("RTCP packet too short")
    while offset + 4 <= end:
        first, kind, words = _WORD.unpack_from(data, offset)
        if first >> 6 != 2:
            raise RtcpError(f"unsupported RTCP version {first >> 6}")
        length = 4 * (words + 1)
        if offset + length > end:
            raise RtcpError("RTCP length past the end")
        count = first & 0x1F
        if kind in (SR, RR):
            if length < 8:
                raise RtcpError("report without an SSRC")
            (ssrc,) = _SSRC.unpack_from(data, offset + 4)
            body = offset + 8
            ntp = None
            if kind == SR:
                if body + _SENDER.size > offset + length:
                    raise RtcpError("SR too short")
                high, low, _ts, _packets, _octets = _SENDER.unpack_from(data, body)
                ntp = (high << 32) | low
                body += _SENDER.size
            if body + count * _BLOCK.size > offset + length:
                raise RtcpError("report blocks past the packet")
            blocks = []
            for index in range(count):
                source, lost, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(
                    data, body + index * _BLOCK.size
                )
                cumulative = lost & 0xFFFFFF
                if cumulative & 0x800000:
                    cumulative -= 0x1000000
                blocks.append(
                    ReportBlock(source, lost >> 24, cumulative, highest, jitter, lsr, dlsr)
                )
            reports.append(Report(ssrc, ntp, tuple(blocks)))
        offset += length
    return reports


def _block(block: ReportBlock) -> bytes:
    lost = (block.fraction_lost << 24) | (block.cumulative_lost & 0xFFFFFF)
    return _BLOCK.pack(
        block.ssrc, lost, block.highest_sequence, block.jitter, block.lsr, block.dlsr
    )


def build(
    ssrc: int,
    sender: tuple[int, int, int, int] | None,
    blocks: tuple[ReportBlock, ...],
    cname: bytes,
) -> bytes:
    """A compound packet: SR (``sender``: NTP, RTP timestamp, packets, octets) or RR, then
    SDES with the CNAME."""
    body = b"".join(_block(b) for b in blocks)
    if sender is not None:
        ntp, rtp_ts, packets, octets = sender
        body = (
            _SENDER.pack(
                ntp >> 32, ntp & 0xFFFFFFFF, rtp_ts, packets & 0xFFFFFFFF, octets & 0xFFFFFFFF
            )
            + body
        )
    kind = SR if sender is not None else RR
    report = _HEADER.pack(0x80 | len(blocks), kind, (8 + len(body)) // 4 - 1, ssrc) + body
    item = bytes((1, len(cname))) + cname
    chunk = struct.pack("!I", ssrc) + item + b"\x00" * (4 - len(item) % 4)
    sdes = struct.pack("!BBH", 0x81, SDES, (4 + len(chunk)) // 4 - 1) + chunk
    return report + sdes


class RtcpLeg:
    """One leg's RTCP: our reports from its ``RtpSession``, its peer's reports read back."""

    def __init__(self, session: RtpSession, cname: bytes, now: float, wall_offset: float) -> None:
        self._session = session
        self._cname = cname
        self._wall = wall_offset
        "Add to the monotonic ``now`` for Unix time (NTP timestamps)."
        self._rng = random.Random()
        self.due = now + INTERVAL * (0.5 + self._rng.random()) / 2  # the first one sooner
        self._packets_reported = 0
        self._expected_prior = 0
        self._received_prior = 0
        self._lsr = 0
        self._lsr_at = 0.0
        self.rtt: float | None = None
        "Seconds, from the last report block about our stream (LSR/DLSR)."
        self.remote_fraction_lost = 0.0
        "What the peer lost of our stream, from its last report block (0-1)."
        self.remote_jitter = 0
        self.reports_in = 0
        self.reports_out = 0

    def report(self, now: float) -> bytes:
        """Our compound report now; the next is due ``INTERVAL`` later, randomised."""
        session = self._session
        stats = session.stats
        sender = None
        ntp = ntp_time(now + self._wall)
        if stats.packets_out > self._packets_reported:
            self._packets_reported = stats.packets_out
            sender = (ntp, session.timestamp_at(now), stats.packets_out, stats.bytes_out)
        blocks: tuple[ReportBlock, ...] = ()
        source = session.reception()
        if source is not None:
            ssrc, highest, expected, received = source
            expected_interval = expected - self._expected_prior
            received_interval = received - self._received_prior
            self._expected_prior, self._received_prior = expected, received
            lost_interval = expected_interval - received_interval
            fraction = (
                (lost_interval << 8) // expected_interval
                if expected_interval > 0 and lost_interval > 0
                else 0
            )
            cumulative = max(min(expected - received, 0x7FFFFF), -0x800000)
            dlsr = int((now - self._lsr_at) * 65536) if self._lsr else 0
            blocks = (
                ReportBlock(
                    ssrc,
                    min(fraction, 255),
                    cumulative,
                    highest & 0xFFFFFFFF,
                    int(stats.jitter),
                    self._lsr,
                    dlsr & 0xFFFFFFFF,
                ),
            )
        self.due = now + INTERVAL * (0.5 + self._rng.random())
        self.reports_out += 1
        return build(session.ssrc, sender, blocks, self._cname)

    def receive(self, data: bytes | memoryview, now: float) -> None:
        """Read the peer's compound report (malformed ones are ignored)."""
        try:
            reports = parse(data)
        except RtcpError:
            return
        self.reports_in += 1
        ours = self._session.ssrc
        for report in reports:
            if report.ntp is not None:
                self._lsr, self._lsr_at = middle(report.ntp), now
            for block in report.blocks:
                if block.ssrc != ours:
                    continue
                self.remote_fraction_lost = block.fraction_lost / 256
                self.remote_jitter = block.jitter
                if block.lsr:
                    arrival = middle(ntp_time(now + self._wall))
                    delay = (arrival - block.lsr - block.dlsr) & 0xFFFFFFFF
                    if delay < 0x80000000:
                        self.rtt = delay / 65536
