"""The sipagent service: ``DialRequested`` from the bus in, a SIP call out.

This is the boundary between the bus and the SIP core: it turns proto events
into ``SipAgent`` calls and call events back into proto events, and the SIP
code never sees a bus type.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Protocol, runtime_checkable

from nats.aio.msg import Msg
from opentelemetry.trace import Status, StatusCode

from proto import errors, subjects
from proto import registrations as registrations_proto
from proto.events import (
    AcceptRequested,
    AnswerRequested,
    AnyEvent,
    CallAnswered,
    CallClaimed,
    CallEnded,
    DialRequested,
    DtmfReceived,
    DtmfRequested,
    HangupRequested,
    HoldFailed,
    HoldRequested,
    InviteSent,
    MediaFailed,
    ProgressReceived,
    RingingStarted,
    RingingStopped,
    SessionUpdated,
)
from services.common.bus import Bus, drain_subscription
from services.common.custom_headers import HeaderError
from services.common.dialplan import DestinationError, Pattern, denied_by, normalize
from services.common.fleet import records
from services.common.fleet.heartbeat import Load
from services.common.fleet.member import FleetMember
from services.common.fleet.reaper import SendBye
from services.common.lifecycle import Lifecycle
from services.common.metrics import Metrics
from services.common.providers import Providers, Target
from services.common.settings import Settings, SettingsError
from services.common.sip.dialog import Dialog
from services.common.telemetry import tracer
from services.sipagent import recovery
from services.sipagent.agent import (
    AgentConfig,
    CallHandle,
    DialError,
    SipAgent,
    UnreachableError,
    check_destination,
)
from services.sipagent.events import (
    Answered,
    DtmfIn,
    Ended,
    HoldRefused,
    Progress,
    SessionChanged,
)
from services.sipagent.inbound import (
    Arrival,
    DigestTrunks,
    InboundDoor,
    answering_record,
    inbound_calls,
    ringing_record,
)
from services.sipagent.offer import restrict_codecs
from services.sipagent.ringing import Answer, Publish, Reject, Ring, Ringing
from services.sipagent.spans import SipSpans

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 2.0
"Seconds given to calls to end (CANCEL/BYE answered) when the service stops."
UNREGISTER_GRACE = 5.0
"Seconds given to the REGISTERs with ``Expires: 0`` when the service stops."

TRACER_NAME = "bridge.sipagent"

RING_EVENTS = (
    RingingStarted,
    RingingStopped,
    AcceptRequested,
    AnswerRequested,
    HangupRequested,
    CallEnded,
    MediaFailed,
)
"What a ringing inbound call's ``Ringing`` core hears from the bus."


@runtime_checkable
class _InDialog(Protocol):
    """A call that holds a confirmed dialog once answered (outbound or inbound)."""

    @property
    def dialog(self) -> Dialog | None: ...


class SipAgentService:
    """Places the calls of ``DialRequested`` events and reports how they go."""

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
        self._dial_deny = dial_deny
        self._door = door
        self._ringing: dict[str, tuple[CallHandle, asyncio.Queue[AnyEvent]]] = {}
        "Inbound calls not answered yet: their handle, and the bus events for their ring."
        self._bus = bus
        self._providers = providers or Providers.single(agent.default_trunk())
        self._fleet: FleetMember | None = None
        self._metrics = metrics or Metrics()
        self._agent = agent
        self._instance_id = instance_id
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._handles: dict[str, CallHandle] = {}
        self._spans: dict[str, SipSpans] = {}
        self._early_hangups: dict[str, str] = {}
        "Hang-ups that arrived before the INVITE went out, by call id."
        self._stopping = False
        self._unreported: set[str] = set()
        "Calls whose ``CallEnded`` is not published yet."
        self._background: set[asyncio.Task[None]] = set()

    @property
    def active_calls(self) -> int:
        return len(self._tasks)

    def holds(self, call_id: str) -> bool:
        return call_id in self._tasks

    def attach(self, fleet: FleetMember) -> None:
        """Keep the calls' records (dialogs) in ``fleet``'s registry."""
        self._fleet = fleet

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
        call_id = event.call_id
        self._metrics.call_attempts.inc()
        task = asyncio.create_task(self._run_call(event), name=f"call-{call_id}")
        self._tasks[call_id] = task
        self._unreported.add(call_id)
        task.add_done_callback(lambda done: self._call_done(call_id, done))

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
            self._hangup(call_id, errors.NORMAL)
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        for call_id, task in list(self._tasks.items()):
            task.cancel()
            ended = CallEnded(call_id=call_id, cause=errors.INTERNAL, reason="SIP agent stopped")
            await self._publish(ended)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if not await self._agent.wait_idle(deadline - loop.time()):
            log.info("%d call(s) still cleaning up SIP after the grace", self._agent.active_calls)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def _call_done(self, call_id: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(call_id) is task:
            del self._tasks[call_id]
        unreported = call_id in self._unreported
        self._unreported.discard(call_id)
        if task.cancelled() or (exc := task.exception()) is None:
            return
        # _run_call catches what it can; this is for what escapes it (tracing, say).
        log.error("%s: call task failed", call_id, exc_info=exc)
        if unreported:
            ended = CallEnded(call_id=call_id, cause=errors.INTERNAL, reason="SIP agent error")
            publish = asyncio.create_task(self._publish(ended))
            self._background.add(publish)
            publish.add_done_callback(self._background.discard)

    # --- calls from the trunks ---------------------------------------------------------

    def close_door(self) -> None:
        """Take no more calls from the trunks (their INVITEs get 503): draining, stopping."""
        if self._door is not None:
            self._door.open = False

    def on_inbound_call(self, handle: CallHandle) -> None:
        """``SipAgent.on_call``: the agent hosts a call ``InboundDoor`` admitted; ring it."""
        call_id = handle.call.call_id
        arrival = self._door.next_arrival() if self._door is not None else None
        while arrival is not None and arrival.call_id != call_id:
            arrival = self._door.next_arrival() if self._door is not None else None
        if arrival is None or self._stopping or call_id in self._tasks:
            handle.reject(503, "Service Unavailable")
            return
        inbox: asyncio.Queue[AnyEvent] = asyncio.Queue()
        self._ringing[call_id] = (handle, inbox)
        attributes = {
            "bridge.call_id": call_id,
            "bridge.direction": "inbound",
            "bridge.called": arrival.called,
            "bridge.trunk": arrival.trunk,
            "bridge.sipagent_id": self._instance_id,
        }
        body = partial(self._answer_inbound, arrival, handle, inbox)
        task = asyncio.create_task(self._run(call_id, attributes, body), name=f"call-{call_id}")
        self._tasks[call_id] = task
        self._unreported.add(call_id)
        task.add_done_callback(lambda done: self._call_done(call_id, done))

    async def _answer_inbound(
        self,
        arrival: Arrival,
        handle: CallHandle,
        inbox: asyncio.Queue[AnyEvent],
        spans: SipSpans,
    ) -> CallEnded:
        """Ring the users of an admitted call until one answers, then follow it to its end."""
        call_id = arrival.call_id
        loop = asyncio.get_running_loop()
        if self._fleet is not None:
            dialog = recovery.invite_record(
                arrival.sip_call_id, transport=arrival.transport, trunk=arrival.source
            )
            await self._fleet.create(
                ringing_record(arrival, self._instance_id, dialog, time.time())
            )
        # Subscribed to the call's signaling subject already (``_run``): announce it now.
        event = arrival.event(self._instance_id)
        for user in arrival.route.users:
            try:
                await self._bus.publish(subjects.inbound_calls(user), event)
            except Exception as exc:  # nobody hears it: the ring ends with 480
                log.warning("%s: cannot announce the call: %s", call_id, exc)
        route = arrival.route
        ringing = Ringing(
            call_id,
            loop.time(),
            ring_timeout=route.ring_timeout,
            reject_status=route.reject_status,
        )
        ended = await self._ring(ringing, handle, inbox)
        if ended is not None:
            return ended
        # Answered: from here on it is a call like an outbound one.
        spans.call.add_event("answering", {"bridge.signaling_id": ringing.claimed_by})
        del self._ringing[call_id]
        self._handles[call_id] = handle
        while not inbox.empty():  # what came after the answer: a hang-up, say
            await self._on_peer_event(inbox.get_nowait())
        if self._fleet is not None:
            claimed_by, identity, media_id = ringing.claimed_by, ringing.identity, ringing.media_id
            await self._fleet.update(
                call_id,
                lambda r: answering_record(r, claimed_by, identity, media_id, time.time()),
            )
        return await self._follow(call_id, handle, spans)

    async def _ring(
        self, ringing: Ringing, handle: CallHandle, inbox: asyncio.Queue[AnyEvent]
    ) -> CallEnded | None:
        """Run the ``Ringing`` core: the ``CallEnded`` of a call that ended unanswered, or
        None once it answered the trunk."""
        loop = asyncio.get_running_loop()
        from_bus = asyncio.ensure_future(inbox.get())
        from_sip = asyncio.ensure_future(handle.events.get())
        try:
            while True:
                ended: CallEnded | None = None
                while (action := ringing.next_action()) is not None:
                    if isinstance(action, Ring):
                        handle.ring()
                    elif isinstance(action, Reject):
                        handle.reject(action.status, action.reason)
                    elif isinstance(action, Answer):
                        handle.answer(action.sdp)
                    elif isinstance(action, Publish) and isinstance(action.event, CallEnded):
                        ended = action.event  # published by ``_run`` with the call's end
                    elif isinstance(action, Publish):
                        await self._publish(action.event)
                if ended is not None:
                    return ended
                if ringing.answering:
                    return None
                timer = ringing.get_timer()
                timeout = None if timer is None else max(timer - loop.time(), 0.0)
                done, _ = await asyncio.wait(
                    {from_bus, from_sip}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                now = loop.time()
                if from_bus in done:
                    event = from_bus.result()
                    if isinstance(event, RING_EVENTS):
                        ringing.receive(event, now)
                    from_bus = asyncio.ensure_future(inbox.get())
                if from_sip in done:
                    ringing.sip_event(from_sip.result(), now)
                    from_sip = asyncio.ensure_future(handle.events.get())
                timer = ringing.get_timer()
                if timer is not None and timer <= now:
                    ringing.handle_timer(now)
        finally:
            # A cancelled get takes nothing: what is queued stays for ``_follow``.
            from_bus.cancel()
            from_sip.cancel()

    # --- one call ----------------------------------------------------------------

    async def _run_call(self, dial: DialRequested) -> None:
        target = self._providers.route(dial.destination)
        attributes = {
            "bridge.call_id": dial.call_id,
            "bridge.destination": dial.destination,
            "bridge.trunk": target.trunk.name if target else "",
            "bridge.trunk_host": target.trunk.host if target else "",
            "bridge.sipagent_id": self._instance_id,
        }
        await self._run(dial.call_id, attributes, partial(self._place, dial))

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
            spans = self._spans[call_id] = SipSpans(call_tracer, span, attributes)
            subscriptions = []
            try:
                try:
                    for source in ("signaling", "media"):
                        subject = subjects.call_events(call_id, source)
                        subscriptions.append(
                            await self._bus.subscribe(subject, self._on_peer_event)
                        )
                    ended = await body(spans)
                except Exception as exc:
                    # A bug must not leave the browser waiting, nor the trunk's side open.
                    log.exception("%s: call failed", call_id)
                    span.record_exception(exc)
                    self._abandon(call_id)
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
                await self._publish(ended)
            finally:
                spans.end_invite(None)
                self._spans.pop(call_id, None)
                self._handles.pop(call_id, None)
                self._ringing.pop(call_id, None)
                self._early_hangups.pop(call_id, None)
                for subscription in subscriptions:
                    try:
                        await subscription.unsubscribe()
                    except Exception as exc:  # closing is best effort
                        log.debug("unsubscribe failed: %s", exc)

    def _denied(self, destination: str, target: Target) -> bool:
        """Whether a deny list refuses ``destination`` (normalized as signaling does)."""
        try:
            number = normalize(destination)
        except DestinationError:
            number = destination
        lists = [self._dial_deny, target.trunk.deny]
        if target.route is not None:
            lists.append(target.route.deny)
        return any(denied_by(patterns, number) is not None for patterns in lists)

    async def _place(self, dial: DialRequested, spans: SipSpans) -> CallEnded:
        """Run the call until it ends; the ``CallEnded`` to publish."""
        call_id = dial.call_id
        try:
            check_destination(dial.destination)
        except ValueError as exc:
            log.info("%s: rejected destination %r", call_id, dial.destination)
            return CallEnded(
                call_id=call_id, cause=errors.REJECTED, reason=f"Invalid destination: {exc}"
            )
        target = self._providers.route(dial.destination)
        if target is None:
            # Signaling checks the same routes; this is for a signaling that does not.
            log.info("%s: no route to %r", call_id, dial.destination)
            return CallEnded(
                call_id=call_id,
                cause=errors.REJECTED,
                reason="Unknown destination",
                code=errors.UNKNOWN_DESTINATION,
            )
        if self._denied(dial.destination, target):
            log.warning("%s: destination refused by the dial plan", call_id)
            return CallEnded(
                call_id=call_id,
                cause=errors.REJECTED,
                reason="Destination not allowed",
                code=errors.FORBIDDEN_DESTINATION,
            )
        try:
            target.check_headers(dial.headers)
            offer_sdp = restrict_codecs(dial.offer_sdp, target.trunk.codecs)
        except HeaderError as exc:
            log.info("%s: headers refused: %s", call_id, exc)
            return CallEnded(
                call_id=call_id, cause=errors.REJECTED, reason=str(exc), code=errors.BAD_HEADERS
            )
        except ValueError as exc:
            log.info("%s: %s", call_id, exc)
            return CallEnded(
                call_id=call_id,
                cause=errors.REJECTED,
                reason=str(exc),
                code=errors.NO_COMMON_CODEC,
            )
        if call_id in self._early_hangups:
            return CallEnded(call_id=call_id, cause=errors.CANCELLED, reason="Cancelled")

        headers = target.invite_headers(dial.headers)
        log.info(
            "%s: %s via trunk %s (headers: %s)",
            call_id,
            target.user,
            target.trunk.name,
            ", ".join(name for name, _ in headers) or "none",
        )
        log.debug("%s: custom headers %r", call_id, headers)
        spans.start_invite()
        try:
            handle = await self._agent.dial(
                call_id,
                target.user,
                offer_sdp,
                spans.observe,
                trunk=target.trunk,
                headers=headers,
            )
        except UnreachableError as exc:
            log.warning("%s: cannot place the call: %s", call_id, exc)
            return CallEnded(
                call_id=call_id,
                cause=errors.UNREACHABLE,
                reason=str(exc),
                code=errors.UNREACHABLE,
            )
        except DialError as exc:
            log.warning("%s: cannot place the call: %s", call_id, exc)
            return CallEnded(call_id=call_id, cause=errors.INTERNAL, reason=str(exc))
        self._handles[call_id] = handle
        await self._record_inviting(call_id, handle)
        await self._publish(
            InviteSent(
                call_id=call_id,
                sipagent_id=self._instance_id,
                request_uri=handle.request_uri,
                dtmf=target.trunk.dtmf,
            )
        )
        early = self._early_hangups.pop(call_id, None)
        if early is not None:
            handle.hangup(early)
        return await self._follow(call_id, handle, spans)

    async def _follow(self, call_id: str, handle: CallHandle, spans: SipSpans) -> CallEnded:
        """Report what the SIP call does until it ends; the ``CallEnded`` to publish."""
        while True:
            event = await handle.events.get()
            if isinstance(event, Progress):
                await self._publish(
                    ProgressReceived(call_id=call_id, status=event.status, early_sdp=event.sdp)
                )
            elif isinstance(event, Answered):
                spans.end_invite(200)
                spans.call.add_event("answered")
                await self._record_confirmed(call_id, handle)
                await self._publish(CallAnswered(call_id=call_id, answer_sdp=event.sdp))
            elif isinstance(event, SessionChanged):
                await self._on_session_changed(call_id, handle, event, spans)
            elif isinstance(event, HoldRefused):
                spans.call.add_event("hold refused", {"bridge.held": event.held})
                await self._publish(
                    HoldFailed(
                        call_id=call_id,
                        held=event.held,
                        status=event.status,
                        reason=event.reason,
                    )
                )
            elif isinstance(event, DtmfIn):
                await self._publish(DtmfReceived(call_id=call_id, digit=event.digit, method="info"))
            elif isinstance(event, Ended):
                # The browser gets an ``error`` too when no target could be reached.
                code = errors.UNREACHABLE if event.cause == errors.UNREACHABLE else ""
                return CallEnded(
                    call_id=call_id,
                    cause=event.cause,
                    status=event.status,
                    reason=event.reason,
                    code=code,
                )

    async def _on_session_changed(
        self, call_id: str, handle: CallHandle, event: SessionChanged, spans: SipSpans
    ) -> None:
        attributes = {
            "bridge.local_hold": event.local_hold,
            "bridge.remote_hold": event.remote_hold,
        }
        if event.transferred_to:
            # The registry must name the new dialog: a survivor would BYE the old one.
            spans.call.add_event("transferred", attributes)
            await self._record_confirmed(call_id, handle)
        else:
            spans.call.add_event("session updated", attributes)
        await self._publish(
            SessionUpdated(
                call_id=call_id,
                remote_sdp=event.remote_sdp,
                local_hold=event.local_hold,
                remote_hold=event.remote_hold,
                transferred_to=event.transferred_to,
            )
        )

    async def _record_inviting(self, call_id: str, handle: CallHandle) -> None:
        if self._fleet is None:
            return
        dialog = recovery.invite_record(
            handle.call.sip_call_id, transport=self._transport_of(handle), trunk=handle.trunk
        )
        instance_id = self._instance_id
        await self._fleet.update(
            call_id, lambda r: records.inviting(r, instance_id, dialog, time.time())
        )

    async def _record_confirmed(self, call_id: str, handle: CallHandle) -> None:
        call = handle.call
        if self._fleet is None or not isinstance(call, _InDialog) or call.dialog is None:
            return
        dialog = recovery.dialog_record(
            call.dialog, transport=self._transport_of(handle), trunk=handle.trunk
        )
        await self._fleet.update(call_id, lambda r: records.confirmed(r, dialog, time.time()))

    def _transport_of(self, handle: CallHandle) -> str:
        return handle.transport_name or self._agent.config.transport

    async def _on_peer_event(self, event: AnyEvent) -> None:
        ringing = self._ringing.get(event.call_id)
        if ringing is not None and isinstance(event, RING_EVENTS):
            ringing[1].put_nowait(event)  # its Ringing core decides
            return
        if isinstance(event, HangupRequested | CallEnded):
            self._hangup(event.call_id, event.cause)
        elif isinstance(event, MediaFailed):
            self._hangup(event.call_id, errors.MEDIA_FAILED)
        elif isinstance(event, HoldRequested):
            handle = self._handles.get(event.call_id)
            if handle is None:
                await self._publish(
                    HoldFailed(
                        call_id=event.call_id,
                        held=event.held,
                        reason="The call is not answered",
                    )
                )
            else:
                handle.hold(event.held)
        elif isinstance(event, DtmfRequested):
            handle = self._handles.get(event.call_id)
            if handle is not None:
                handle.send_dtmf(event.digits, event.duration_ms)

    def _abandon(self, call_id: str) -> None:
        """Hang up the SIP side of a call that failed, if it got that far."""
        handle = self._handles.pop(call_id, None)
        ringing = self._ringing.pop(call_id, None)
        if handle is None and ringing is not None:
            handle = ringing[0]
        if handle is None:
            return
        try:
            handle.hangup(errors.INTERNAL)
        except Exception:
            log.exception("%s: cannot hang up the failed call", call_id)

    def _hangup(self, call_id: str, cause: str) -> None:
        spans = self._spans.get(call_id)
        if spans is not None:
            spans.call.add_event("hangup requested", {"bridge.cause": cause})
        handle = self._handles.get(call_id)
        ringing = self._ringing.get(call_id)
        if handle is not None:
            handle.hangup(cause)
        elif ringing is not None:
            ringing[0].hangup(cause)  # the trunk gets a final response; Ended follows
        elif call_id in self._tasks:
            self._early_hangups.setdefault(call_id, cause)

    async def _publish(
        self,
        event: CallEnded
        | CallClaimed
        | InviteSent
        | ProgressReceived
        | CallAnswered
        | SessionUpdated
        | HoldFailed
        | DtmfReceived,
    ) -> None:
        subject = subjects.call_events(event.call_id, "sipagent")
        if isinstance(event, CallEnded):
            self._unreported.discard(event.call_id)
        try:
            await self._bus.publish(subject, event)
        except Exception as exc:  # a lost bus must not kill the call's SIP side
            log.warning("%s: cannot publish %s: %s", event.call_id, type(event).__name__, exc)
        if isinstance(event, CallEnded) and self._fleet is not None:
            await self._fleet.delete(event.call_id)


def registrations_reply(
    agent: SipAgent, instance_id: str
) -> registrations_proto.RegistrationsReply:
    """The agent's bindings as the bus and ``GET /registrations`` show them (wall clock)."""
    now, wall = asyncio.get_running_loop().time(), time.time()

    def epoch(when: float | None) -> float | None:
        return None if when is None else round(wall + (when - now), 3)

    return registrations_proto.RegistrationsReply(
        instance_id=instance_id,
        registrations=[
            registrations_proto.TrunkRegistration(
                trunk=status.trunk,
                state=status.state.value,
                registrar=status.registrar,
                aor=status.aor,
                expires_at=epoch(status.expires_at),
                status_code=status.status_code,
                reason=status.reason,
                next_attempt_at=epoch(status.next_attempt_at),
            )
            for status in agent.registrations.statuses(now)
        ],
        sent_at=wall,
    )


