"""The browser leg's media datagrams, taken from aiortc as they arrive.

aiortc keeps doing SDP, ICE (candidates, checks, consent freshness, TURN)
and DTLS; its media pipeline (an asyncio queue per hop, a task per
transport, a jitter buffer holding four packets, a decoder thread) never
sees a packet. ``BrowserTransport`` takes the ICE connection's datagrams
before aioice queues them: STUN and DTLS go on to aiortc as before, SRTP and
SRTCP (RFC 7983: first byte 128-191) are unprotected with the keys DTLS
exported and handed to one synchronous callback each. Packets to the browser
are protected and sent on the ICE pair in use, in the caller's stack.
aiortc's own RTP sender and receiver are never started: no RTP, no RTCP and
no decoder thread of theirs.

Every private name of aiortc, aioice and pylibsrtp the media tier relies on
is read here (and in ``srtp.py``); ``PRIVATE_NAMES`` lists them,
``check_private_names`` verifies them and
``tests/unit/media/test_private_names.py`` fails loudly when a new version
changes them. The versions are pinned in ``pyproject.toml``.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from typing import Any

import aioice.ice
from aioice.ice import CandidatePair, Connection, StunProtocol
from aiortc import RTCRtpTransceiver
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcicetransport import RTCIceTransport
from aiortc.rtcrtpsender import RTCRtpSender

from services.media.srtp import SrtpError, SrtpTransform

log = logging.getLogger(__name__)

PacketSink = Callable[[memoryview], None]
"Takes one decrypted packet; the view is valid only during the call."

PRIVATE_NAMES: tuple[tuple[str, str], ...] = (
    ("aiortc.rtcicetransport.RTCIceTransport", "_connection"),
    ("aiortc.rtcdtlstransport.RTCDtlsTransport", "_rx_srtp"),
    ("aiortc.rtcdtlstransport.RTCDtlsTransport", "_tx_srtp"),
    ("aiortc.rtcrtpsender.RTCRtpSender", "_ssrc"),
    ("aioice.ice.Connection", "_nominated"),
    ("aioice.ice.Connection", "data_received"),
    ("aioice.ice.CandidatePair", "protocol"),
    ("aioice.ice.CandidatePair", "remote_addr"),
    ("aioice.ice.StunProtocol", "transport"),
    ("aioice.ice", "get_host_addresses"),
    ("pylibsrtp.Session", "_srtp"),
    ("pylibsrtp._binding", "lib.srtp_protect"),
)
"(owner, attribute) pairs: instance attributes are checked on live objects by the test."


def check_private_names() -> None:
    """Raise ``AttributeError`` naming what is gone when a class lacks a name we use."""
    missing = [
        f"{owner}.{name}"
        for owner, name, cls in (
            ("aioice.ice", "get_host_addresses", aioice.ice),
            ("aioice.ice.Connection", "data_received", Connection),
            ("aioice.ice.CandidatePair", "remote_addr", CandidatePair),
            ("aioice.ice.StunProtocol", "datagram_received", StunProtocol),
        )
        if not hasattr(cls, name)
    ]
    if missing:
        raise AttributeError(f"aiortc/aioice changed: missing {', '.join(missing)}")


_gather_all = aioice.ice.get_host_addresses


def gather_on(bind_host: str) -> None:
    """ICE host candidates on ``bind_host`` alone when it is one address, loopback included;
    on every interface and 127.0.0.1 when it is ``0.0.0.0`` or ``::``. (aioice skips
    loopback: a bridge on loopback, or on a machine offline, could reach no browser.)"""
    try:
        address = ipaddress.ip_address(bind_host)
    except ValueError:
        address = None
    if address is None or address.is_unspecified:

        def every(use_ipv4: bool, use_ipv6: bool) -> list[str]:
            found = _gather_all(use_ipv4, use_ipv6)
            return [*found, "127.0.0.1"] if use_ipv4 and "127.0.0.1" not in found else found

        aioice.ice.get_host_addresses = every
        return

    def addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        wanted = use_ipv4 if address.version == 4 else use_ipv6
        return [str(address)] if wanted else []

    aioice.ice.get_host_addresses = addresses


async def _never(*_args: Any) -> None:
    """Stands in for aiortc's sender and receiver start: their pipeline stays off."""


