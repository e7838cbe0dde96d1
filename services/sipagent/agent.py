"""The asyncio side of the SIP user agent: one transport, many calls.

``SipAgent`` moves bytes between the transport and the sans-I/O
``OutboundCall`` objects (found by SIP Call-ID), keeps one ``loop.call_at``
timer for all of them, and answers requests that belong to no call.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sipmessage import URI, Request, Response

from proto.fleet import SipDialogRecord
from services.common.providers import Trunk
from services.common.settings import Settings, local_address_toward
from services.sipagent.call import ALLOW, USER_AGENT, OutboundCall
from services.sipagent.events import CallEvent
from services.sipagent.recovery import RecoveredBye
from services.sipagent.sip.auth import DigestAuthenticator
from services.sipagent.sip.message import (
    SipMessage,
    SipParseError,
    bad_request,
    make_response,
    new_call_id,
    new_tag,
    parse_message,
    summary,
)
from services.sipagent.sip.next_hop import Hops
from services.sipagent.sip.transaction import T1
from services.sipagent.transfer import TransferringCall
from services.sipagent.transport import Addr, SipTransport, open_transport

log = logging.getLogger(__name__)

# RFC 3261 user part: unreserved / escaped / user-unreserved, plus a raw "#"
# (PBX feature codes like "123#"), which is sent escaped as "%23".
_DESTINATION = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/#]|%[0-9A-Fa-f]{2}){1,128}")

RESOLVE_TIMEOUT = 5.0
"Seconds allowed to resolve SIP_TRUNK_HOST before a dial fails."

SipObserver = Callable[[str, str], None]
"Told ``(direction, summary)`` of each SIP message of a call (``>`` sent, ``<`` received)."


class DialError(Exception):
    """The call could not be placed; the message says why."""


def check_destination(destination: str) -> None:
    """Raise ``ValueError`` unless ``destination`` can be a SIP user part."""
    sip_user(destination)


def sip_user(destination: str) -> str:
    """``destination`` as a SIP user part, ``#`` escaped; ``ValueError`` if it cannot be one."""
    if not _DESTINATION.fullmatch(destination):
        raise ValueError("only SIP user-part characters and # are allowed (up to 128)")
    # "#" is not allowed raw in a user part (RFC 3261 25.1): escape it.
    return destination.replace("#", "%23")


def request_uri_for(destination: str, domain: str) -> str:
    """``sip:<destination>@<domain>``; ``ValueError`` unless a valid SIP user part."""
    uri = URI.parse(f"sip:{sip_user(destination)}@{_host(domain)}")
    # As it goes on the wire, so the digest "uri" matches the Request-URI exactly.
    return str(uri)


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


