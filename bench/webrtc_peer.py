"""``LeanPeer``: one browser-side WebRTC audio peer, without aiortc, without sockets or tasks.

A load generator needs hundreds of these on one core; an aiortc peer costs
6-10 % of a core (a task per transport, a queue per hop, a codec thread).
``LeanPeer`` keeps only what a browser must do on the wire:

- SDP: an audio-only offer with one codec (``webrtc_sdp``);
- ICE as the controlling agent with one host candidate, answering the
  remote's checks and consent requests (``ice_agent``);
- DTLS, client or server as the answer's ``a=setup`` says, then SRTP with
  the exported keys (``dtls_srtp``, libsrtp through ``services.media.srtp``);
- one RTP packet each ``tick`` (20 ms) and counters for what comes back
  (``rtp_probe``).

Sans I/O: the owner gives each datagram to ``datagram_received`` with the
time, calls ``tick`` every 20 ms (it sends the audio packet and runs any
timer that is due: ``next_timer``), and the peer sends through the
``send(data, address)`` callable it was given. The owner chooses sockets,
loop and clock (``bench.endpoint`` is one owner; a driver for another
WebRTC gateway can be another).

Usage::

    peer = LeanPeer(PCMU, "127.0.0.1", port, send=transport.sendto, peer_id=7)
    offer = peer.offer()                       # send it to the gateway
    peer.accept_answer(answer_sdp, now)        # starts ICE
    peer.datagram_received(data, addr, now)    # for each datagram on the port
    peer.tick(now)                             # every 20 ms
    peer.state  # new, checking, securing, media, failed or closed
"""

from __future__ import annotations

import random
from collections.abc import Callable

from pylibsrtp import Policy, Session

from bench.dtls_srtp import DtlsSession, local_identity
from bench.ice_agent import Address, IceAgent
from bench.rtp_probe import ProbeStream
from bench.webrtc_sdp import (
    AnswerError,
    AudioCodec,
    LocalDescription,
    RemoteDescription,
    build_offer,
    check_addresses,
    parse_answer,
)
from services.media.srtp import SrtpError, SrtpTransform

Sender = Callable[[bytes, Address], object]

SRTP_ERRORS = {
    "srtp 7": "authentication failed",
    "srtp 14": "not SRTP (SRTCP E bit clear: plain RTCP)",
    "replayed packet": "replayed",
    "srtp 10": "too old for the replay window",
}
"libsrtp's status codes as ``SrtpError`` words them, in plain words."

__all__ = ["AnswerError", "LeanPeer"]


