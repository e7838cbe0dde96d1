"""The asyncio side of the SIP user agent: transports, many calls.

``SipAgent`` moves bytes between the transports and the sans-I/O
``OutboundCall`` objects (found by SIP Call-ID), keeps one ``loop.call_at``
timer for all of them, and answers requests that belong to no call.

A dial resolves the trunk (or its outbound proxy) per RFC 3263 into an
ordered list of targets. An INVITE that gets no response at all (Timer B, a
connection or TLS failure) or a 503 before any provisional response is
placed again, as a new INVITE, on the next target; a 503's Retry-After
keeps that target aside for every call of the process (``Backoff``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sipmessage import Request, Response

from proto import errors
from proto.fleet import SipDialogRecord
from services.common.providers import Trunk
from services.common.settings import Settings, local_address_toward
from services.common.sipaddr import OutboundProxy
from services.sipagent.attempt import (
    DialPlan,
    fails_over,
    host_literal,
    invite_for,
    request_uri_for,
)
from services.sipagent.attempt import check_destination as check_destination
from services.sipagent.attempt import sip_user as sip_user
from services.sipagent.call import ALLOW, USER_AGENT, CallState, OutboundCall
from services.sipagent.events import CallEvent, Ended
from services.sipagent.recovery import RecoveredBye
from services.sipagent.registration import (
    Registration,
    RegistrationState,
    RegistrationStatus,
    backoff_delay,
)
from services.sipagent.registrations import RegistrationTable
from services.sipagent.resolve import Backoff, Target, retry_after
from services.sipagent.sip.auth import DigestAuthenticator
from services.sipagent.sip.message import (
    SipMessage,
    SipParseError,
    bad_request,
    make_response,
    new_tag,
    parse_message,
    summary,
)
from services.sipagent.sip.next_hop import Hops
from services.sipagent.sip.transaction import T1
from services.sipagent.sipdns import ResolveError, SipResolver
from services.sipagent.transfer import TransferringCall
from services.sipagent.transport import (
    Addr,
    SipTransport,
    TlsTransport,
    client_context,
    open_transport,
)

log = logging.getLogger(__name__)

RESOLVE_TIMEOUT = 5.0
"Seconds allowed to resolve SIP_TRUNK_HOST before a dial fails."

SipObserver = Callable[[str, str], None]
"Told ``(direction, summary)`` of each SIP message of a call (``>`` sent, ``<`` received)."


class DialError(Exception):
    """The call could not be placed; the message says why."""


class UnreachableError(DialError):
    """The trunk's name did not resolve to any target."""


@dataclass(frozen=True)
class AgentConfig:
    trunk_host: str
    trunk_port: int = 0
    "0: not given (RFC 3263 resolution)."
    domain: str = ""
    username: str = ""
    password: str = field(default="", repr=False)
    transport: str = "udp"
    transport_explicit: bool = True
    bind_host: str = "0.0.0.0"
    local_port: int = 0
    public_ip: str = ""
    invite_timeout: float = 60.0
    t1: float = T1
    tls_ca: str = ""
    tls_verify: bool = True
    dns_servers: tuple[tuple[str, int], ...] = ()
    outbound_proxy: OutboundProxy | None = None
    keepalive_interval: float = 30.0
    "Seconds between in-dialog OPTIONS keep-alives; 0: none."
    transfer: str = "follow"
    "What the default trunk's REFER gets: ``follow`` or ``decline``."

    @classmethod
    def from_settings(cls, settings: Settings) -> AgentConfig:
        return cls(
            trunk_host=settings.sip_trunk_host,
            trunk_port=settings.sip_trunk_port,
            domain=settings.sip_realm_domain,
            username=settings.sip_username,
            password=settings.sip_password,
            transport=settings.sip_transport,
            transport_explicit=settings.sip_transport_explicit,
            bind_host=settings.sip_bind_host,
            local_port=settings.sip_local_port,
            public_ip=settings.public_ip,
            invite_timeout=settings.invite_timeout,
            tls_ca=settings.sip_tls_ca,
            tls_verify=settings.sip_tls_verify,
            dns_servers=settings.sip_dns_servers,
            outbound_proxy=settings.sip_outbound_proxy,
            keepalive_interval=settings.sip_keepalive_interval,
            transfer=settings.sip_transfer,
        )


