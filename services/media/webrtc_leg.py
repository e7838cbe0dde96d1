"""The browser leg: one aiortc ``RTCPeerConnection`` answering the browser's offer.

ICE servers come from ICE_SERVERS only; with none configured aiortc gathers
host candidates alone (its default would try a public STUN server).

PUBLIC_IP: aiortc binds one socket per local interface and advertises their
addresses. When PUBLIC_IP is set and is not one of them (a host behind 1:1
NAT, e.g. a cloud VM with a public address), we *add* a host candidate with
PUBLIC_IP for each distinct port of the gathered host candidates of the same
address family, just below the original's priority. Adding rather than
rewriting keeps browsers on the same host or LAN working through the private
candidates, while a browser outside reaches the NAT's public address, which
forwards to the same port. ICE then learns the browser as a peer-reflexive
candidate from its checks.

Audio never goes through aiortc's tracks: ``BrowserTransport`` takes the
SRTP datagrams off the ICE connection (see its module). The answer's codec
is the first of the trunk codecs (SIP_CODECS) the browser offered, so the
payload can be relayed untouched; Opus otherwise.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Sequence

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpCodecCapability,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.sdp import candidate_from_sdp

from proto import errors
from services.common.digits import number
from services.common.settings import Settings
from services.media.browser_transport import BrowserTransport, PacketSink
from services.media.sdp import Codec, first_codec

log = logging.getLogger(__name__)


class BadOfferError(ValueError):
    """The browser's offer cannot be answered."""

    code = errors.BAD_SDP


def ice_configuration(settings: Settings) -> RTCConfiguration:
    """Peer connection configuration: only the configured ICE servers, none by default."""
    servers = []
    if settings.ice_servers:
        servers.append(
            RTCIceServer(
                urls=list(settings.ice_servers),
                username=settings.ice_username or None,
                credential=settings.ice_credential or None,
            )
        )
    return RTCConfiguration(iceServers=servers)


def _family(address: str) -> int | None:
    try:
        return ipaddress.ip_address(address).version
    except ValueError:
        return None  # mDNS name or garbage


def add_public_candidates(sdp: str, public_ip: str) -> str:
    """``sdp`` with a PUBLIC_IP host candidate beside the host candidates (see module doc)."""
    family = _family(public_ip)
    lines = sdp.split("\r\n")
    hosts = [line.split() for line in lines if line.startswith("a=candidate:")]
    if family is None or any(bits[4] == public_ip for bits in hosts if len(bits) >= 8):
        return sdp
    out: list[str] = []
    # Per media section: extra lines go after its last candidate.
    section: list[str] = []
    seen: set[tuple[str, str, str]] = set()

    def flush() -> None:
        last = max(
            (i for i, line in enumerate(section) if line.startswith("a=candidate:")), default=-1
        )
        extra: list[str] = []
        for line in section:
            bits = line.split()
            if not line.startswith("a=candidate:") or len(bits) < 8 or bits[7] != "host":
                continue
            if _family(bits[4]) != family:
                continue
            key = (bits[1], bits[2].lower(), bits[5])  # component, protocol, port
            if key in seen:
                continue
            seen.add(key)
            foundation = "pub" + bits[0][len("a=candidate:") :]
            priority = max((number(bits[3]) or 2) - 1, 1)
            extra.append(
                f"a=candidate:{foundation} {bits[1]} {bits[2]} {priority} "
                f"{public_ip} {bits[5]} typ host"
            )
        out.extend(section[: last + 1] + extra + section[last + 1 :])
        section.clear()
        seen.clear()

    for line in lines:
        if line.startswith("m="):
            flush()
        section.append(line)
    flush()
    return "\r\n".join(out)


BROWSER_CODECS = ("PCMU", "PCMA", "opus", "G722")
"What the browser leg may answer: what the media core relays or converts."


def codec_preferences(trunk_codecs: Sequence[str]) -> list[RTCRtpCodecCapability]:
    """aiortc's audio codecs, the trunk's first (in SIP_CODECS order), then Opus, then G.711."""
    order = [name.upper() for name in (*trunk_codecs, "opus", "PCMU", "PCMA")]
    capabilities = [
        c
        for c in RTCRtpSender.getCapabilities("audio").codecs
        if c.mimeType.split("/", 1)[-1].upper() in order
    ]
    return sorted(capabilities, key=lambda c: order.index(c.mimeType.split("/", 1)[-1].upper()))