def srtp_transforms(keys: tuple[bytes, bytes]) -> tuple[SrtpTransform, SrtpTransform]:
    """(protect, unprotect) transforms for (send, receive) SRTP_AES128_CM_SHA1_80 keys."""
    tx_key, rx_key = keys
    profile = Policy.SRTP_PROFILE_AES128_CM_SHA1_80
    tx = Policy(key=tx_key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
    rx = Policy(key=rx_key, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=profile)
    rx.window_size = 1024
    return SrtpTransform(Session(tx)), SrtpTransform(Session(rx))


class LeanPeer:
    """One audio call's browser side; see the module doc."""

    def __init__(
        self,
        codec: AudioCodec,
        host: str,
        port: int,
        send: Sender,
        peer_id: int = 0,
    ) -> None:
        self.codec = codec
        self.host = host
        self.port = port
        self._send = send
        self.peer_id = peer_id
        self.ice = IceAgent()
        self.dtls: DtlsSession | None = None
        self.remote: RemoteDescription | None = None
        self.ssrc = random.getrandbits(32)
        self.stream = ProbeStream(codec, self.ssrc, peer_id, first_seq=random.getrandbits(16))
        self.state = "new"
        self.failure = ""
        self.next_timer = float("inf")
        self.times: dict[str, float] = {}
        "When each state was reached (the caller's clock): checking, securing, media."
        self.srtp_errors = 0
        self.srtp_error_kinds: dict[str, int] = {}
        "SRTP/SRTCP packets refused, by libsrtp's reason (replayed, auth failure…)."
        self.send_errors = 0
        self._tx: SrtpTransform | None = None
        self._rx: SrtpTransform | None = None
        self._media_to: Address | None = None

    # -- signaling ---------------------------------------------------------------------------

    def offer(self) -> str:
        """The SDP offer: audio only, one codec, one host candidate, no trickle."""
        return build_offer(
            LocalDescription(
                codec=self.codec,
                host=self.host,
                port=self.port,
                ice_ufrag=self.ice.local_ufrag,
                ice_pwd=self.ice.local_pwd,
                fingerprint=local_identity().fingerprint,
                ssrc=self.ssrc,
                cname=f"lean{self.peer_id}",
                session_id=random.getrandbits(62),
            )
        )

    def accept_answer(self, sdp: str, now: float) -> None:
        """Apply the remote answer and start ICE; a bad answer fails the peer."""
        if self.state != "new":
            return
        try:
            remote = parse_answer(sdp)
        except (AnswerError, ValueError) as exc:
            self._fail(f"bad answer: {exc}")
            return
        self.remote = remote
        if remote.clock_rate:
            self.stream.set_clock_rate(remote.clock_rate)
        self.dtls = DtlsSession(remote.dtls_role, remote.fingerprints)
        self._set_state("checking", now)
        addresses = check_addresses(remote.candidates)
        self._transmit(self.ice.start(remote.ice_ufrag, remote.ice_pwd, addresses, now))
        self._after_ice(now)

    # -- the wire ----------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: Address, now: float) -> None:
        """Demultiplex one datagram (RFC 7983) and act on it."""
        if not data:
            return
        first = data[0]
        if 127 < first < 192:
            rx = self._rx
            if rx is None:
                return
            try:
                if len(data) > 1 and 191 < data[1] < 224:
                    rx.unprotect_rtcp(data)
                    self.stream.rtcp_packets += 1
                else:
                    self.stream.receive(rx.unprotect(data), now)
            except SrtpError as exc:
                self.srtp_errors += 1
                kind = SRTP_ERRORS.get(str(exc), str(exc))
                self.srtp_error_kinds[kind] = self.srtp_error_kinds.get(kind, 0) + 1
        elif first < 4:
            self._transmit(self.ice.receive(data, addr, now))
            self._after_ice(now)
        elif 19 < first < 64:
            dtls = self.dtls
            if dtls is None:
                return
            self._transmit_dtls(dtls.receive(data, now))
            self._after_dtls(now)

    def tick(self, now: float) -> None:
        """Every 20 ms: send the audio packet once media is up; run timers that are due."""
        tx = self._tx
        if tx is not None:
            try:
                self._send(bytes(tx.protect(self.stream.next_packet(now))), self._media_to)  # type: ignore[arg-type]
            except OSError:
                self.send_errors += 1
        if now >= self.next_timer:
            self.poll(now)

    def poll(self, now: float) -> None:
        """Retransmissions, consent checks and time-outs due at ``now``."""
        self._transmit(self.ice.poll(now))
        self._after_ice(now)
        if self.dtls is not None:
            self._transmit_dtls(self.dtls.poll(now))
            self._after_dtls(now)
        self._retime()

    def close(self) -> None:
        """Say goodbye (DTLS close_notify) and stop; the socket stays the owner's."""
        if self.dtls is not None and self._media_to is not None:
            self._transmit_dtls(self.dtls.close())
        self._tx = self._rx = None
        self.ice.close()
        if self.state not in ("failed",):
            self.state = "closed"
        self.next_timer = float("inf")

    # -- internals ---------------------------------------------------------------------------

    def _after_ice(self, now: float) -> None:
        ice = self.ice
        if ice.state == "failed":
            self._fail(ice.failure)
        elif ice.state == "connected" and self.state == "checking":
            self._media_to = ice.selected
            self._set_state("securing", now)
            assert self.dtls is not None
            self._transmit_dtls(self.dtls.start(now))
            self._after_dtls(now)
        self._retime()

    def _after_dtls(self, now: float) -> None:
        dtls = self.dtls
        if dtls is None:
            return
        if dtls.state == "failed" or (dtls.state == "closed" and self.state == "media"):
            self._fail(dtls.failure)
        elif dtls.state == "connected" and self.state == "securing":
            assert dtls.keys is not None
            self._tx, self._rx = srtp_transforms(dtls.keys)
            self._set_state("media", now)
        self._retime()

    def _transmit(self, datagrams: list[tuple[bytes, Address]]) -> None:
        for data, address in datagrams:
            try:
                self._send(data, address)
            except OSError:
                self.send_errors += 1

    def _transmit_dtls(self, datagrams: list[bytes]) -> None:
        address = self._media_to
        if address is None:
            return
        for data in datagrams:
            try:
                self._send(data, address)
            except OSError:
                self.send_errors += 1

    def _set_state(self, state: str, now: float) -> None:
        self.state = state
        self.times[state] = now

    def _fail(self, reason: str) -> None:
        if self.state in ("failed", "closed"):
            return
        self.state = "failed"
        self.failure = reason or "failed"
        self._tx = self._rx = None
        self.ice.close()
        self.next_timer = float("inf")

    def _retime(self) -> None:
        if self.state in ("failed", "closed"):
            self.next_timer = float("inf")
            return
        due = self.ice.next_timer
        if self.dtls is not None and self.dtls.next_timer < due:
            due = self.dtls.next_timer
        self.next_timer = due
