"""One call's media on the bus: its events, the watchdog, DTMF, its figures, the release.

Set-up (the browser's answer, the trunk port, our offer or our answer to the
trunk's offer) is ``CallSetup``'s; each SDP the SIP agent reports for the
trunk (its answer, early media, moves, hold) is applied by ``TrunkUpdates``;
the decisions about the call's packets are ``MediaCore``'s and moving them
is ``MediaPath``'s. This class routes the call's events to them and publishes
what they report (the set-up's outcome, digits, a media timeout, the call's
figures).

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
    ProgressReceived,
    SessionUpdated,
)
from services.common.bus import Bus, Handler
from services.common.metrics import Metrics
from services.common.settings import Settings
from services.common.telemetry import tracer
from services.media.call_report import CallReporter
from services.media.call_setup import CallSetup
from services.media.core import CoreEvent, DigitReceived, MediaTimedOut
from services.media.path import MediaPath
from services.media.ports import PortAllocator
from services.media.trunk_updates import TrunkUpdates

log = logging.getLogger(__name__)

RFC4733 = "rfc4733"
"``InviteSent.dtmf`` when DTMF goes in RTP (by us), if the answer has telephone-event."
WATCHDOG_MARGIN = 5.0
"Seconds of slack over the longest set-up signaling and the SIP agent may take."

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
        self._on_released = on_released
        self._subject = subjects.call_events(call_id, "media")
        self._lock = asyncio.Lock()
        self._ending = False
        self._released = False
        self._end_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._subscriptions: list[Subscription] = []
        self._watchdog: asyncio.TimerHandle | None = None
        self._path = MediaPath(call_id, self._on_core_event)
        self._loop = asyncio.get_running_loop()
        self._setup = CallSetup(
            call_id,
            settings,
            ports,
            advertised_address,
            self._path,
            self._on_connected,
            self._on_failed,
        )
        self._trunk = TrunkUpdates(call_id, self._path, self._loop.time)
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
                outcome = await self._setup.prepare(request)
            if isinstance(outcome, MediaFailed):
                span.set_status(trace.StatusCode.ERROR, outcome.code)
                span.set_attribute("bridge.error", outcome.code)
            else:
                span.set_attribute("bridge.browser_codec", self._setup.browser_codec)
                span.set_attribute("bridge.rtp_port", self._setup.port or 0)
            if self._ending:
                return
            await self._publish(outcome)
        if isinstance(outcome, MediaFailed):
            await self.release(f"set-up failed: {outcome.code}")

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
            webrtc = self._setup.webrtc
            if webrtc is not None and not self._ending:
                await webrtc.add_candidate(event.candidate, event.sdp_mid, event.sdp_mline_index)

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
            async with self._lock:
                if self._path.core is None or self._ending:
                    return
                setup = self._setup
                if not await self._trunk.apply(
                    sdp, setup.offered, setup.browser_codec, span, early=early, update=update
                ):
                    await self._fail_media()

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
        await self._setup.close()  # the browser leg, the sockets, the port
        self._on_released(self)
        core = self._path.core
        if core is not None:
            self._reporter.log_end(core, reason, self._setup.browser_codec)
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