class WebRtcLeg:
    """The browser's peer connection; reports ``connected`` once and ``failed``."""

    def __init__(
        self,
        settings: Settings,
        on_connected: Callable[[], None],
        on_failed: Callable[[], None],
    ) -> None:
        self._public_ip = settings.public_ip
        self._on_connected = on_connected
        self._on_failed = on_failed
        self._trunk_codecs = settings.sip_codecs
        self._connected = False
        self.transport: BrowserTransport | None = None
        self.codec: Codec | None = None
        "The codec of the answer: what the browser sends and expects."
        self._pc = RTCPeerConnection(ice_configuration(settings))
        self._pc.on("connectionstatechange", self._on_state_change)

    @property
    def state(self) -> str:
        return str(self._pc.connectionState)

    async def _on_state_change(self) -> None:
        state = self._pc.connectionState
        if state == "connected" and not self._connected:
            self._connected = True
            self._on_connected()
        elif state == "failed":
            self._on_failed()

    async def answer(
        self,
        offer_sdp: str,
        on_rtp: PacketSink,
        on_rtcp: PacketSink,
        trunk_codecs: Sequence[str] | None = None,
    ) -> str:
        """Our SDP answer, with every candidate gathered; ``BadOfferError`` if unusable.

        From then on the browser's decrypted RTP and RTCP go to ``on_rtp`` and
        ``on_rtcp``, and ``transport`` sends to it.
        """
        if not offer_sdp.lstrip().startswith("v=0"):
            # aiortc's parser skips unknown lines, so garbage would pass as "no media".
            raise BadOfferError("invalid WebRTC offer: not SDP")
        # Our transceiver, made first, takes the offer's audio with our codec order.
        audio = self._pc.addTransceiver("audio", direction="sendrecv")
        audio.setCodecPreferences(codec_preferences(trunk_codecs or self._trunk_codecs))
        try:
            offer = RTCSessionDescription(sdp=offer_sdp, type="offer")
            await self._pc.setRemoteDescription(offer)
        except Exception as exc:  # aiortc raises many kinds on a bad offer
            raise BadOfferError(f"invalid WebRTC offer: {exc or type(exc).__name__}") from exc
        if audio.mid is None:
            raise BadOfferError("the WebRTC offer has no audio")
        try:
            # An offer whose BUNDLE group names no m-line of ours leaves the
            # transceiver without a transport: that too is a bad offer.
            self.transport = BrowserTransport(audio, on_rtp, on_rtcp)
            answer = await self._pc.createAnswer()
        except Exception as exc:
            raise BadOfferError(f"cannot answer the WebRTC offer: {exc}") from exc
        # Gathers all candidates before returning: the answer needs no trickle.
        await self._pc.setLocalDescription(answer)
        sdp = str(self._pc.localDescription.sdp)
        self.codec = first_codec(sdp)
        if self.codec is None:
            raise BadOfferError("the WebRTC offer has no codec in common (Opus, PCMU, PCMA)")
        if self._public_ip:
            sdp = add_public_candidates(sdp, self._public_ip)
        return sdp

    async def add_candidate(
        self, line: str, sdp_mid: str | None, sdp_mline_index: int | None
    ) -> None:
        """Apply a trickled browser candidate; an empty line ends the candidates."""
        text = line.strip().removeprefix("a=").removeprefix("candidate:")
        try:
            if not text:
                await self._pc.addIceCandidate(None)
                return
            candidate = candidate_from_sdp(text)
            candidate.sdpMid = sdp_mid
            candidate.sdpMLineIndex = (
                0 if sdp_mid is None and sdp_mline_index is None else sdp_mline_index
            )
            await self._pc.addIceCandidate(candidate)
        except Exception as exc:
            log.debug("ignored ICE candidate %r: %s", line, exc)

    async def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        try:
            await self._pc.close()
        except AttributeError as exc:
            # aiortc's close() trips over a transceiver that a bad offer (a BUNDLE
            # group naming no m-line of ours) left without a transport.
            log.debug("peer connection closed half-way: %s", exc)