def start_registrations(lc: Lifecycle, agent: SipAgent, providers: Providers) -> None:
    """REGISTER to every trunk that asked for it; show them on ``/registrations`` and metrics."""
    for trunk in providers.trunks.values():
        if trunk.register:
            agent.register(trunk)
            lc.metrics.track_registration(
                trunk.name, partial(agent.registrations.registered, trunk.name)
            )
    lc.serve_json("registrations", lambda: registrations_reply(agent, lc.settings.instance_id))


async def answer_registrations(bus: Bus, agent: SipAgent, instance_id: str) -> None:
    """Answer ``bridge registrations`` on the bus (every instance answers)."""

    async def on_request(msg: Msg) -> None:
        reply = registrations_reply(agent, instance_id)
        await msg.respond(registrations_proto.encode(reply))

    await bus.client.subscribe(subjects.registrations(), cb=on_request)


def inbound_door(agent: SipAgent, settings: Settings) -> InboundDoor:
    """Who may call in and what a called number rings (``inbound.py``); the agent's screen
    lets through the INVITEs of the trunks' ``inbound_from``, and all when one has
    ``inbound_auth`` (the door challenges them)."""
    trunks = settings.providers.trunks
    auth = DigestTrunks(trunks.values())
    networks = [network for trunk in trunks.values() for network in trunk.inbound_from]
    agent.screen.open_inbound(networks, anywhere=bool(auth))
    config, connections = agent.config, agent.connections

    def sent_by(addr: tuple[str, int], transport: str) -> str:
        return connections.sent_by(addr, connections.get(transport))

    return InboundDoor(
        trunks,
        settings.inbound_routes,
        inbound_calls(sent_by, t1=config.t1, keepalive=config.keepalive_interval),
        trunks_at=agent.screen.trunks_at,
        auth=auth if auth else None,
        refused=agent.screen.refused_invite,
        national=settings.access.national,
    )


