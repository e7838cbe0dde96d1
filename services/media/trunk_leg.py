"""The trunk leg: G.711 over plain RTP on the call's allocated UDP port.

An asyncio ``DatagramProtocol`` that only moves bytes in and out of an
``RtpSession``. It knows nothing of aiortc: received audio leaves as 16-bit
PCM through a plain callback, and ``send_payload`` takes ready-made payloads,
so a later pass-through relay (G.711 browser leg) can bypass transcoding.

DTMF rides the same stream as RFC 4733 events when the trunk's answer has
telephone-event: ``send_dtmf`` drives a ``DtmfSender`` on one timer, and the
trunk's events come out as digits through a second callback. While either
side holds the call, nothing is sent; what the trunk sends is still played.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import cast

import numpy as np
from numpy.typing import NDArray

from services.media.dtmf import DtmfReceiver, DtmfSender
from services.media.g711 import CODECS, DECODE_TABLES, Encoder, Pcm
from services.media.rtp import Address, RtpSession, RtpStats
from services.media.sdp import Codec

PcmSink = Callable[[Pcm], None]
"Takes decoded samples; they are valid only during the call (the buffer is reused)."
DigitSink = Callable[[str], None]
"Takes one DTMF digit the trunk sent as an RFC 4733 event."

# Larger than any G.711 packet we accept (RTP over UDP under a 1500-byte MTU).
_MAX_SAMPLES = 1500


class TrunkLeg(asyncio.DatagramProtocol):
    """RTP to and from the trunk; silent until ``start`` gives it the trunk's answer."""

    def __init__(self, sink: PcmSink, on_digit: DigitSink | None = None) -> None:
        self._sink = sink
        self._on_digit = on_digit
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.DatagramTransport | None = None
        self._session: RtpSession | None = None
        self._encode: Encoder | None = None
        self._decode: NDArray[np.int16] | None = None
        self._pcm = np.zeros(_MAX_SAMPLES, dtype=np.int16)
        self.codec: Codec | None = None
        self._answer: tuple[Address, Codec, int | None] | None = None
        "The trunk's SDP applied last: where its ``c=``/``m=`` point, the codec, telephone-event."
        self.dtmf_payload_type: int | None = None
        self._dtmf: DtmfSender | None = None
        self._dtmf_in = DtmfReceiver()
        self._dtmf_timer: asyncio.TimerHandle | None = None
        self.held = False
        "Either side holds the call: nothing goes to the trunk."
        self._quiet = False
        "Voice is not sent: held, or a DTMF event is on the wire."
        self.send_errors = 0

    @classmethod
    async def open(
        cls, sock: socket.socket, sink: PcmSink, on_digit: DigitSink | None = None
    ) -> TrunkLeg:
        """Serve ``sock`` (bound by the port allocator; closed by ``close``)."""
        loop = asyncio.get_running_loop()
        _transport, leg = await loop.create_datagram_endpoint(
            lambda: cls(sink, on_digit), sock=sock
        )
        return leg

    @property
    def sending(self) -> bool:
        """True once the trunk's SDP answer is known."""
        return self._session is not None and self._transport is not None

    @property
    def remote(self) -> Address | None:
        """Where the trunk's SDP applied last points (before latching moves it)."""
        return self._answer[0] if self._answer else None

    @property
    def stats(self) -> RtpStats | None:
        return self._session.stats if self._session else None

    def start(self, remote: Address, codec: Codec, dtmf_pt: int | None = None) -> bool:
        """Apply the trunk's answer; a later, different answer (200 after 183) retargets.

        The same answer again (a 200 repeating the 183's SDP) changes nothing:
        the stream stays latched and early media carries on without a gap.
        A re-INVITE's SDP comes here too. True when the answer changed anything.
        """
        if self._answer == (remote, codec, dtmf_pt):
            return False
        encode, _ = CODECS[codec.name.upper()]
        decode = DECODE_TABLES[codec.name.upper()]
        session = self._session
        if session is None:
            session = self._session = RtpSession(remote, codec.payload_type)
            session.on_event = self._on_event
        elif self._answer is None or self._answer[0] != remote:
            session.retarget(remote, codec.payload_type, self._loop.time())
        else:
            # Same address, new codec: keep the latch (a trunk behind NAT sends
            # from elsewhere than its SDP says, and must not be cut off).
            session.payload_type = codec.payload_type
        session.event_payload_type = dtmf_pt
        self.dtmf_payload_type = dtmf_pt
        if self._dtmf is not None and dtmf_pt is not None:
            self._dtmf.payload_type = dtmf_pt
        self._encode, self._decode = encode, decode
        self.codec = codec
        self._answer = (remote, codec, dtmf_pt)
        return True

    def set_hold(self, held: bool) -> None:
        """Stop sending to the trunk while held; resume with a new talkspurt."""
        if held == self.held:
            return
        self.held = held
        if held and self._dtmf is not None:
            self._dtmf.clear()
        if not held and self._session is not None:
            self._session.new_talkspurt()
        self._quiet = held or (self._dtmf is not None and self._dtmf.active)

    # -- asyncio.DatagramProtocol ---------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        session = self._session
        if session is None or self._decode is None:
            return  # no answer yet: we cannot know the payload type
        # IPv6 addresses come as 4-tuples; RTP latching compares (host, port).
        payload = session.receive(data, addr if len(addr) == 2 else addr[:2], self._loop.time())
        # Telephone-events went to ``_on_event`` and left None here.
        if payload and len(payload) <= _MAX_SAMPLES:
            codes = np.frombuffer(payload, dtype=np.uint8)
            pcm = self._pcm[: len(codes)]
            np.take(self._decode, codes, out=pcm)
            self._sink(pcm)

    def _on_event(self, timestamp: int, payload: bytes) -> None:
        digit = self._dtmf_in.receive(timestamp, payload)
        if digit is not None and self._on_digit is not None:
            self._on_digit(digit)

    def error_received(self, exc: Exception) -> None:
        # ICMP unreachable and the like arrive per packet: count, never log here.
        self.send_errors += 1

    # -- sending ----------------------------------------------------------------

    def send_pcm(self, pcm: Pcm) -> None:
        """Encode and send one frame of 8 kHz samples (dropped before the answer)."""
        if self._encode is not None:
            self.send_payload(self._encode(pcm), len(pcm))

    def send_payload(self, payload: bytes, samples: int) -> None:
        """Send an already-encoded payload covering ``samples`` samples."""
        session, transport = self._session, self._transport
        if session is None or transport is None:
            return
        if self._quiet:
            if self.held:
                # RFC 3550 5.1: the media clock runs on while nothing is sent. (During
                # a digit the event's own duration moves it.)
                session.advance(samples)
            return
        transport.sendto(session.packet_for(payload, samples, self._loop.time()), session.remote)

    def send_dtmf(self, digits: str, duration_ms: int) -> bool:
        """Queue ``digits`` as RFC 4733 events; False when the trunk's answer has no
        telephone-event, or while held (nothing may be sent then)."""
        session = self._session
        if session is None or self.dtmf_payload_type is None or self.held:
            return False
        if self._dtmf is None:
            self._dtmf = DtmfSender(session, self.dtmf_payload_type)
        self._dtmf.queue(digits, duration_ms, self._loop.time())
        self._arm_dtmf()
        return True

    def _arm_dtmf(self) -> None:
        dtmf = self._dtmf
        when = dtmf.get_timer() if dtmf is not None else None
        if self._dtmf_timer is not None and (when is None or self._dtmf_timer.when() != when):
            self._dtmf_timer.cancel()
            self._dtmf_timer = None
        if when is not None and self._dtmf_timer is None:
            self._dtmf_timer = self._loop.call_at(when, self._on_dtmf_timer)

    def _on_dtmf_timer(self) -> None:
        self._dtmf_timer = None
        dtmf, session, transport = self._dtmf, self._session, self._transport
        if dtmf is None or session is None:
            return
        packets = dtmf.handle_timer(self._loop.time())
        if transport is not None and not self.held:
            for packet in packets:
                transport.sendto(packet, session.remote)
        self._quiet = self.held or dtmf.active
        self._arm_dtmf()

    def close(self) -> None:
        if self._dtmf_timer is not None:
            self._dtmf_timer.cancel()
            self._dtmf_timer = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None