class SipCall(Protocol):
    """What ``SipAgent`` drives: ``TransferringCall``, or ``RecoveredBye`` for an adopted dialog."""

    call_id: str
    sip_call_id: str

    @property
    def request_uri(self) -> str: ...

    def start(self, now: float) -> None: ...

    def receive(self, message: SipMessage, now: float) -> None: ...

    def hangup(self, cause: str, now: float) -> None: ...

    def handle_timer(self, now: float) -> None: ...

    def get_timer(self) -> float | None: ...

    def messages_to_send(self) -> list[SipMessage]: ...

    def next_event(self) -> CallEvent | None: ...

    @property
    def finished(self) -> bool: ...


class CallHandle:
    """One placed call as the service sees it: a queue of events and a hang-up.

    After a failover ``call``, ``trunk`` and ``transport`` are those of the
    INVITE to the current target.
    """

    def __init__(
        self, agent: SipAgent, call: SipCall, trunk: Addr, transport: SipTransport | None = None
    ) -> None:
        self.call = call
        self.trunk = trunk
        self.transport = transport
        "The transport of the call (None: the agent's first one)."
        self.events: asyncio.Queue[CallEvent] = asyncio.Queue()
        self.observer: SipObserver | None = None
        self.target: Target | None = None
        self.hops: Hops | None = None
        "Where in-dialog requests go (None: everything to ``trunk``)."
        self._agent = agent
        self._dial: DialPlan | None = None
        self._provisional = False
        "The current target sent a provisional response: no failover from here on."
        self._hung_up = False
        self._retired = False
        "An earlier attempt kept only to absorb retransmissions: its events go nowhere."
        self._closed = False
        "Ended by the agent itself (transport failure): nothing more to do."

    @property
    def request_uri(self) -> str:
        return self.call.request_uri

    def hangup(self, cause: str) -> None:
        self._agent.hangup(self, cause)

    def hold(self, held: bool) -> None:
        """Put the trunk on hold or resume it (a re-INVITE once the call is answered)."""
        call = self.call
        if isinstance(call, TransferringCall):
            self._agent.drive(self, lambda now: call.hold(held, now))

    def send_dtmf(self, digits: str, duration_ms: int) -> None:
        """Send DTMF by SIP INFO when the trunk gets it that way."""
        call = self.call
        if isinstance(call, TransferringCall):
            self._agent.drive(self, lambda now: call.send_dtmf(digits, duration_ms, now))

    def destination(self, request: Request) -> Addr:
        """Where ``request`` goes: the trunk, or within a dialog its next hop."""
        return self.hops.destination(request) if self.hops else self.trunk