async def main(lc: Lifecycle) -> None:
    """Run one SIP agent; drain on SIGTERM, hang up every call on SIGINT."""
    settings = lc.settings
    providers = settings.providers
    missing = providers.missing_secrets()
    if missing:
        raise SettingsError(missing[0])
    for trunk in providers.trunks.values():
        if trunk.srtp != "off" and trunk.transport != "tls":
            log.warning(
                "trunk %s: SRTP %s over %s: the SRTP keys travel in the SDP in clear;"
                ' use TLS (SIP_TRANSPORT=tls / transport = "tls") to keep them secret',
                trunk.name,
                trunk.srtp,
                trunk.transport,
            )
    agent = SipAgent(AgentConfig.from_settings(settings), metrics=lc.metrics)
    await agent.start()
    # Requests are taken from the trunks (and their proxies) only, and from dialogs.
    agent.know_trunks([agent.default_trunk(), *providers.trunks.values()])
    bus: Bus | None = None
    fleet: FleetMember | None = None
    try:
        start_registrations(lc, agent, providers)
        bus = await lc.connect_bus()
        await answer_registrations(bus, agent, settings.instance_id)
        door = inbound_door(agent, settings)
        service = SipAgentService(
            bus,
            agent,
            settings.instance_id,
            metrics=lc.metrics,
            providers=providers,
            dial_deny=settings.access.dial_deny,
            door=door,
        )
        lc.serve_load(lambda: service.active_calls)
        fleet = FleetMember(
            bus,
            "sipagent",
            settings,
            load=lambda: Load(service.active_calls, 0, lc.draining.is_set()),
            holds=service.holds,
            send_bye=service.adopt_bye,
        )
        service.attach(fleet)
        await fleet.start()
        work = await bus.subscribe(
            subjects.sipagent_work(), service.on_work, queue=subjects.SIPAGENT_QUEUE
        )
        # Calls from the trunks: once the registry and the bus can carry them.
        agent.on_call = service.on_inbound_call
        agent.on_invite = door.on_invite
        await bus.announce_ready("sipagent")
        lc.set_ready()
        log.info("sipagent %s ready", settings.instance_id)
        await lc.draining.wait()
        service.close_door()  # the trunks' new INVITEs get 503: they try another agent
        await fleet.beat()
        # Drained, not dropped: a dial already routed here is still placed.
        await drain_subscription(work)
        if await lc.wait_idle(lambda: service.active_calls):
            log.info("sipagent %s drained: no call left", settings.instance_id)
        log.info("stopping: hanging up %d call(s)", service.active_calls)
        await service.shutdown()
    finally:
        # SIGTERM and SIGINT alike: the trunk must not keep routing to a stopped agent.
        if not await agent.unregister_all(UNREGISTER_GRACE):
            log.info("some registrar did not answer the unregistration in time")
        if fleet is not None:
            await fleet.close()
        await agent.close()
        if bus is not None:
            await bus.close()
