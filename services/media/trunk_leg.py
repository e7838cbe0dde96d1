"""The trunk leg: G.711 over plain RTP on the call's allocated UDP port.

An asyncio ``DatagramProtocol`` that only moves bytes in and out of an
``RtpSession``. It knows nothing of aiortc: received audio leaves as 16-bit
PCM through a plain callback, and ``send_payload`` takes ready-made payloads,
so a later pass-through relay (G.711 browser leg) can bypass transcoding.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import cast

import numpy as np
from numpy.typing import NDArray

from services.media.g711 import CODECS, DECODE_TABLES, Encoder, Pcm
from services.media.rtp import Address, RtpSession, RtpStats
from services.media.sdp import Codec

PcmSink = Callable[[Pcm], None]
"Takes decoded samples; they are valid only during the call (the buffer is reused)."

# Larger than any G.711 packet we accept (RTP over UDP under a 1500-byte MTU).
_MAX_SAMPLES = 1500


class TrunkLeg(asyncio.DatagramProtocol):
    """RTP to and from the trunk; silent until ``start`` gives it the trunk's answer."""

    def __init__(self, sink: PcmSink) -> None:
        self._sink = sink
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.DatagramTransport | None = None
        self._session: RtpSession | None = None
        self._encode: Encoder | None = None
        self._decode: NDArray[np.int16] | None = None
        self._pcm = np.zeros(_MAX_SAMPLES, dtype=np.int16)
        self.codec: Codec | None = None
        self._answer: tuple[Address, Codec] | None = None
        "The trunk's SDP answer applied last: where its ``c=``/``m=`` point, and the codec."
        self.send_errors = 0

    @classmethod
    async def open(cls, sock: socket.socket, sink: PcmSink) -> TrunkLeg:
        """Serve ``sock`` (bound by the port allocator; closed by ``close``)."""
        loop = asyncio.get_running_loop()
        _transport, leg = await loop.create_datagram_endpoint(lambda: cls(sink), sock=sock)
        return leg

    @property
    def sending(self) -> bool:
        """True once the trunk's SDP answer is known."""
        return self._session is not None and self._transport is not None

    @property
    def stats(self) -> RtpStats | None:
        return self._session.stats if self._session else None

    def start(self, remote: Address, codec: Codec) -> bool:
        """Apply the trunk's answer; a later, different answer (200 after 183) retargets.

        The same answer again (a 200 repeating the 183's SDP) changes nothing:
        the stream stays latched and early media carries on without a gap.
        True when the answer changed anything.
        """
        if self._answer == (remote, codec):
            return False
        encode, _ = CODECS[codec.name.upper()]
        decode = DECODE_TABLES[codec.name.upper()]
        if self._session is None:
            self._session = RtpSession(remote, codec.payload_type)
        else:
            self._session.retarget(remote, codec.payload_type, self._loop.time())
        self._encode, self._decode = encode, decode
        self.codec = codec
        self._answer = (remote, codec)
        return True

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
        if payload and len(payload) <= _MAX_SAMPLES:
            codes = np.frombuffer(payload, dtype=np.uint8)
            pcm = self._pcm[: len(codes)]
            np.take(self._decode, codes, out=pcm)
            self._sink(pcm)

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
        transport.sendto(session.packet_for(payload, samples, self._loop.time()), session.remote)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