class SipAgent:
    def __init__(
        self,
        config: AgentConfig,
        transport: SipTransport | None = None,
        *,
        resolver: SipResolver | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.config = config
        self.backoff = backoff or Backoff()
        "Targets that answered 503 with Retry-After, for every call of the process."
        self._resolver = resolver or SipResolver(config.dns_servers, ipv6=":" in config.bind_host)
        self._tls_contexts: dict[str, ssl.SSLContext] = {}
        self._transport = transport
        self._transports: dict[str, SipTransport] = {}
        "Every open transport by name: the configured one, and others trunks asked for."
        self._calls: dict[str, CallHandle] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle = asyncio.Event()
        "Set while no call is left, CANCEL, ACK and BYE clean-up included."
        self._idle.set()
        self.registrations = RegistrationTable(self._send)
        "The REGISTER bindings this agent keeps, routed like calls by Call-ID."

    async def start(self) -> None:
        """Bind the SIP transport (unless one was given)."""
        self._loop = asyncio.get_running_loop()
        config = self.config
        if self._transport is None:
            self._transport = await self._open(config.transport, config.local_port)
        self._transports[self._transport.name] = self._transport
        self._transport.on_error = self._on_transport_error_of(self._transport)
        if not config.tls_verify:
            log.warning(
                "SIP_TLS_VERIFY=false: TLS certificates of trunks and proxies are not checked;"
                " anyone on the path can pose as the trunk"
            )
        log.info(
            "sip %s on %s:%d toward %s:%s",
            self._transport.name,
            config.bind_host,
            self._transport.local_port,
            config.trunk_host or "(no trunk)",
            config.trunk_port or "(port from DNS)",
        )

    @property
    def local_port(self) -> int:
        return self._transport.local_port if self._transport else 0

    @property
    def active_calls(self) -> int:
        return len(self._calls)

    async def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until every call is finished; False if some are not."""
        try:
            async with asyncio.timeout(max(timeout, 0.0)):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    def default_trunk(self) -> Trunk:
        """The configured trunk (``SIP_TRUNK_*``) as a ``Trunk``."""
        config = self.config
        return Trunk(
            name="default",
            host=config.trunk_host,
            port=config.trunk_port,
            username=config.username,
            password=config.password,
            domain=config.domain,
            transport=self._transport.name if self._transport else config.transport,
            transport_explicit=config.transport_explicit,
            tls_ca=config.tls_ca,
            outbound_proxy=config.outbound_proxy,
            transfer=config.transfer,
        )

    async def dial(
        self,
        call_id: str,
        destination: str,
        offer_sdp: str,
        observer: SipObserver | None = None,
        *,
        trunk: Trunk | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> CallHandle:
        """Send the INVITE of a new call; raise ``DialError`` if it cannot be sent.

        ``trunk``: where to (default: the configured trunk); ``destination`` is
        the user part dialled there. ``headers`` go in the INVITE only.
        """
        if self._transport is None or self._loop is None:
            raise DialError("SIP agent not started")
        trunk = trunk or self.default_trunk()
        if not trunk.host:
            raise DialError("no SIP trunk configured")
        try:
            request_uri_for(destination, trunk.realm_domain)
        except ValueError as exc:
            raise DialError(f"invalid destination: {exc}") from None
        proxy = trunk.outbound_proxy or self.config.outbound_proxy
        targets = await self._resolve(trunk, proxy)
        now = self._loop.time()
        dial = DialPlan(
            trunk,
            destination,
            offer_sdp,
            list(headers),
            self.backoff.usable(targets, now),
            now + self.config.invite_timeout,
            proxy,
        )
        # Open every transport the targets need now: a failover cannot wait.
        for target in dial.targets:
            await self._transport_for(target.transport)
        target = dial.targets.pop(0)
        handle = CallHandle(self, self._call_for(call_id, dial, target, now), target.addr)
        handle.observer = observer
        handle._dial = dial
        self._attempt(handle, target)
        return handle

    def _call_for(
        self, call_id: str, dial: DialPlan, target: Target, now: float
    ) -> TransferringCall:
        """The call toward ``target``, able to follow the trunk's REFER through it."""

        def place(uri: str) -> OutboundCall:
            assert self._loop is not None
            return self._invite_for(call_id, dial, target, self._loop.time(), uri)

        return TransferringCall(self._invite_for(call_id, dial, target, now), place)

    def _invite_for(
        self, call_id: str, dial: DialPlan, target: Target, now: float, uri: str = ""
    ) -> OutboundCall:
        transport = self._transports.get(target.transport) or self._transport
        assert transport is not None
        sent_by = self._sent_by(target.addr, transport)
        return invite_for(
            call_id,
            dial,
            target,
            transport.name,
            sent_by,
            self.config.t1,
            now,
            keepalive=self.config.keepalive_interval,
            request_uri=uri,
        )

    def _attempt(self, handle: CallHandle, target: Target) -> None:
        """Make ``target`` the handle's current one and send its INVITE."""
        transport = self._transports.get(target.transport) or self._transport
        handle.target = target
        handle.trunk = target.addr
        handle.transport = transport
        handle._provisional = False
        # In-dialog requests go to their next hop (Route set, remote target), except
        # through an outbound proxy (every request goes to it) and over TLS (the
        # connection whose certificate was checked carries the whole dialog).
        proxied = handle._dial is not None and handle._dial.proxy is not None
        handle.hops = None if proxied or target.transport == "tls" else Hops(target.addr)
        if isinstance(transport, TlsTransport):
            transport.expect(target.addr, target.server_name, self._tls_context(handle))
        log.info("%s: INVITE to %s", handle.call.call_id, target)
        self._host_call(handle)

    def _tls_context(self, handle: CallHandle) -> ssl.SSLContext:
        """The trunk's ``tls_ca``, else SIP_TLS_CA."""
        ca = handle._dial.trunk.tls_ca if handle._dial else ""
        return self._context_for(ca or self.config.tls_ca)

    def _context_for(self, ca: str) -> ssl.SSLContext:
        """One context per CA file (empty: the system CAs)."""
        context = self._tls_contexts.get(ca)
        if context is None:
            context = client_context(ca, self.config.tls_verify)
            self._tls_contexts[ca] = context
        return context

    def adopt_bye(self, call_id: str, record: SipDialogRecord) -> CallHandle:
        """End a dead SIP agent's confirmed dialog with a BYE from this agent.

        ``RecoveryError`` if the record holds no whole dialog. The handle's one
        ``Ended`` is for logs: whoever adopted the dialog reports the call's end.
        """
        if self._transport is None or self._loop is None:
            raise DialError("SIP agent not started")
        config = self.config
        trunk = (record.trunk_host, record.trunk_port)
        authenticator = DigestAuthenticator(config.username, config.password)
        transport = self._transports.get(record.transport, self._transport)
        bye = RecoveredBye(
            call_id,
            record,
            sent_by=self._sent_by(trunk, transport),
            authenticator=authenticator if config.username else None,
            t1=config.t1,
        )
        handle = CallHandle(self, bye, trunk, transport)
        self._host_call(handle)
        return handle

    def hangup(self, handle: CallHandle, cause: str) -> None:
        if self._loop is None or handle._closed:
            return
        handle._hung_up = True
        handle.call.hangup(cause, self._loop.time())
        self._service(handle, None)
        self._rearm()

    # --- registrations -------------------------------------------------------------

    def register(self, trunk: Trunk) -> None:
        """Keep a REGISTER binding at ``trunk`` until ``unregister_all``.

        Returns at once: resolving the trunk and opening its transport happen
        in the background, retried with the registration's backoff meanwhile.
        """
        if self._transport is None or self._loop is None:
            raise DialError("SIP agent not started")
        task = self._loop.create_task(self._register(trunk), name=f"register-{trunk.name}")
        self.registrations.track(task)

    async def _register(self, trunk: Trunk) -> None:
        assert self._loop is not None
        domain = host_literal(trunk.realm_domain)
        registrar = host_literal(trunk.host) + (f":{trunk.port}" if trunk.port else "")
        aor = f"sip:{trunk.username}@{domain}"
        proxy = trunk.outbound_proxy or self.config.outbound_proxy
        failures = 0
        while True:
            try:
                # The first target: a registrar that fails is retried after the backoff,
                # and a fresh resolution then picks up DNS changes.
                targets = await self._resolve(trunk, proxy)
                if not targets:
                    raise UnreachableError(f"no address for {registrar}")
                target = targets[0]
                transport = await self._transport_for(target.transport)
                address = target.addr
                break
            except DialError as exc:
                failures += 1
                delay = backoff_delay(failures, random.random)
                log.warning("%s: cannot register: %s; again in %.0f s", trunk.name, exc, delay)
                now = self._loop.time()
                self.registrations.pending(
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
        if isinstance(transport, TlsTransport):
            transport.expect(
                address, target.server_name, self._context_for(trunk.tls_ca or self.config.tls_ca)
            )
        registrar = f"{host_literal(address[0])}:{address[1]}"
        sent_by = self._sent_by(address, transport)
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
            t1=self.config.t1,
        )
        self.registrations.host(registration, address, transport)
        self.registrations.start(registration.call_id, self._loop.time())
        self._rearm()

    async def unregister_all(self, timeout: float) -> bool:
        """Remove every binding (``Expires: 0``); False if some did not finish in ``timeout``."""
        if self._loop is None:
            return True
        self.registrations.unregister_all(self._loop.time())
        self._rearm()
        return await self.registrations.wait_unregistered(timeout)

    def drive(self, handle: CallHandle, action: Callable[[float], None]) -> None:
        """Run ``action(now)`` on a call, then send what it queued."""
        if self._loop is None:
            return
        action(self._loop.time())
        self._service(handle, None)
        self._rearm()

    async def close(self) -> None:
        self.registrations.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for transport in {*self._transports.values(), self._transport}:
            if transport is not None:
                await transport.close()

    # --- internals ---------------------------------------------------------------

    def _sent_by(self, trunk: Addr, transport: SipTransport | None = None) -> str:
        """This agent's host:port as the trunk should see it (Via, Contact)."""
        transport = transport or self._transport
        assert transport is not None
        local_ip = self.config.public_ip or local_address_toward(trunk[0], trunk[1])
        host = f"[{local_ip}]" if ":" in local_ip else local_ip
        return f"{host}:{transport.local_port}"

    async def _open(self, name: str, port: int) -> SipTransport:
        holder: list[SipTransport] = []

        def on_message(data: bytes, addr: Addr) -> None:
            self.receive(data, addr, holder[0] if holder else None)

        transport = await open_transport(name, self.config.bind_host, port, on_message)
        transport.on_error = self._on_transport_error_of(transport)
        if isinstance(transport, TlsTransport):
            transport.default_context = self._context_for(self.config.tls_ca)
        holder.append(transport)
        return transport

    async def _transport_for(self, name: str) -> SipTransport:
        """The open transport called ``name``, opened on an ephemeral port on first use."""
        assert self._transport is not None
        if self._transport.name == name:
            return self._transport
        transport = self._transports.get(name)
        if transport is None:
            try:
                transport = await self._open(name, 0)
            except OSError as exc:
                raise DialError(f"cannot open a SIP {name} transport: {exc}") from None
            self._transports[name] = transport
            log.info("sip %s on %s:%d", name, self.config.bind_host, transport.local_port)
        return transport

    def _host_call(self, handle: CallHandle) -> None:
        """Take ``handle`` among the calls and start it."""
        assert self._loop is not None
        self._calls[handle.call.sip_call_id] = handle
        self._idle.clear()
        handle.call.start(self._loop.time())
        self._service(handle, None)
        self._rearm()

    async def _resolve(self, trunk: Trunk, proxy: OutboundProxy | None) -> list[Target]:
        """The targets of the trunk, or of its outbound proxy, in the order to try them."""
        if proxy is not None:
            label = "SIP_OUTBOUND_PROXY"
            if trunk.name != "default" and trunk.outbound_proxy is not None:
                label = f"trunk {trunk.name!r} outbound_proxy"
            host, port = proxy.host, proxy.port
            transport = proxy.transport or trunk.transport
            explicit = bool(proxy.transport) or trunk.transport_explicit
        else:
            label = "SIP_TRUNK_HOST" if trunk.name == "default" else f"trunk {trunk.name!r} host"
            host, port = trunk.host, trunk.port
            transport, explicit = trunk.transport, trunk.transport_explicit
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT):
                resolution = await self._resolver.resolve(host, port, transport, explicit=explicit)
        except TimeoutError:
            raise UnreachableError(
                f"could not resolve {label} {host} in {RESOLVE_TIMEOUT:g} s"
            ) from None
        except ResolveError as exc:
            raise UnreachableError(f"{label}: {exc}") from None
        for line in resolution.trail:
            log.debug("resolved %s", line)
        return resolution.targets

    def receive(self, data: bytes, addr: Addr, transport: SipTransport | None = None) -> None:
        """Handle one message from ``transport`` (None: the agent's first one)."""
        assert self._loop is not None
        try:
            message = parse_message(data)
        except SipParseError as exc:
            log.debug("dropped bad message from %s:%d: %s", addr[0], addr[1], exc)
            reply = bad_request(data, str(exc))
            if reply is not None:
                self._send(reply, addr, transport)
            return
        handle = self._calls.get(message.call_id)
        if handle is None:
            if self.registrations.receive(message, self._loop.time()):
                self._rearm()
            else:
                self._stateless(message, addr, transport)
            return
        if isinstance(message, Response) and message.cseq.method == "INVITE":
            self._note_invite_response(handle, message)
        if handle.observer is not None:
            handle.observer("<", summary(message))
        handle.call.receive(message, self._loop.time())
        self._service(handle, addr)
        self._rearm()

    def _stateless(
        self, message: Request | Response, addr: Addr, transport: SipTransport | None
    ) -> None:
        """Answer what belongs to no call: OPTIONS 200, other requests 481."""
        if isinstance(message, Response) or message.method == "ACK":
            log.debug("dropped %s for no call", summary(message))
            return
        if message.method == "OPTIONS":
            response = make_response(
                message,
                200,
                to_tag=new_tag(),
                headers=[
                    ("Allow", ALLOW),
                    ("Accept", "application/sdp"),
                    ("User-Agent", USER_AGENT),
                ],
            )
        else:
            response = make_response(message, 481, to_tag=new_tag())
        self._send(bytes(response), addr, transport)

    def _service(self, handle: CallHandle, reply_to: Addr | None) -> None:
        """Send what the call wants sent, queue its events, forget it once finished."""
        call = handle.call
        for message in call.messages_to_send():
            # Responses go back where the request came from (rport: its source address).
            if isinstance(message, Response):
                dest = reply_to or handle.trunk
            else:
                dest = handle.destination(message)
            if handle.observer is not None:
                handle.observer(">", summary(message))
            self._send(bytes(message), dest, handle.transport)
        while (event := call.next_event()) is not None:
            if handle._retired:
                continue
            if isinstance(event, Ended) and self._fail_over(handle, event):
                continue
            handle.events.put_nowait(event)
        if handle.call is not call:
            return  # failed over: the old attempt is hosted apart, or gone
        # A transfer adds a dialog with a Call-ID of its own to the same call.
        for sip_call_id in getattr(call, "sip_call_ids", ()):
            self._calls.setdefault(sip_call_id, handle)
        if call.finished and self._calls.get(call.sip_call_id) is handle:
            for sip_call_id in [k for k, h in self._calls.items() if h is handle]:
                del self._calls[sip_call_id]
            if not self._calls:
                self._idle.set()

    def _send(self, data: bytes, addr: Addr, transport: SipTransport | None = None) -> None:
        transport = transport or self._transport
        if transport is not None:
            log.debug("sip > %s:%d %d bytes", addr[0], addr[1], len(data))
            transport.send(data, addr)

    def _rearm(self) -> None:
        """One timer for the agent, at the earliest timer of any call or registration."""
        assert self._loop is not None
        timers = [h.call.get_timer() for h in self._calls.values()]
        timers.append(self.registrations.get_timer())
        when = min((t for t in timers if t is not None), default=None)
        if when == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = when
        if when is not None:
            self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        assert self._loop is not None
        # asyncio may run a timer a clock tick early: never let "now" precede it.
        now = max(self._loop.time(), self._timer_at or 0.0)
        self._timer = None
        self._timer_at = None
        for handle in list(self._calls.values()):
            deadline = handle.call.get_timer()
            if deadline is not None and deadline <= now:
                handle.call.handle_timer(now)
                self._service(handle, None)
        self.registrations.handle_timer(now)
        self._rearm()

    # --- failover ----------------------------------------------------------------

    def _note_invite_response(self, handle: CallHandle, response: Response) -> None:
        """Remember a provisional response; honour a 503's Retry-After for every call."""
        if 100 < response.code < 200:
            # A 100 is only the next hop's; ringing or early media may have reached the caller.
            handle._provisional = True
        elif response.code == 503 and handle.target is not None and self._loop is not None:
            seconds = retry_after(response.headers.get("Retry-After"))
            if seconds:
                call_id = handle.call.call_id
                log.info("%s: %s asks for %g s of rest", call_id, handle.target, seconds)
                self.backoff.hold(handle.target, seconds, self._loop.time())

    def _fail_over(self, handle: CallHandle, ended: Ended, reason: str = "") -> bool:
        """Place the call on the next target instead of ending it; False if it must end."""
        dial = handle._dial
        if dial is None or self._loop is None:
            return False
        if not fails_over(
            ended,
            provisional=handle._provisional,
            hung_up=handle._hung_up,
            transport_failed=bool(reason),
        ):
            return False
        now = self._loop.time()
        if not dial.targets or now >= dial.deadline:
            return False
        old = handle.call
        why = reason or ("no response" if ended.status == 408 else f"{ended.status} {ended.reason}")
        target = dial.targets.pop(0)
        log.info("%s: %s (%s): trying %s", old.call_id, handle.target, why, target)
        # The old INVITE stays hosted until its transaction ends (ACK retransmissions).
        if not old.finished and not reason:
            retired = CallHandle(self, old, handle.trunk, handle.transport)
            retired._retired = True
            self._calls[old.sip_call_id] = retired
        elif self._calls.get(old.sip_call_id) is handle:
            del self._calls[old.sip_call_id]
        handle.call = self._call_for(old.call_id, dial, target, now)
        self._attempt(handle, target)
        return True

    def _on_transport_error_of(self, transport: SipTransport) -> Callable[[Addr, str], None]:
        def on_error(addr: Addr, reason: str) -> None:
            self._on_transport_error(transport, addr, reason)

        return on_error

    def _on_transport_error(self, transport: SipTransport, addr: Addr, reason: str) -> None:
        """A connection could not be opened: calls whose INVITE waited on it move on or end.

        Only calls still in Calling: their INVITE never left, so no dialog can exist.
        """
        if self._loop is None:
            return
        for handle in list(self._calls.values()):
            call = handle.call
            if handle._retired or handle.transport is not transport or handle.trunk != addr:
                continue
            invite = call.call if isinstance(call, TransferringCall) else call
            if not isinstance(invite, OutboundCall) or invite.state is not CallState.CALLING:
                continue
            ended = Ended(errors.UNREACHABLE, None, reason)
            if self._fail_over(handle, ended, reason):
                continue
            if self._calls.get(call.sip_call_id) is handle:
                del self._calls[call.sip_call_id]
            handle._closed = True
            handle.events.put_nowait(ended)
            log.info("%s: ended (%s)", call.call_id, reason)
        if not self._calls:
            self._idle.set()
        self._rearm()