@dataclass(frozen=True)
class AgentConfig:
    trunk_host: str
    trunk_port: int = 5060
    domain: str = ""
    username: str = ""
    password: str = field(default="", repr=False)
    transport: str = "udp"
    bind_host: str = "0.0.0.0"
    local_port: int = 0
    public_ip: str = ""
    invite_timeout: float = 60.0
    t1: float = T1
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
            bind_host=settings.sip_bind_host,
            local_port=settings.sip_local_port,
            public_ip=settings.public_ip,
            invite_timeout=settings.invite_timeout,
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
    """One placed call as the service sees it: a queue of events and a hang-up."""

    def __init__(
        self, agent: SipAgent, call: SipCall, trunk: Addr, transport: SipTransport | None = None
    ) -> None:
        self.call = call
        self.trunk = trunk
        self.transport = transport
        "The transport of the call (None: the agent's first one)."
        self.events: asyncio.Queue[CallEvent] = asyncio.Queue()
        self.observer: SipObserver | None = None
        self.hops: Hops | None = None
        "Where in-dialog requests go (None: everything to ``trunk``)."
        self._agent = agent

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
    def __init__(self, config: AgentConfig, transport: SipTransport | None = None) -> None:
        self.config = config
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

    async def start(self) -> None:
        """Bind the SIP transport (unless one was given)."""
        self._loop = asyncio.get_running_loop()
        config = self.config
        if self._transport is None:
            self._transport = await self._open(config.transport, config.local_port)
        self._transports[self._transport.name] = self._transport
        log.info(
            "sip %s on %s:%d toward %s:%d",
            self._transport.name,
            config.bind_host,
            self._transport.local_port,
            config.trunk_host or "(no trunk)",
            config.trunk_port,
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
        config = self.config
        if self._transport is None or self._loop is None:
            raise DialError("SIP agent not started")
        trunk = trunk or self.default_trunk()
        if not trunk.host:
            raise DialError("no SIP trunk configured")
        domain = trunk.realm_domain
        try:
            request_uri = request_uri_for(destination, domain)
        except ValueError as exc:
            raise DialError(f"invalid destination: {exc}") from None
        transport = await self._transport_for(trunk.transport)
        address = await self._resolve(trunk)
        sent_by = self._sent_by(address, transport)
        user = f"{trunk.username}@" if trunk.username else ""

        def place(uri: str) -> OutboundCall:
            return OutboundCall(
                call_id=call_id,
                request_uri=uri,
                from_uri=f"sip:{trunk.username or 'anonymous'}@{_host(domain)}",
                contact=f"<sip:{user}{sent_by};transport={transport.name}>",
                sent_by=sent_by,
                offer_sdp=offer_sdp,
                username=trunk.username,
                password=trunk.password,
                transport=transport.name,
                invite_timeout=config.invite_timeout,
                t1=config.t1,
                # Custom headers are for the party dialled; a transfer target gets none.
                invite_headers=list(headers) if uri == request_uri else [],
                sip_call_id=new_call_id(),
                dtmf=trunk.dtmf,
                keepalive=config.keepalive_interval,
                transfer=trunk.transfer,
            )

        call = TransferringCall(place(request_uri), place)
        handle = CallHandle(self, call, address, transport)
        handle.observer = observer
        handle.hops = Hops(address)
        self._host_call(handle)
        return handle

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
        if self._loop is None:
            return
        handle.call.hangup(cause, self._loop.time())
        self._service(handle, None)
        self._rearm()

    def drive(self, handle: CallHandle, action: Callable[[float], None]) -> None:
        """Run ``action(now)`` on a call, then send what it queued."""
        if self._loop is None:
            return
        action(self._loop.time())
        self._service(handle, None)
        self._rearm()

    async def close(self) -> None:
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
        return f"{_host(local_ip)}:{transport.local_port}"

    async def _open(self, name: str, port: int) -> SipTransport:
        holder: list[SipTransport] = []

        def on_message(data: bytes, addr: Addr) -> None:
            self.receive(data, addr, holder[0] if holder else None)

        transport = await open_transport(name, self.config.bind_host, port, on_message)
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

    async def _resolve(self, trunk: Trunk) -> Addr:
        assert self._loop is not None
        config = self.config
        host, port, transport = trunk.host, trunk.port, trunk.transport
        label = "SIP_TRUNK_HOST" if trunk.name == "default" else f"trunk {trunk.name!r} host"
        family = socket.AF_UNSPEC
        if config.bind_host and config.bind_host not in ("::", "0.0.0.0"):
            family = socket.AF_INET6 if ":" in config.bind_host else socket.AF_INET
        elif config.bind_host == "0.0.0.0":
            family = socket.AF_INET
        kind = socket.SOCK_STREAM if transport == "tcp" else socket.SOCK_DGRAM
        try:
            # getaddrinfo has no timeout of its own: a dead DNS server would hang the dial.
            infos = await asyncio.wait_for(
                self._loop.getaddrinfo(host, port, family=family, type=kind),
                RESOLVE_TIMEOUT,
            )
        except TimeoutError:
            raise DialError(f"could not resolve {label} {host} in {RESOLVE_TIMEOUT:g} s") from None
        except OSError as exc:
            raise DialError(f"cannot resolve {label} {host}: {exc}") from None
        if not infos:
            raise DialError(f"cannot resolve {label} {host}")
        address = infos[0][4]
        return str(address[0]), int(address[1])

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
            self._stateless(message, addr, transport)
            return
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
            handle.events.put_nowait(event)
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
        """One timer for the agent, at the earliest timer of any call."""
        assert self._loop is not None
        when = min(
            (t for t in (h.call.get_timer() for h in self._calls.values()) if t is not None),
            default=None,
        )
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
        self._rearm()