class BrowserTransport:
    """SRTP to and from the browser, in the datagram callback's own stack."""

    def __init__(
        self, transceiver: RTCRtpTransceiver, on_rtp: PacketSink, on_rtcp: PacketSink
    ) -> None:
        dtls: RTCDtlsTransport = transceiver.receiver.transport
        ice: RTCIceTransport = dtls.transport
        connection: Connection = ice._connection
        self._dtls = dtls
        self._connection = connection
        self._nominated: dict[int, CandidatePair] = connection._nominated
        self._pass_on = connection.data_received  # aioice's: queues for aiortc's DTLS task
        self._on_rtp = on_rtp
        self._on_rtcp = on_rtcp
        self._rx: SrtpTransform | None = None
        self._tx: SrtpTransform | None = None
        sender: RTCRtpSender = transceiver.sender
        self.ssrc: int = sender._ssrc
        "The SSRC aiortc's answer announced for our audio: our packets to the browser carry it."
        self.dropped = 0
        "Datagrams refused: not yet keyed, failed authentication, replayed."
        self.send_errors = 0
        # aiortc would start its RTP sender and receiver once DTLS is up.
        transceiver.sender.send = _never  # type: ignore[method-assign,assignment]
        transceiver.receiver.receive = _never  # type: ignore[method-assign,assignment]
        # An instance attribute: aioice's protocols call it before their queue.
        connection.data_received = self._datagram  # type: ignore[method-assign]

    def _keyed(self) -> bool:
        rx, tx = self._dtls._rx_srtp, self._dtls._tx_srtp
        if rx is None or tx is None:
            return False
        self._rx, self._tx = SrtpTransform(rx), SrtpTransform(tx)
        return True

    def _datagram(self, data: bytes, component: int) -> None:
        if not data or not 127 < data[0] < 192:
            self._pass_on(data, component)  # DTLS (and anything else) stays aiortc's
            return
        rx = self._rx
        if rx is None:
            if not self._keyed():
                self.dropped += 1
                return
            rx = self._rx
            assert rx is not None
        try:
            # RTCP packet types 192-223 (RFC 5761 4); RTP payload types avoid them.
            if len(data) > 1 and 192 <= data[1] <= 223:
                self._on_rtcp(rx.unprotect_rtcp(data))
            else:
                self._on_rtp(rx.unprotect(data))
        except SrtpError:
            self.dropped += 1

    @property
    def ready(self) -> bool:
        """True once DTLS has keyed SRTP and ICE has a pair to send on."""
        return (self._tx is not None or self._keyed()) and 1 in self._nominated

    def send_rtp(self, packet: bytes | memoryview) -> None:
        """Protect and send one RTP packet to the browser (dropped before keys or a pair)."""
        tx = self._tx
        if tx is not None or self._keyed():
            self._send((tx or self._tx).protect(packet))  # type: ignore[union-attr]

    def send_rtcp(self, packet: bytes | memoryview) -> None:
        """Protect and send one RTCP compound packet to the browser."""
        tx = self._tx
        if tx is not None or self._keyed():
            self._send((tx or self._tx).protect_rtcp(packet))  # type: ignore[union-attr]

    def _send(self, data: memoryview) -> None:
        pair = self._nominated.get(1)
        if pair is None:
            return
        transport = pair.protocol.transport
        if transport is None or transport.is_closing():
            return
        try:
            # bytes: a loop that must queue the datagram (uvloop on EAGAIN) keeps the
            # object it was given, and ``data`` is a view of a buffer the next packet reuses.
            transport.sendto(bytes(data), pair.remote_addr)
        except OSError:
            self.send_errors += 1

    def close(self) -> None:
        """Stop taking datagrams; the ICE connection is aiortc's to close."""
        self._on_rtp = self._on_rtcp = _ignore


def _ignore(_packet: memoryview) -> None:
    pass
