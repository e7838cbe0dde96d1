"""The registrations a ``SipAgent`` hosts, next to its calls.

``RegistrationTable`` resolves each trunk to register at and opens its
transport in the background, finds a response's ``Registration`` by
Call-ID, sends what each wants sent to its registrar, gives the agent the
earliest timer of them all, and remembers trunks not yet reachable (DNS,
transport) so that they too show up, as ``failed``, with their next attempt.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from sipmessage import Response

from services.common.providers import Trunk
from services.common.sip.message import SipMessage
from services.common.sipaddr import host_literal
from services.sipagent.config import AgentConfig, DialError, UnreachableError
from services.sipagent.connections import Connections
from services.sipagent.registration import (
    Registration,
    RegistrationState,
    RegistrationStatus,
    backoff_delay,
)
from services.sipagent.transport import Addr, SipTransport

log = logging.getLogger(__name__)

Send = Callable[[bytes, Addr, SipTransport], None]


@dataclass
class _Hosted:
    registration: Registration
    registrar: Addr
    "Resolved address the REGISTERs go to."
    transport: SipTransport


class RegistrationTable:
    """Every registration of one agent: hosted cores and trunks still being resolved."""

    def __init__(
        self,
        config: AgentConfig,
        connections: Connections,
        send: Send,
        rearm: Callable[[], None],
    ) -> None:
        self._config = config
        self._connections = connections
        self._send = send
        self._rearm = rearm
        "Called when a registration was started: the agent's timer may have to move."
        self._hosted: dict[str, _Hosted] = {}
        "By SIP Call-ID."
        self._pending: dict[str, RegistrationStatus] = {}
        "Trunks not reachable yet, by name: what to show for them."
        self._tasks: set[asyncio.Task[None]] = set()
        self._done = asyncio.Event()
        self._done.set()

    def __len__(self) -> int:
        return len(self._hosted) + len(self._pending)

    def register(self, trunk: Trunk, loop: asyncio.AbstractEventLoop) -> None:
        """Keep a REGISTER binding at ``trunk`` until ``unregister_all``.

        Returns at once: resolving the trunk and opening its transport happen
        in the background, retried with the registration's backoff meanwhile.
        """
        task = loop.create_task(self._register(trunk, loop), name=f"register-{trunk.name}")
        self.track(task)

    def track(self, task: asyncio.Task[None]) -> None:
        """Own ``task`` (one trunk's resolution), cancelled by ``unregister_all``/``close``."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def pending(self, status: RegistrationStatus) -> None:
        """Show ``status`` for a trunk that cannot be hosted yet."""
        self._pending[status.trunk] = status

    def host(self, registration: Registration, registrar: Addr, transport: SipTransport) -> None:
        """Take ``registration`` (not yet started)."""
        self._pending.pop(registration.trunk, None)
        self._hosted[registration.call_id] = _Hosted(registration, registrar, transport)
        self._done.clear()

    def start(self, call_id: str, now: float) -> None:
        hosted = self._hosted[call_id]
        hosted.registration.start(now)
        self._service(hosted)

    def receive(self, message: SipMessage, now: float) -> bool:
        """Handle a response of a registration; False if it belongs to none."""
        hosted = self._hosted.get(message.call_id)
        if hosted is None or not isinstance(message, Response):
            return False
        hosted.registration.receive(message, now)
        self._service(hosted)
        return True

    def get_timer(self) -> float | None:
        timers = (h.registration.get_timer() for h in self._hosted.values())
        return min((t for t in timers if t is not None), default=None)

    def handle_timer(self, now: float) -> None:
        for hosted in list(self._hosted.values()):
            deadline = hosted.registration.get_timer()
            if deadline is not None and deadline <= now:
                hosted.registration.handle_timer(now)
                self._service(hosted)

    def unregister_all(self, now: float) -> None:
        """Stop resolving; remove every binding (``Expires: 0``)."""
        self.close()
        self._pending.clear()
        for hosted in list(self._hosted.values()):
            hosted.registration.unregister(now)
            self._service(hosted)
        self._check_done()

    async def wait_unregistered(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every unregistration to finish."""
        try:
            async with asyncio.timeout(max(timeout, 0.0)):
                await self._done.wait()
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    def statuses(self, now: float) -> list[RegistrationStatus]:
        """Every registration's state, by trunk name."""
        found = [h.registration.status(now) for h in self._hosted.values()]
        found += self._pending.values()
        return sorted(found, key=lambda status: status.trunk)

    def registered(self, trunk: str) -> bool:
        return any(
            h.registration.trunk == trunk and h.registration.state is RegistrationState.REGISTERED
            for h in self._hosted.values()
        )

    async def _register(self, trunk: Trunk, loop: asyncio.AbstractEventLoop) -> None:
        domain = host_literal(trunk.realm_domain)
        registrar = host_literal(trunk.host) + (f":{trunk.port}" if trunk.port else "")
        aor = f"sip:{trunk.username}@{domain}"
        proxy = trunk.outbound_proxy or self._config.outbound_proxy
        failures = 0
        while True:
            try:
                # The first target: a registrar that fails is retried after the backoff,
                # and a fresh resolution then picks up DNS changes.
                targets = await self._connections.resolve(trunk, proxy)
                if not targets:
                    raise UnreachableError(f"no address for {registrar}")
                target = targets[0]
                transport = await self._connections.transport_for(target.transport)
                address = target.addr
                break
            except DialError as exc:
                failures += 1
                delay = backoff_delay(failures, random.random)
                log.warning("%s: cannot register: %s; again in %.0f s", trunk.name, exc, delay)
                now = loop.time()
                self.pending(
                    RegistrationStatus(
                        trunk=trunk.name,
                        state=RegistrationState.FAILED,
                        registrar=registrar,
                        aor=aor,
                        expires_at=None,
                        status_code=None,
                        reason=str(exc),
                        next_attempt_at=now + delay,
                    )
                )
                await asyncio.sleep(delay)
        self._connections.expect(transport, target, trunk.tls_ca)
        registrar = f"{host_literal(address[0])}:{address[1]}"
        sent_by = self._connections.sent_by(address, transport)
        registration = Registration(
            trunk=trunk.name,
            registrar=registrar,
            domain=domain,
            username=trunk.username,
            password=trunk.password,
            contact=f"<sip:{trunk.username}@{sent_by};transport={transport.name}>",
            sent_by=sent_by,
            transport=transport.name,
            expires=trunk.register_expires,
            t1=self._config.t1,
        )
        self.host(registration, address, transport)
        self.start(registration.call_id, loop.time())
        self._rearm()

    def _service(self, hosted: _Hosted) -> None:
        registration = hosted.registration
        for message in registration.messages_to_send():
            self._send(bytes(message), hosted.registrar, hosted.transport)
        if registration.finished and self._hosted.get(registration.call_id) is hosted:
            del self._hosted[registration.call_id]
            log.info("%s: unregistered", registration.trunk)
            self._check_done()

    def _check_done(self) -> None:
        if not self._hosted:
            self._done.set()
