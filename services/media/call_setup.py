"""Setting up one call's media: the browser's answer, the trunk port, our offer or answer.

A call out: the browser's offer is answered (``WebRtcLeg``), the trunk port
opened, and the trunk offered the codecs it may take (``build_offer``); the
trunk's answer comes later (``trunk_updates``). A call in: the trunk offered
first (``CallRequested.trunk_offer_sdp``); the browser's answer prefers the
trunk's codecs so the audio passes through, and the trunk gets our answer
(``trunk_answer``), which makes its offer the trunk's SDP from then on.

``CallSetup`` holds what set-up took (the trunk port and its sockets, the
browser leg) until ``close``, whether set-up succeeded or not.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import time
from collections.abc import Callable

from proto import errors
from proto.events import CallRequested, MediaFailed, MediaPrepared
from services.common.settings import Settings
from services.media import sdes
from services.media.addresses import resolve
from services.media.browser_transport import BrowserTransport
from services.media.core import MediaCore
from services.media.path import MediaPath
from services.media.ports import NoPortsError, PortAllocator
from services.media.sdp import Codec, SdpError, build_offer, trunk_codecs
from services.media.transcode import UnsupportedCodecError
from services.media.trunk_answer import TrunkOffer, choose_codec, read_offer
from services.media.trunk_answer import build_answer as build_trunk_answer
from services.media.webrtc_leg import BadOfferError, WebRtcLeg

log = logging.getLogger("services.media.call")

CLOSE_TIMEOUT = 5.0
"Seconds the browser leg's peer connection gets to close."


class CallSetup:
    """Answers the browser and offers to (or answers) the trunk, for one call."""

    def __init__(
        self,
        call_id: str,
        settings: Settings,
        ports: PortAllocator,
        advertised_address: str,
        path: MediaPath,
        on_connected: Callable[[], None],
        on_failed: Callable[[], None],
    ) -> None:
        self.call_id = call_id
        self._settings = settings
        self._ports = ports
        self._address = advertised_address
        self._path = path
        self._on_connected = on_connected
        self._on_failed = on_failed
        self._loop = asyncio.get_running_loop()
        self._sockets: tuple[socket.socket, ...] = ()
        "RTP and RTCP, bound by the allocator; closed here too, in case the path never took them."
        self.port: int | None = None
        "The trunk's RTP port of the call, once allocated."
        self.webrtc: WebRtcLeg | None = None
        "The browser leg, once created."
        self.offered: tuple[Codec, ...] = ()
        "The codecs offered to the trunk (the one of our answer, for a call in)."
        self.browser_codec = "?"
        "The codec of the browser's answer, once answered."

    async def prepare(self, request: CallRequested) -> MediaPrepared | MediaFailed:
        """Answer the browser, open the trunk port, and offer to or answer the trunk."""
        settings = self._settings
        trunk = settings.providers.trunks.get(request.trunk) if request.trunk else None
        codecs = (trunk.codecs if trunk is not None else ()) or settings.sip_codecs
        srtp = trunk.srtp if trunk is not None else settings.sip_srtp
        inbound: TrunkOffer | None = None
        if request.direction == "inbound":
            try:
                inbound = read_offer(request.trunk_offer_sdp, srtp)
                trunk_host = await resolve(inbound.address, inbound.port)
            except (SdpError, OSError) as exc:
                code = exc.code if isinstance(exc, SdpError) else errors.BAD_SDP
                log.warning("call %s: cannot answer the trunk's offer: %s", self.call_id, exc)
                return MediaFailed(call_id=self.call_id, code=code, reason=str(exc))
            # The browser's answer prefers what the trunk offered: the audio passes through.
            codecs = inbound.names
        try:
            self.port, rtp, rtcp = self._ports.allocate()
            self._sockets = (rtp, rtcp)
            await self._path.open(rtp, rtcp)
            self.webrtc = WebRtcLeg(settings, self._on_connected, self._on_failed)
            answer_sdp = await self.webrtc.answer(
                request.offer_sdp, self._path.from_browser, self._path.from_browser_rtcp, codecs
            )
            codec, transport = self.webrtc.codec, self.webrtc.transport
            assert codec is not None and transport is not None
        except (NoPortsError, BadOfferError) as exc:
            log.warning("call %s: %s", self.call_id, exc)
            return MediaFailed(call_id=self.call_id, code=exc.code, reason=str(exc))
        except Exception:
            log.exception("call %s: media set-up failed", self.call_id)
            return MediaFailed(call_id=self.call_id, code=errors.INTERNAL, reason="internal error")
        self.browser_codec = codec.name
        now = self._loop.time()
        core = MediaCore(
            codec,
            transport.ssrc,
            rtp_timeout=self._settings.rtp_timeout,
            now=now,
            wall_offset=time.time() - now,
            cname=f"bridge-{self.call_id[:16]}".encode(),
        )
        if inbound is not None:
            return self._answer_trunk(inbound, trunk_host, core, transport, srtp, answer_sdp)
        self._path.start(core, transport, srtp)
        self.offered = trunk_codecs(codec, codecs)
        offer = build_offer(
            self._address,
            self.port,
            secrets.randbits(62),
            self.offered,
            crypto=self._path.crypto,
            secure=srtp == sdes.REQUIRED,
        )
        log.debug("call %s: prepared, trunk port %d, SRTP %s", self.call_id, self.port, srtp)
        return MediaPrepared(
            call_id=self.call_id,
            media_id=self._settings.instance_id,
            answer_sdp=answer_sdp,
            trunk_offer_sdp=offer,
        )

    def _answer_trunk(
        self,
        offer: TrunkOffer,
        host: str,
        core: MediaCore,
        transport: BrowserTransport,
        srtp: str,
        answer_sdp: str,
    ) -> MediaPrepared | MediaFailed:
        """A call in: answer the trunk's offer, which is the trunk's SDP from now on."""
        assert self.port is not None
        codec = choose_codec(offer, core.browser_codec)
        key = sdes.answer(offer.crypto[0]) if offer.crypto else None
        self._path.start(core, transport, srtp, (key,) if key is not None else ())
        self.offered = (codec,)
        media = offer.trunk_media(codec)
        now = self._loop.time()
        try:
            core.apply_trunk_answer((host, offer.port), codec, offer.dtmf_pt, now)
        except UnsupportedCodecError as exc:
            log.warning("call %s: %s", self.call_id, exc)
            return MediaFailed(call_id=self.call_id, code=errors.NO_COMMON_CODEC, reason=str(exc))
        if not self._path.key(media, update=False):
            return MediaFailed(
                call_id=self.call_id, code=errors.BAD_SDP, reason="the trunk's SRTP key is unusable"
            )
        core.set_hold(offer.held, now)
        self._path.arm_timer()
        answer = build_trunk_answer(
            offer, codec, self._address, self.port, secrets.randbits(62), key
        )
        log.info(
            "call %s media started: trunk %s/%d at %s:%d (inbound%s), browser %s, %s",
            self.call_id,
            codec.name,
            codec.payload_type,
            host,
            offer.port,
            ", on hold" if offer.held else "",
            self.browser_codec,
            "passthrough" if core.passthrough else "transcoding",
        )
        return MediaPrepared(
            call_id=self.call_id,
            media_id=self._settings.instance_id,
            answer_sdp=answer_sdp,
            trunk_offer_sdp="",
            trunk_answer_sdp=answer,
        )

    async def close(self) -> None:
        """Close the browser leg and the trunk sockets, give the port back (after the path)."""
        if self.webrtc is not None:
            try:
                await asyncio.wait_for(self.webrtc.close(), CLOSE_TIMEOUT)
            except Exception as exc:
                log.warning("call %s: closing the peer connection: %s", self.call_id, exc)
        for sock in self._sockets:
            sock.close()  # a no-op for those the path's sockets closed
        if self.port is not None:
            self._ports.release(self.port)
