"""The sipagent service: ``DialRequested`` from the bus in, a SIP call out.

This is the boundary between the bus and the SIP core: it turns proto events
into ``SipAgent`` calls and call events back into proto events, and the SIP
code never sees a bus type.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial

from nats.aio.msg import Msg
from opentelemetry.trace import Status, StatusCode

from proto import errors, subjects
from proto import registrations as registrations_proto
from proto.events import (
    AnyEvent,
    CallAnswered,
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
from services.common.settings import SettingsError
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
from services.sipagent.offer import restrict_codecs
from services.sipagent.spans import SipSpans
from services.sipagent.transfer import TransferringCall

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 2.0
"Seconds given to calls to end (CANCEL/BYE answered) when the service stops."
UNREGISTER_GRACE = 5.0
"Seconds given to the REGISTERs with ``Expires: 0`` when the service stops."

TRACER_NAME = "bridge.sipagent"


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
    ) -> None:
        """``providers``: the trunks and routes; default: every call to the agent's trunk.
        ``dial_deny``: ``DIAL_DENY``, checked again here with the routes' and trunks' deny
        lists, whatever signaling decided."""
        self._dial_deny = dial_deny
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

    # --- one call ----------------------------------------------------------------

    async def _run_call(self, dial: DialRequested) -> None:
        call_id = dial.call_id
        target = self._providers.route(dial.destination)
        attributes = {
            "bridge.call_id": call_id,
            "bridge.destination": dial.destination,
            "bridge.trunk": target.trunk.name if target else "",
            "bridge.trunk_host": target.trunk.host if target else "",
            "bridge.sipagent_id": self._instance_id,
        }
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
                    ended = await self._place(dial, spans)
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
        if self._fleet is None or not isinstance(call, TransferringCall) or call.dialog is None:
            return
        dialog = recovery.dialog_record(
            call.dialog, transport=self._transport_of(handle), trunk=handle.trunk
        )
        await self._fleet.update(call_id, lambda r: records.confirmed(r, dialog, time.time()))

    def _transport_of(self, handle: CallHandle) -> str:
        if handle.transport is not None:
            return handle.transport.name
        return self._agent.config.transport

    async def _on_peer_event(self, event: AnyEvent) -> None:
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
        if handle is not None:
            handle.hangup(cause)
        elif call_id in self._tasks:
            self._early_hangups.setdefault(call_id, cause)

    async def _publish(
        self,
        event: CallEnded
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
        service = SipAgentService(
            bus,
            agent,
            settings.instance_id,
            metrics=lc.metrics,
            providers=providers,
            dial_deny=settings.access.dial_deny,
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
        await bus.announce_ready("sipagent")
        lc.set_ready()
        log.info("sipagent %s ready", settings.instance_id)
        await lc.draining.wait()
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
