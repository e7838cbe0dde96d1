"""The sipagent process: the SIP agent, the bus and the registry wired together.

``main`` binds the SIP transports, registers to the trunks that ask for it,
joins the fleet, takes ``DialRequested`` work (``service.py``) and opens the
door to the trunks' calls (``inbound.py``); SIGTERM drains, SIGINT stops.
Registrations are shown on ``/registrations`` and answered on the bus.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial

from nats.aio.msg import Msg

from proto import registrations as registrations_proto
from proto import subjects
from services.common.bus import Bus, drain_subscription
from services.common.fleet.heartbeat import Load
from services.common.fleet.member import FleetMember
from services.common.lifecycle import Lifecycle
from services.common.metrics import Metrics
from services.common.providers import Providers
from services.common.settings import Settings, SettingsError
from services.sipagent.agent import AgentConfig, SipAgent
from services.sipagent.answering import answer_operator_hangups
from services.sipagent.inbound import InboundDoor, inbound_calls
from services.sipagent.ringing import answer_wait_for
from services.sipagent.service import SipAgentService
from services.sipagent.trunk_auth import DigestTrunks

__all__ = ["SipAgentService", "inbound_door", "main", "registrations_reply"]

log = logging.getLogger(__name__)

UNREGISTER_GRACE = 5.0
"Seconds given to the REGISTERs with ``Expires: 0`` when the service stops."


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


def inbound_door(
    agent: SipAgent, settings: Settings, metrics: Metrics | None = None
) -> InboundDoor:
    """Who may call in and what a called number rings (``inbound.py``); the agent's screen
    lets through the INVITEs of the trunks' ``inbound_from``, and all when one has
    ``inbound_auth`` (the door challenges them)."""
    trunks = settings.providers.trunks
    auth = DigestTrunks(trunks.values(), secret=settings.sip_nonce_secret or None)
    busy = (metrics or Metrics()).sip_refused.labels("too_many_ringing")
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
        max_ringing=settings.inbound_max_ringing,
        busy=busy.inc,
        answer_wait=answer_wait_for(settings.setup_timeout),
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
        door = inbound_door(agent, settings, lc.metrics)
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
        # An operator's hang-up of a call still ringing here (no browser holds it yet).
        await answer_operator_hangups(bus, settings.instance_id, service.end_ringing)
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
