"""The sipagent service: ``DialRequested`` from the bus in, a SIP call out; a trunk's call in,
a browser rung.

This is the boundary between the bus and the SIP core: it runs one task per
call (``dialing.py`` for outbound calls, ``answering.py`` for inbound ones,
``follow.py`` for both once the INVITE is out or answered), subscribes each
to its peers' events, makes sure each reports one ``CallEnded``, and hangs
them up when the service stops. The SIP code never sees a bus type.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial

from opentelemetry.trace import Status, StatusCode

from proto import errors, subjects
from proto.events import AnyEvent, CallEnded, DialRequested
from services.common.bus import Bus
from services.common.dialplan import Pattern
from services.common.fleet.member import FleetMember
from services.common.fleet.reaper import SendBye
from services.common.metrics import Metrics
from services.common.providers import Providers
from services.common.telemetry import tracer
from services.sipagent import recovery
from services.sipagent.agent import CallHandle, DialError, SipAgent
from services.sipagent.answering import Answerer
from services.sipagent.call_records import CallRecords
from services.sipagent.call_reports import CallReports
from services.sipagent.dialing import Dialer
from services.sipagent.inbound import InboundDoor
from services.sipagent.live_calls import LiveCalls
from services.sipagent.spans import SipSpans

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 2.0
"Seconds given to calls to end (CANCEL/BYE answered) when the service stops."

TRACER_NAME = "bridge.sipagent"


class SipAgentService:
    """Places the calls of ``DialRequested`` events, rings the trunks' calls, reports both."""

    def __init__(
        self,
        bus: Bus,
        agent: SipAgent,
        instance_id: str,
        *,
        metrics: Metrics | None = None,
        providers: Providers | None = None,
        dial_deny: tuple[Pattern, ...] = (),
        door: InboundDoor | None = None,
    ) -> None:
        """``providers``: the trunks and routes; default: every call to the agent's trunk.
        ``dial_deny``: ``DIAL_DENY``, checked again here with the routes' and trunks' deny
        lists, whatever signaling decided. ``door``: admits the trunks' INVITEs (``inbound.py``);
        the calls it admits reach ``on_inbound_call``."""
        self._door = door
        self._bus = bus
        self._metrics = metrics or Metrics()
        self._agent = agent
        self._records = CallRecords(instance_id, agent.config.transport)
        self._reports = CallReports(bus, self._records)
        self._calls = LiveCalls(self._reports)
        self._dialer = Dialer(
            agent,
            instance_id,
            providers or Providers.single(agent.default_trunk()),
            dial_deny,
            self._calls,
            self._reports,
            self._records,
        )
        self._answerer = Answerer(bus, instance_id, self._calls, self._reports, self._records)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping = False
        self._background: set[asyncio.Task[None]] = set()

    @property
    def active_calls(self) -> int:
        return len(self._tasks)

    def holds(self, call_id: str) -> bool:
        return call_id in self._tasks

    def attach(self, fleet: FleetMember) -> None:
        """Keep the calls' records (dialogs) in ``fleet``'s registry."""
        self._records.fleet = fleet

    async def adopt_bye(self, action: SendBye) -> None:
        """A survivor's duty: BYE in a dead SIP agent's dialog (the reaper reports the end)."""
        try:
            self._agent.adopt_bye(action.call_id, action.dialog)
        except (recovery.RecoveryError, DialError) as exc:
            log.warning("%s: cannot end the dead SIP agent's dialog: %s", action.call_id, exc)

    async def on_work(self, event: AnyEvent) -> None:
        if not isinstance(event, DialRequested):
            log.debug("ignored %s on the work queue", type(event).__name__)
            return
        if self._stopping or event.call_id in self._tasks:
            return
        self._metrics.call_attempts.inc()
        body = partial(self._dialer.place, event)
        self._start(event.call_id, self._dialer.attributes(event), body)

    def close_door(self) -> None:
        """Take no more calls from the trunks (their INVITEs get 503): draining, stopping."""
        if self._door is not None:
            self._door.open = False

    def end_ringing(self, call_id: str, cause: str) -> bool:
        """An operator's hang-up of an inbound call still ringing here (``bridge calls
        hangup``): 480 to the trunk, ``CallEnded`` to the browsers; whether one was."""
        return self._calls.end_ringing(call_id, cause)

    def on_inbound_call(self, handle: CallHandle) -> None:
        """``SipAgent.on_call``: the agent hosts a call ``InboundDoor`` admitted; ring it."""
        call_id = handle.call.call_id
        arrival = self._door.next_arrival() if self._door is not None else None
        while arrival is not None and arrival.call_id != call_id:
            arrival = self._door.next_arrival() if self._door is not None else None
        if arrival is None or self._stopping or call_id in self._tasks:
            handle.reject(503, "Service Unavailable")
            return
        inbox = self._calls.ring(call_id, handle)
        body = partial(self._answerer.answer, arrival, handle, inbox)
        self._start(call_id, self._answerer.attributes(arrival), body)

    async def shutdown(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Hang up every call, give them ``grace`` seconds, then report the rest ended.

        The same ``grace`` also covers SIP clean-up that outlives the reported
        end: the CANCEL owed on a first provisional, the ACK and BYE of a late
        2xx. The agent forgets a call only once that is done.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        self._stopping = True
        self.close_door()
        for call_id in list(self._tasks):
            self._calls.hangup(call_id, errors.NORMAL)
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        for call_id, task in list(self._tasks.items()):
            task.cancel()
            ended = CallEnded(call_id=call_id, cause=errors.INTERNAL, reason="SIP agent stopped")
            await self._reports.publish(ended)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if not await self._agent.wait_idle(deadline - loop.time()):
            log.info("%d call(s) still cleaning up SIP after the grace", self._agent.active_calls)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def _start(
        self,
        call_id: str,
        attributes: dict[str, str],
        body: Callable[[SipSpans], Awaitable[CallEnded]],
    ) -> None:
        self._calls.start(call_id)
        task = asyncio.create_task(self._run(call_id, attributes, body), name=f"call-{call_id}")
        self._tasks[call_id] = task
        self._reports.owe_end(call_id)
        task.add_done_callback(lambda done: self._call_done(call_id, done))

    def _call_done(self, call_id: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(call_id) is task:
            del self._tasks[call_id]
            self._calls.forget(call_id)
        unreported = self._reports.settle(call_id)
        if task.cancelled() or (exc := task.exception()) is None:
            return
        # _run catches what it can; this is for what escapes it (tracing, say).
        log.error("%s: call task failed", call_id, exc_info=exc)
        if unreported:
            ended = CallEnded(call_id=call_id, cause=errors.INTERNAL, reason="SIP agent error")
            publish = asyncio.create_task(self._reports.publish(ended))
            self._background.add(publish)
            publish.add_done_callback(self._background.discard)

    async def _run(
        self,
        call_id: str,
        attributes: dict[str, str],
        body: Callable[[SipSpans], Awaitable[CallEnded]],
    ) -> None:
        """Run one call, outbound or inbound: subscribe to its peers' events, run ``body``
        until the call ends, report the end (``CallEnded``), let go of everything."""
        call_tracer = tracer(TRACER_NAME)
        with call_tracer.start_as_current_span("sipagent.call", attributes=attributes) as span:
            spans = SipSpans(call_tracer, span, attributes)
            self._calls.trace(call_id, spans)
            subscriptions = []
            try:
                try:
                    for source in ("signaling", "media"):
                        subject = subjects.call_events(call_id, source)
                        subscriptions.append(
                            await self._bus.subscribe(subject, self._calls.on_peer_event)
                        )
                    ended = await body(spans)
                except Exception as exc:
                    # A bug must not leave the browser waiting, nor the trunk's side open.
                    log.exception("%s: call failed", call_id)
                    span.record_exception(exc)
                    self._calls.abandon(call_id)
                    ended = CallEnded(
                        call_id=call_id, cause=errors.INTERNAL, reason="SIP agent error"
                    )
                spans.end_invite(ended.status)
                span.set_attribute("bridge.cause", ended.cause)
                if ended.status is not None:
                    span.set_attribute("sip.status", ended.status)
                if ended.cause not in (errors.NORMAL, errors.REMOTE_HANGUP, errors.CANCELLED):
                    span.set_status(Status(StatusCode.ERROR, ended.reason))
                self._metrics.record_outcome(ended.cause, ended.status)
                await self._reports.publish(ended)
            finally:
                spans.end_invite(None)
                self._calls.forget(call_id)
                for subscription in subscriptions:
                    try:
                        await subscription.unsubscribe()
                    except Exception as exc:  # closing is best effort
                        log.debug("unsubscribe failed: %s", exc)
