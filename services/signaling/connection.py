"""Drives one ``BrowserSession`` from a WebSocket, the bus and one timer.

Only I/O lives here: frames go into the session, the session's actions come
out and are carried out in order, and a single ``loop.call_at`` timer is
re-armed from ``get_timer()`` after every step.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Protocol

from aiohttp import WSMsgType, web
from nats.aio.subscription import Subscription
from opentelemetry import context as otel_context
from opentelemetry import trace

from proto import errors
from proto.events import (
    AnswerRequested,
    AnyEvent,
    CallEnded,
    CallRequested,
    DialRequested,
    HangupRequested,
)
from services.common.bus import Bus
from services.common.fleet import records
from services.common.fleet.member import FleetMember
from services.common.logs import call_context
from services.common.metrics import Metrics
from services.common.telemetry import tracer
from services.signaling import messages, pickup
from services.signaling.actions import (
    Action,
    Admit,
    Audit,
    Close,
    Publish,
    Release,
    SendMessage,
    Subscribe,
    Unsubscribe,
)
from services.signaling.audit import AuditLog
from services.signaling.inbound import InboundLink
from services.signaling.session import BrowserSession
from services.signaling.states import END_STATES

log = logging.getLogger(__name__)

_tracer = tracer("bridge.signaling")

DRAINING = "draining"
"Error code of an offer refused because this signaling instance is draining."

REFUSALS = frozenset(
    {errors.UNAUTHORIZED, errors.FORBIDDEN_DESTINATION, errors.RATE_LIMITED, errors.TOO_MANY_CALLS}
)
"Error codes counted in ``bridge_refused_total{reason}``."


class CallLimits(Protocol):
    """What the connection needs of the abuse limits (``services.signaling.abuse_limits``)."""

    async def admit_call(
        self, identity: str | None, source: str, call_id: str, max_calls: int | None = None
    ) -> str | None: ...

    async def release_call(self, identity: str | None, call_id: str) -> None: ...


class BrowserConnection:
    """One browser WebSocket and the session behind it."""

    def __init__(
        self,
        session: BrowserSession,
        bus: Bus,
        ws: web.WebSocketResponse,
        on_finished: Callable[[BrowserConnection], None],
        *,
        draining: asyncio.Event | None = None,
        metrics: Metrics | None = None,
        fleet: FleetMember | None = None,
        limits: CallLimits | None = None,
        audit: AuditLog | None = None,
        inbound: InboundLink | None = None,
    ) -> None:
        self.session = session
        self._inbound = inbound
        if inbound is not None:
            inbound.attach(session.socket_id, self)
        self._limits = limits
        self._audit = audit or AuditLog()
        self._fleet = fleet
        self._draining = draining or asyncio.Event()
        self._metrics = metrics
        self._bus = bus
        self._ws = ws
        self._on_finished = on_finished
        self._loop = asyncio.get_running_loop()
        self._lock = asyncio.Lock()
        self._subscriptions: dict[str, Subscription] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._span: trace.Span | None = None
        self._span_call_id: str | None = None
        self._offer_at = 0.0
        self.finished = asyncio.Event()
        "Set once the session reached an end state and everything is released."

    async def run(self) -> None:
        """Feed the socket's frames to the session until the socket closes."""
        try:
            async for msg in self._ws:
                if msg.type == WSMsgType.TEXT:
                    if self._draining.is_set() and _is_offer(msg.data):
                        await self._refuse_offer()
                        continue
                    self.session.receive_text(msg.data, self._loop.time())
                elif msg.type == WSMsgType.BINARY:
                    self.session.receive_binary(self._loop.time())
                elif msg.type == WSMsgType.ERROR:
                    log.info("websocket error: %s", self._ws.exception())
                await self._flush()
        finally:
            self.session.socket_closed(self._loop.time())
            await self._flush()

    @property
    def in_call(self) -> bool:
        """True while the session holds a call."""
        return self.session.call_id is not None

    async def _refuse_offer(self) -> None:
        # The session would take the offer: this instance takes no new call.
        error = messages.error(DRAINING, "this server is shutting down; connect again")
        async with self._lock:
            if not self._ws.closed:
                await self._ws.send_str(json.dumps(error))

    def end_by_operator(self) -> bool:
        """``bridge calls hangup``: end the session's call; False when it holds none."""
        ended = self.session.end_by_operator(self._loop.time())
        self._schedule_flush()
        return ended

    def deliver(self, message: messages.Outgoing) -> None:
        """A message of a call ringing this socket (``incoming``, its ``ended``)."""
        self.session.deliver(message)
        self._schedule_flush()

    def forward(self, event: AnyEvent) -> None:
        """An event of the call this socket accepted, heard by its ring (``ringing.Forward``)."""
        self.session.handle_event(event, self._loop.time())
        self._schedule_flush()

    def shutdown(self) -> None:
        """The service is stopping: let the session end its call and close."""
        self.session.shutdown(self._loop.time())
        self._schedule_flush()

    async def abort(self) -> None:
        """Release everything now, whatever state the session is in."""
        await self._ws.close()
        await self._release()

    # --- carrying out actions ----------------------------------------------------

    async def _on_event(self, event: AnyEvent) -> None:
        self.session.handle_event(event, self._loop.time())
        # Not awaited here: an Unsubscribe of this very subscription would
        # cancel the task running this handler halfway through the actions.
        self._schedule_flush()

    def _on_timer(self) -> None:
        self._timer = None
        self.session.handle_timer(self._loop.time())
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        task = self._loop.create_task(self._flush())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush(self) -> None:
        # One flusher at a time keeps actions in the order the session made them.
        async with self._lock:
            while actions := self.session.pop_actions():
                with call_context(self.session.call_id or self._span_call_id):
                    for action in actions:
                        await self._perform(action)
            if self.session.call_id is None:
                self._end_span()
            self._arm_timer()
            if self.session.state in END_STATES and not self.finished.is_set():
                await self._release()
        if self._inbound is not None:
            self._inbound.kick()  # the session may have asked the switchboard something

    async def _perform(self, action: Action) -> None:
        try:
            if isinstance(action, SendMessage):
                if not self._ws.closed:
                    await self._ws.send_str(json.dumps(action.message))
                self._trace_message(action.message)
                self._count_refusal(action.message)
            elif isinstance(action, Admit):
                await self._admit(action)
            elif isinstance(action, Release):
                if self._limits is not None:
                    await self._limits.release_call(action.identity, action.call_id)
            elif isinstance(action, Audit):
                self._audit.write(action.record)
            elif isinstance(action, Publish):
                span = self._call_span(action.event.call_id)
                if isinstance(action.event, HangupRequested):
                    span.add_event("hangup", {"bridge.cause": action.event.cause})
                with trace.use_span(span, end_on_exit=False):
                    await self._record_before(action.event)
                    await self._bus.publish(action.subject, action.event)
                if isinstance(action.event, CallEnded) and self._fleet is not None:
                    await self._fleet.delete(action.event.call_id)
            elif isinstance(action, Subscribe):
                self._subscriptions[action.subject] = await self._bus.subscribe(
                    action.subject, self._on_event
                )
            elif isinstance(action, Unsubscribe):
                subscription = self._subscriptions.pop(action.subject, None)
                if subscription is not None:
                    await subscription.unsubscribe()
            elif isinstance(action, Close):
                await self._ws.close(code=action.code, message=action.reason.encode())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one failed action must not stop the rest
            # A dead socket or bus: the session's timers take it from here.
            log.warning("call %s: %s failed: %s", self.session.call_id, type(action).__name__, exc)

    async def _admit(self, action: Admit) -> None:
        refusal = None
        if self._limits is not None:
            refusal = await self._limits.admit_call(
                action.identity, action.source, action.call_id, action.max_calls
            )
        taken = self.session.admitted(action.call_id, refusal, self._loop.time())
        if not taken and refusal is None and self._limits is not None:
            await self._limits.release_call(action.identity, action.call_id)

    def _count_refusal(self, message: messages.Outgoing) -> None:
        code = message.get("code")
        if self._metrics is not None and message.get("type") == "error" and code in REFUSALS:
            self._metrics.refused.labels(reason=str(code)).inc()

    async def _record_before(self, event: AnyEvent) -> None:
        """The registry write owed before publishing ``event`` (best effort)."""
        fleet = self._fleet
        if fleet is None:
            return
        if isinstance(event, CallRequested) and event.direction == "inbound":
            # The SIP agent may have written the call's record as it rang: add to it.
            fresh = pickup.call_record(event, self.session.attempt, time.time())
            await fleet.create(fresh)
            await fleet.update(event.call_id, lambda r: pickup.joined(r, fresh))
        elif isinstance(event, CallRequested):
            record = records.requested(
                event.call_id,
                event.signaling_id,
                time.time(),
                identity=self.session.identity,
                callee=event.destination,
                trunk=event.trunk,
            )
            await fleet.create(record)
        elif isinstance(event, DialRequested | AnswerRequested):
            media_id = event.media_id
            await fleet.update(
                event.call_id, lambda r: records.media_prepared(r, media_id, time.time())
            )

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.session.get_timer()
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _call_span(self, call_id: str) -> trace.Span:
        """The call's span, started with its first event (the offer's CallRequested).

        A root span: one call, one trace, whatever the socket did before.
        """
        if self._span is None or self._span_call_id != call_id:
            self._end_span()
            self._span = _tracer.start_span(
                "call",
                context=otel_context.Context(),
                attributes={
                    "bridge.call_id": call_id,
                    "bridge.destination": self.session.destination,
                },
            )
            self._span_call_id = call_id
            self._offer_at = self._loop.time()
        return self._span

    def _trace_message(self, message: messages.Outgoing) -> None:
        """What the browser is told, as events of the call span; set-up time on connect."""
        span, kind = self._span, message.get("type")
        if span is None or kind not in ("answer", "ringing", "connected", "ended", "error"):
            return
        if kind == "connected" and self._metrics is not None:
            self._metrics.call_setup_seconds.observe(self._loop.time() - self._offer_at)
        if kind == "ended":
            span.set_attribute("bridge.cause", str(message.get("cause")))
            if message.get("status") is not None:
                span.set_attribute("sip.status", int(str(message.get("status"))))
        elif kind == "error":
            span.add_event("error", {"bridge.error": str(message.get("code"))})
        else:
            span.add_event(str(kind))

    def _end_span(self) -> None:
        if self._span is not None:
            self._span.end()
            self._span = None
            self._span_call_id = None

    async def _release(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for subscription in self._subscriptions.values():
            try:
                await subscription.unsubscribe()
            except Exception as exc:  # best effort on the way out
                log.debug("unsubscribe failed: %s", exc)
        self._subscriptions.clear()
        self._end_span()
        if self._inbound is not None:
            self._inbound.detach(self.session.socket_id)
        if not self.finished.is_set():
            self.finished.set()
            self._on_finished(self)


def _is_offer(text: str) -> bool:
    """True if a text frame starts a call: an ``offer``, or the ``accept`` of a ringing one
    (anything else goes to the session)."""
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):
        return False
    return isinstance(message, dict) and message.get("type") in ("offer", "accept")
