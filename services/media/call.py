"""One call's media on the bus: set-up, the trunk's SDP, its events, the watchdog, the release.

The decisions about the call's packets are ``MediaCore``'s and moving them
is ``MediaPath``'s; this class answers the browser (``WebRtcLeg``), opens
the trunk port, offers to the trunk (a call out) or answers the trunk's offer
(a call in, ``trunk_answer``), applies each SDP the SIP agent reports
(address, codec, hold, SDES keys) and publishes what the core reports
(digits, a media timeout, the call's figures).

Every operation on a call runs under one lock, in the order events arrive:
a trickled candidate waits for the answer to exist, and a ``CallEnded`` that
arrives during set-up releases the call as soon as set-up stops. ``release``
runs exactly once, always in a task of its own: it unsubscribes the very
subscriptions whose handlers ask for it, which would cancel them mid-way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any

from nats.aio.subscription import Subscription
from opentelemetry import trace

from proto import errors, subjects
from proto.events import (
    AnyEvent,
    CallAnswered,
    CallEnded,
    CallRequested,
    CallStatsReported,
    DtmfReceived,
    DtmfRequested,
    HangupRequested,
    IceCandidateReceived,
    InviteSent,
    MediaConnected,
    MediaFailed,
    MediaPrepared,
    ProgressReceived,
    SessionUpdated,
)
from services.common.bus import Bus, Handler
from services.common.metrics import Metrics
from services.common.settings import Settings
from services.common.telemetry import tracer
from services.media import sdes
from services.media.addresses import is_unspecified, resolve
from services.media.browser_transport import BrowserTransport
from services.media.call_report import CallReporter
from services.media.core import CoreEvent, DigitReceived, MediaCore, MediaTimedOut
from services.media.path import MediaPath
from services.media.ports import NoPortsError, PortAllocator
from services.media.sdp import (
    Codec,
    SdpError,
    build_offer,
    parse_answer,
    trunk_codecs,
)
from services.media.transcode import UnsupportedCodecError
from services.media.trunk_answer import TrunkOffer, choose_codec, read_offer
from services.media.trunk_answer import build_answer as build_trunk_answer
from services.media.webrtc_leg import BadOfferError, WebRtcLeg

log = logging.getLogger(__name__)

RFC4733 = "rfc4733"
"``InviteSent.dtmf`` when DTMF goes in RTP (by us), if the answer has telephone-event."
WATCHDOG_MARGIN = 5.0
"Seconds of slack over the longest set-up signaling and the SIP agent may take."
CLOSE_TIMEOUT = 5.0

_tracer = tracer("bridge.media")


class MediaCall:
    """The media of one call, owned by this worker from ``CallRequested`` to release."""

    def __init__(
        self,
        call_id: str,
        settings: Settings,
        bus: Bus,
        ports: PortAllocator,
        advertised_address: str,
        on_released: Callable[[MediaCall], None],
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self.call_id = call_id
        self._settings = settings
        self._bus = bus
        self._ports = ports
        self._address = advertised_address
        self._on_released = on_released
        self._subject = subjects.call_events(call_id, "media")
        self._lock = asyncio.Lock()
        self._ending = False
        self._released = False
        self._end_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._subscriptions: list[Subscription] = []
        self._watchdog: asyncio.TimerHandle | None = None
        self._port: int | None = None
        self._sockets: tuple[socket.socket, ...] = ()
        "RTP and RTCP, bound by the allocator; closed here too, in case the path never took them."
        self._webrtc: WebRtcLeg | None = None
        self._path = MediaPath(call_id, self._on_core_event)
        self._offered: tuple[Codec, ...] = ()
        self._loop = asyncio.get_running_loop()
        self._browser_codec = "?"
        self._answered = False
        self._dtmf_mode = RFC4733
        "How the SIP agent told us DTMF goes to this trunk (``InviteSent.dtmf``)."
        self._reporter = CallReporter(call_id, metrics)
        self._signaling_handlers: dict[type, Callable[[Any], Coroutine[Any, Any, None]]] = {
            IceCandidateReceived: self._handle_ice_candidate,
            HangupRequested: self._handle_hangup,
            CallEnded: self._handle_call_ended,
            DtmfRequested: self._handle_dtmf_requested,
        }
        self._sipagent_handlers: dict[type, Callable[[Any], Coroutine[Any, Any, None]]] = {
            InviteSent: self._handle_invite_sent,
            ProgressReceived: self._handle_progress,
            CallAnswered: self._handle_answered,
            SessionUpdated: self._handle_session_updated,
            CallEnded: self._handle_call_ended,
        }

    # -- set-up ----------------------------------------------------------------

    async def setup(self, request: CallRequested) -> None:
        """Subscribe, answer the browser, open the trunk port, publish the outcome."""
        settings = self._settings
        try:
            await self._subscribe(
                subjects.call_events(self.call_id, "signaling"), self._from_signaling
            )
            await self._subscribe(
                subjects.call_events(self.call_id, "sipagent"), self._from_sipagent
            )
        except Exception:
            log.exception("call %s: cannot subscribe to its events", self.call_id)
            await self._publish(
                MediaFailed(call_id=self.call_id, code=errors.INTERNAL, reason="internal error")
            )
            await self.release("subscribe failed")
            return
        # Signaling waits SETUP_TIMEOUT for us and again for the SIP agent, then
        # the SIP agent up to INVITE_TIMEOUT for an answer.
        self._arm_watchdog(settings.invite_timeout + 2 * settings.setup_timeout + WATCHDOG_MARGIN)
        with _tracer.start_as_current_span(
            "media.prepare",
            attributes={"bridge.call_id": self.call_id, "bridge.media_id": settings.instance_id},
        ) as span:
            async with self._lock:
                if self._ending:
                    return
                outcome = await self._prepare(request)
            if isinstance(outcome, MediaFailed):
                span.set_status(trace.StatusCode.ERROR, outcome.code)
                span.set_attribute("bridge.error", outcome.code)
            else:
                span.set_attribute("bridge.browser_codec", self._browser_codec)
                span.set_attribute("bridge.rtp_port", self._port or 0)
            if self._ending:
                return
            await self._publish(outcome)
        if isinstance(outcome, MediaFailed):
            await self.release(f"set-up failed: {outcome.code}")

    async def _prepare(self, request: CallRequested) -> MediaPrepared | MediaFailed:
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
            self._port, rtp, rtcp = self._ports.allocate()
            self._sockets = (rtp, rtcp)
            await self._path.open(rtp, rtcp)
            self._webrtc = WebRtcLeg(settings, self._on_connected, self._on_failed)
            answer_sdp = await self._webrtc.answer(
                request.offer_sdp, self._path.from_browser, self._path.from_browser_rtcp, codecs
            )
            codec, transport = self._webrtc.codec, self._webrtc.transport
            assert codec is not None and transport is not None
        except (NoPortsError, BadOfferError) as exc:
            log.warning("call %s: %s", self.call_id, exc)
            return MediaFailed(call_id=self.call_id, code=exc.code, reason=str(exc))
        except Exception:
            log.exception("call %s: media set-up failed", self.call_id)
            return MediaFailed(call_id=self.call_id, code=errors.INTERNAL, reason="internal error")
        self._browser_codec = codec.name
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
        self._offered = trunk_codecs(codec, codecs)
        offer = build_offer(
            self._address,
            self._port,
            secrets.randbits(62),
            self._offered,
            crypto=self._path.crypto,
            secure=srtp == sdes.REQUIRED,
        )
        log.debug("call %s: prepared, trunk port %d, SRTP %s", self.call_id, self._port, srtp)
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
        assert self._port is not None
        codec = choose_codec(offer, core.browser_codec)
        key = sdes.answer(offer.crypto[0]) if offer.crypto else None
        self._path.start(core, transport, srtp, (key,) if key is not None else ())
        self._offered = (codec,)
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
            offer, codec, self._address, self._port, secrets.randbits(62), key
        )
        log.info(
            "call %s media started: trunk %s/%d at %s:%d (inbound%s), browser %s, %s",
            self.call_id,
            codec.name,
            codec.payload_type,
            host,
            offer.port,
            ", on hold" if offer.held else "",
            self._browser_codec,
            "passthrough" if core.passthrough else "transcoding",
        )
        return MediaPrepared(
            call_id=self.call_id,
            media_id=self._settings.instance_id,
            answer_sdp=answer_sdp,
            trunk_offer_sdp="",
            trunk_answer_sdp=answer,
        )

    # -- events ----------------------------------------------------------------

    async def _from_signaling(self, event: AnyEvent) -> None:
        handler = self._signaling_handlers.get(type(event))
        if handler is not None and event.call_id == self.call_id:
            await handler(event)

    async def _from_sipagent(self, event: AnyEvent) -> None:
        handler = self._sipagent_handlers.get(type(event))
        if handler is not None and event.call_id == self.call_id:
            await handler(event)

    async def _handle_ice_candidate(self, event: IceCandidateReceived) -> None:
        async with self._lock:
            if self._webrtc is not None and not self._ending:
                await self._webrtc.add_candidate(
                    event.candidate, event.sdp_mid, event.sdp_mline_index
                )

    async def _handle_hangup(self, event: HangupRequested) -> None:
        self.end(f"hangup requested ({event.cause})")

    async def _handle_call_ended(self, event: CallEnded) -> None:
        self.end(f"call ended ({event.cause})")

    async def _handle_invite_sent(self, event: InviteSent) -> None:
        self._dtmf_mode = event.dtmf

    async def _handle_dtmf_requested(self, event: DtmfRequested) -> None:
        # The SIP agent sends INFO instead when the mode is ``info`` or the
        # answer has no telephone-event: the same rule, so exactly one of us sends.
        core = self._path.core
        if core is None or self._ending or self._dtmf_mode != RFC4733:
            return
        if core.dtmf_payload_type is None:
            log.debug(
                "call %s: no telephone-event in the answer; DTMF left to SIP INFO", self.call_id
            )
        elif core.send_dtmf(event.digits, event.duration_ms, self._loop.time()):
            # How many, never which: digits may be a PIN.
            log.info("call %s: DTMF %d digit(s) as RFC 4733", self.call_id, len(event.digits))
            self._path.arm_timer()
        else:
            log.info("call %s: DTMF %d digit(s) not sent: on hold", self.call_id, len(event.digits))

    async def _handle_session_updated(self, event: SessionUpdated) -> None:
        await self._apply_trunk_answer(event.remote_sdp, early=False, update=event)

    async def _handle_progress(self, event: ProgressReceived) -> None:
        if event.early_sdp:
            await self._apply_trunk_answer(event.early_sdp, early=True)

    async def _handle_answered(self, event: CallAnswered) -> None:
        self._answered = True
        self._cancel_watchdog()
        await self._apply_trunk_answer(event.answer_sdp, early=False)
        core = self._path.core
        if core is not None and not self._ending:
            core.answered(self._loop.time())
            self._path.arm_timer()

    async def _apply_trunk_answer(
        self, sdp: str, early: bool, update: SessionUpdated | None = None
    ) -> None:
        with _tracer.start_as_current_span(
            "media.answer" if update is None else "media.update",
            attributes={"bridge.call_id": self.call_id, "bridge.early": early},
        ) as span:
            await self._apply_trunk_answer_traced(sdp, early, span, update)

    async def _apply_trunk_answer_traced(
        self, sdp: str, early: bool, span: trace.Span, update: SessionUpdated | None
    ) -> None:
        async with self._lock:
            core = self._path.core
            if core is None or self._ending:
                return
            try:
                media = parse_answer(sdp, self._offered)
                host = await resolve(media.address, media.port)
            except (SdpError, OSError) as exc:
                if update is not None:
                    # The SIP agent accepted it; keep the media as it was.
                    log.warning("call %s: unusable updated trunk SDP: %s", self.call_id, exc)
                    return
                log.warning("call %s: unusable trunk SDP: %s", self.call_id, exc)
                await self._fail_media()
                return
            if not self._path.key(media, update is not None):
                if update is None:
                    await self._fail_media()
                return
            first = core.trunk_codec is None
            remote = (host, media.port)
            now = self._loop.time()
            if update is not None:
                answered = core.answered_remote
                if answered is not None and is_unspecified(host):
                    # RFC 2543 hold (c=0.0.0.0): no new address, keep the old one.
                    remote = answered
                held = update.local_hold or update.remote_hold
                if held != core.held:
                    log.info(
                        "call %s media %s (local hold %s, remote hold %s)",
                        self.call_id,
                        "on hold" if held else "resumed",
                        update.local_hold,
                        update.remote_hold,
                    )
                core.set_hold(held, now)
            try:
                moved = core.apply_trunk_answer(remote, media.codec, media.dtmf_pt, now)
            except UnsupportedCodecError as exc:
                log.warning("call %s: %s", self.call_id, exc)
                if update is None:
                    await self._fail_media()
                return
            moved = moved and not first
            self._path.arm_timer()
        span.set_attribute("bridge.codec", media.codec.name)
        span.set_attribute("bridge.browser_codec", self._browser_codec)
        span.set_attribute("bridge.passthrough", bool(core.passthrough))
        if first:
            log.info(
                "call %s media started: trunk %s/%d at %s:%d%s, browser %s, %s",
                self.call_id,
                media.codec.name,
                media.codec.payload_type,
                host,
                media.port,
                " (early)" if early else "",
                self._browser_codec,
                "passthrough" if core.passthrough else "transcoding",
            )
        elif moved:
            log.info(
                "call %s media moved: trunk %s/%d at %s:%d",
                self.call_id,
                media.codec.name,
                media.codec.payload_type,
                host,
                media.port,
            )

    def _on_core_event(self, event: CoreEvent) -> None:
        if isinstance(event, DigitReceived):
            self._spawn(
                self._publish(DtmfReceived(call_id=self.call_id, digit=event.digit, method=RFC4733))
            )
        elif isinstance(event, MediaTimedOut):
            log.warning(
                "call %s: no RTP from the %s for %.1f s: ending the call",
                self.call_id,
                event.leg,
                event.seconds,
            )
            self._spawn(self._fail_media(errors.MEDIA_TIMEOUT))

    # -- browser leg callbacks ---------------------------------------------------

    def _on_connected(self) -> None:
        self._spawn(self._publish(MediaConnected(call_id=self.call_id)))

    def _on_failed(self) -> None:
        log.warning("call %s: WebRTC connection failed", self.call_id)
        self._spawn(self._fail_media())

    async def _fail_media(self, cause: str = errors.MEDIA_FAILED) -> None:
        """Ask for the call to end; release anyway if nobody ends it soon."""
        if self._ending:
            return
        await self._publish(HangupRequested(call_id=self.call_id, cause=cause))
        self._arm_watchdog(self._settings.setup_timeout)

    async def _subscribe(self, subject: str, handler: Handler) -> None:
        subscription = await self._bus.subscribe(subject, handler)
        if self._released:
            # Ended while subscribing: release() has already run and cleared the list.
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
            return
        self._subscriptions.append(subscription)

    # -- timers and tasks ----------------------------------------------------------

    def _arm_watchdog(self, delay: float) -> None:
        self._cancel_watchdog()
        loop = asyncio.get_running_loop()
        self._watchdog = loop.call_later(delay, self._on_watchdog)

    def _on_watchdog(self) -> None:
        # A SIP agent may still hold the call: ask it to hang up, then let go.
        self._spawn(self._publish(HangupRequested(call_id=self.call_id, cause=errors.MEDIA_FAILED)))
        self.end("watchdog expired")

    def _cancel_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish(self, event: AnyEvent) -> None:
        try:
            await self._bus.publish(self._subject, event)
        except Exception as exc:
            log.warning("call %s: cannot publish %s: %s", self.call_id, type(event).__name__, exc)

    # -- release -------------------------------------------------------------------

    def end(self, reason: str) -> None:
        """Release the call in a task of its own (safe from any callback)."""
        self._ending = True
        if self._end_task is None:
            self._end_task = asyncio.create_task(self.release(reason))

    async def release(self, reason: str) -> None:
        """Free everything the call holds, exactly once."""
        self._ending = True
        async with self._lock:
            if self._released:
                return
            self._released = True
        self._cancel_watchdog()
        for subscription in self._subscriptions:
            with contextlib.suppress(Exception):  # closed or draining bus: nothing to undo
                await subscription.unsubscribe()
        self._subscriptions.clear()
        self._path.close()  # its timer, and the trunk sockets it served
        if self._webrtc is not None:
            try:
                await asyncio.wait_for(self._webrtc.close(), CLOSE_TIMEOUT)
            except Exception as exc:
                log.warning("call %s: closing the peer connection: %s", self.call_id, exc)
        for sock in self._sockets:
            sock.close()  # a no-op for those the path's sockets closed
        if self._port is not None:
            self._ports.release(self._port)
        self._on_released(self)
        core = self._path.core
        if core is not None:
            self._reporter.log_end(core, reason, self._browser_codec)
            await self._publish(self._reporter.report(core, final=True))
            core.close()
        else:
            log.info("call %s media ended: %s (no media)", self.call_id, reason)

    def report(self) -> CallStatsReported | None:
        """Publish the call's figures and add them to the metrics (every few seconds).

        The figures published; None before the browser leg is answered or once ending.
        """
        core = self._path.core
        if core is None or self._ending:
            return None
        event = self._reporter.report(core, final=False)
        self._spawn(self._publish(event))
        return event
