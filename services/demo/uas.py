"""Sans-I/O SIP UAS of the demo peer: answers every call so the caller hears an echo.

Drive it with ``receive(data, addr, now)`` and ``handle_timer(now)``; pull what it wants sent
with ``datagrams_to_send()``, when to call it next with ``get_timer()`` and what happened to
calls with ``next_event()``. RTP ports come from an injected ``RtpPorts`` so tests need no socket.

Each INVITE (the first and every re-INVITE) is answered through the shared
``InviteServerTransaction``: it repeats the last response to a retransmitted
INVITE, re-sends the 2xx until its ACK and a final error until its ACK on UDP,
and says when none came. Our BYE is a ``NonInviteClientTransaction``. The
demo's own timers are the ring delay, the maximum duration and how long an
ended call is remembered.
"""

from __future__ import annotations

import enum
import logging
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from sipmessage import Address, Request, Response

from services.common.sip.invite_server import AckReceived, AckTimedOut, InviteServerTransaction
from services.common.sip.message import (
    SipMessage,
    SipParseError,
    bad_request,
    make_request,
    make_response,
    new_branch,
    new_tag,
    parse_message,
    tag_of,
)
from services.common.sip.transaction import (
    T1,
    T2,
    NonInviteClientTransaction,
    ResponseReceived,
)
from services.demo import sdp

logger = logging.getLogger(__name__)

Addr = tuple[str, int]

DEFAULT_RING_DELAY = 0.5
DEFAULT_MAX_DURATION = 3600.0
DEFAULT_MAX_CALLS = 200
# How long an ended call is remembered, so retransmitted BYEs and INVITEs get the same answer.
LINGER = 64 * T1
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, REGISTER"
SERVER = "webrtc-sip-bridge demo peer"


class RtpPorts(Protocol):
    """Opens and closes the per-call echo socket; ``open`` raises OSError when it cannot."""

    def open(self, call_id: str) -> int: ...

    def close(self, call_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class CallAnswered:
    """A call got its 200 OK."""

    call_id: str
    "The Call-ID of the call."
    codec: str
    "The codec of the answer, PCMU or PCMA."
    rtp_port: int
    "The local port echoing the call's RTP."


@dataclass(frozen=True, slots=True)
class CallEnded:
    """A call is over, answered or not; its RTP port is closed."""

    call_id: str
    "The Call-ID of the call."
    reason: str
    "Why, in a few words: 'remote BYE', 'cancelled', 'rejected 488', 'maximum duration'..."


Event = CallAnswered | CallEnded


class CallState(enum.Enum):
    RINGING = "ringing"  # 100 and 180 sent, 200 due at the end of the ring delay
    ANSWERED = "answered"  # 200 sent, re-sent by its transaction until the ACK
    CONFIRMED = "confirmed"  # ACK received, the echo runs
    REJECTED = "rejected"  # a final error sent to the INVITE, waiting for its ACK
    ENDING = "ending"  # our BYE sent, waiting for its response
    TERMINATED = "terminated"  # over; kept a while to answer retransmissions


_LIVE = frozenset({CallState.ANSWERED, CallState.CONFIRMED})


@dataclass
class _Call:
    call_id: str
    addr: Addr
    invite: Request
    cseq: int
    local_tag: str
    tx: InviteServerTransaction
    "The transaction of the latest INVITE (the first or a re-INVITE)."
    state: CallState = CallState.RINGING
    negotiated: sdp.Negotiated | None = None
    rtp_port: int | None = None
    sdp_version: int = 0
    ended: bool = False
    local_cseq: int = 0
    bye: NonInviteClientTransaction | None = None
    # Deadlines, in the clock of ``now``; None when not armed.
    answer_at: float | None = None
    ends_at: float | None = None
    forget_at: float | None = None
    routes: list[str] = field(default_factory=list)

    def tx_timer(self) -> float | None:
        """When the INVITE's transaction is due; its timers stop once we end the call."""
        if self.state in (CallState.ENDING, CallState.TERMINATED):
            return None
        return self.tx.get_timer()

    def bye_timer(self) -> float | None:
        return self.bye.get_timer() if self.bye and self.state is CallState.ENDING else None

    def deadline(self) -> float | None:
        times = (
            self.answer_at,
            self.ends_at,
            self.forget_at,
            self.tx_timer(),
            self.bye_timer(),
        )
        return min((t for t in times if t is not None), default=None)


@dataclass(frozen=True, slots=True)
class _Context:
    call_id: str
    cseq: int
    to_tag: str
    "The To tag of the request, empty outside a dialog."


class DemoUas:
    """Answers every INVITE with an echo: one instance per SIP transport."""

    def __init__(
        self,
        *,
        local_addr: Addr,
        rtp_host: str,
        rtp_ports: RtpPorts,
        transport: str = "UDP",
        ring_delay: float = DEFAULT_RING_DELAY,
        max_duration: float = DEFAULT_MAX_DURATION,
        max_calls: int = DEFAULT_MAX_CALLS,
        t1: float = T1,
        t2: float = T2,
    ) -> None:
        self._local_addr = local_addr
        self._rtp_host = rtp_host
        self._rtp_ports = rtp_ports
        self._transport = transport.upper()
        # Over TCP the transport does not lose messages: only the 2xx is re-sent (end to end).
        self._reliable = self._transport != "UDP"
        self._ring_delay = ring_delay
        self._max_duration = max_duration
        self._max_calls = max_calls
        self._t1 = t1
        self._t2 = t2
        self._calls: dict[str, _Call] = {}
        self._datagrams: list[tuple[bytes, Addr]] = []
        self._events: deque[Event] = deque()
        self._handlers: dict[str, Callable[[Request, _Context, Addr, float], None]] = {
            "INVITE": self._handle_invite,
            "ACK": self._handle_ack,
            "BYE": self._handle_bye,
            "CANCEL": self._handle_cancel,
            "OPTIONS": self._handle_options,
            "INFO": self._handle_info,
            "REGISTER": self._handle_register,
        }

    # -- the sans-I/O surface ------------------------------------------------------------

    def receive(self, data: bytes, addr: Addr, now: float) -> None:
        """Handle one SIP message from ``addr``. Never raises."""
        try:
            self._receive(data, addr, now)
        except Exception:
            # A peer bug must not take the demo down; the traceback says where.
            logger.exception("failed to handle a message from %s", addr)

    def handle_timer(self, now: float) -> None:
        """Run every deadline that is due."""
        for call in list(self._calls.values()):
            # Several deadlines of one call may be due after a long pause; each step
            # moves or clears the one it handled.
            for _ in range(8):
                deadline = call.deadline()
                if deadline is None or deadline > now or self._calls.get(call.call_id) is not call:
                    break
                try:
                    self._on_timer(call, now)
                except Exception:
                    logger.exception("timer of call %s failed", call.call_id)
                    self._forget(call)

    def get_timer(self) -> float | None:
        """The earliest deadline, or None when nothing is pending."""
        deadlines = [d for d in (c.deadline() for c in self._calls.values()) if d is not None]
        return min(deadlines) if deadlines else None

    def datagrams_to_send(self) -> list[tuple[bytes, Addr]]:
        datagrams, self._datagrams = self._datagrams, []
        return datagrams

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def shutdown(self, now: float) -> None:
        """End every call now: BYE for answered ones, 503 for ringing ones."""
        for call in list(self._calls.values()):
            if call.state is CallState.RINGING:
                self._reject(call, 503, now, reason="shutdown")
            elif call.state in _LIVE:
                self._send_bye(call, now, reason="shutdown")

    @property
    def active_calls(self) -> int:
        return sum(1 for c in self._calls.values() if not c.ended)

    # -- input -----------------------------------------------------------------------------

    def _receive(self, data: bytes, addr: Addr, now: float) -> None:
        if not data.strip():
            return  # a CRLF keep-alive
        try:
            message = parse_message(data)
        except SipParseError as exc:
            self._send_bad_request(data, str(exc), addr)
            return
        if isinstance(message, Response):
            self._handle_response(message, now)
            return
        handler = self._handlers.get(message.method)
        if handler is None:
            if message.method != "ACK":
                self._send(build_response(message, 405, headers=[("Allow", ALLOW)]), addr)
            return
        context = _Context(message.call_id, message.cseq.sequence, tag_of(message.headers["To"]))
        handler(message, context, addr, now)

    def _send_bad_request(self, data: bytes, reason: str, addr: Addr) -> None:
        response = bad_request(data, reason)
        if response is not None:
            self._send(response, addr)
        else:
            logger.debug("dropped an unparseable message from %s", addr)

    def _handle_invite(self, request: Request, ctx: _Context, addr: Addr, now: float) -> None:
        call = self._calls.get(ctx.call_id)
        if call is not None and ctx.cseq == call.cseq:
            if call.tx.matches(request):  # a retransmission: its transaction answers it
                call.tx.receive(request, now)
                self._drain(call, now)
            return
        if call is not None and call.state is CallState.TERMINATED and not ctx.to_tag:
            self._forget(call)  # a new call that reuses the Call-ID of an old one
            call = None
        if call is not None:
            if call.state is CallState.CONFIRMED and ctx.to_tag == call.local_tag:
                self._handle_reinvite(call, request, ctx, addr, now)
            else:
                self._send(build_response(request, 491, to_tag=ctx.to_tag), addr)
            return
        if ctx.to_tag:
            self._send(build_response(request, 481), addr)
            return

        call = _Call(ctx.call_id, addr, request, ctx.cseq, new_tag(), self._transaction(request))
        # The route set is fixed by the dialog-creating INVITE; a re-INVITE has no Record-Route.
        call.routes = request.headers.getlist("Record-Route")
        self._calls[call.call_id] = call
        self._respond(call, build_response(request, 100), now)
        if error := self._check_offer(call, request):
            self._reject(call, error[0], now, reason=f"rejected {error[0]}", headers=error[1])
            return
        ringing = build_response(
            request, 180, to_tag=call.local_tag, headers=[("Contact", self._contact())]
        )
        self._respond(call, ringing, now)
        call.answer_at = now + self._ring_delay
        if self._ring_delay <= 0:
            self._answer(call, now)

    def _check_offer(
        self, call: _Call, request: Request
    ) -> tuple[int, list[tuple[str, str]]] | None:
        """Negotiate the offer into ``call``; on failure, the error code and its headers."""
        if self.active_calls > self._max_calls:
            return 503, [("Retry-After", "5")]
        unsupported = request.require
        if unsupported:
            return 420, [("Unsupported", ", ".join(unsupported))]
        content_type = request.headers.get("Content-Type", "application/sdp") or ""
        if content_type.split(";")[0].strip().lower() != "application/sdp":
            return 415, [("Accept", "application/sdp")]
        # No offer means the caller wants ours; an echo test does not need that flow.
        negotiated = sdp.negotiate(request.body) if request.body else None
        if negotiated is None:
            return 488, [("Warning", '304 demo "only PCMU or PCMA audio over RTP/AVP"')]
        call.negotiated = negotiated
        return None

    def _handle_reinvite(
        self, call: _Call, request: Request, ctx: _Context, addr: Addr, now: float
    ) -> None:
        # Keep the media, renegotiate the codec: a refresh or hold must not end the echo.
        negotiated = sdp.negotiate(request.body) if request.body else call.negotiated
        call.invite, call.cseq = request, ctx.cseq
        call.tx = self._transaction(request)
        if negotiated is None:
            self._respond(call, build_response(request, 488, to_tag=call.local_tag), now)
            return
        call.negotiated = negotiated
        call.sdp_version += 1
        self._send_ok(call, now)

    def _handle_ack(self, request: Request, ctx: _Context, addr: Addr, now: float) -> None:
        call = self._calls.get(ctx.call_id)
        if call is None or not call.tx.matches(request):
            return
        call.tx.receive(request, now)
        self._drain(call, now)
        if call.state is CallState.REJECTED and call.tx.acknowledged:
            self._terminate(call, now)

    def _handle_bye(self, request: Request, ctx: _Context, addr: Addr, now: float) -> None:
        call = self._calls.get(ctx.call_id)
        if call is None or call.state is CallState.REJECTED or ctx.to_tag != call.local_tag:
            self._send(build_response(request, 481), addr)
            return
        self._send(build_response(request, 200), addr)
        if call.state is CallState.RINGING:
            # A BYE on the early dialog still owes the INVITE a final answer.
            self._reject(call, 487, now, reason="remote BYE")
        elif call.state is not CallState.TERMINATED:
            self._end(call, "remote BYE")
            self._terminate(call, now)

    def _handle_cancel(self, request: Request, ctx: _Context, addr: Addr, now: float) -> None:
        call = self._calls.get(ctx.call_id)
        if call is None or ctx.cseq != call.cseq:
            self._send(build_response(request, 481), addr)
            return
        # A CANCEL after the final response matches but changes nothing (RFC 3261 9.2).
        self._send(build_response(request, 200, to_tag=call.local_tag), addr)
        if call.state is CallState.RINGING:
            self._reject(call, 487, now, reason="cancelled")

    def _handle_options(self, request: Request, ctx: _Context, addr: Addr, now: float) -> None:
        headers = [("Allow", ALLOW), ("Accept", "application/sdp")]
        to_tag = None if ctx.to_tag else new_tag()
        self._send(build_response(request, 200, to_tag=to_tag, headers=headers), addr)

    def _handle_info(self, request: Request, ctx: _Context, addr: Addr, now: float) -> None:
        call = self._calls.get(ctx.call_id)
        known = call is not None and call.state in _LIVE and ctx.to_tag == call.local_tag
        self._send(build_response(request, 200 if known else 481), addr)

    def _handle_register(self, request: Request, ctx: _Context, addr: Addr, now: float) -> None:
        # A trunk configuration may register first; the demo accepts any registration.
        headers = [("Contact", c) for c in request.headers.getlist("Contact")]
        headers.append(("Expires", request.headers.get("Expires", "3600") or "3600"))
        to_tag = None if ctx.to_tag else new_tag()
        self._send(build_response(request, 200, to_tag=to_tag, headers=headers), addr)

    def _handle_response(self, response: Response, now: float) -> None:
        call = self._calls.get(response.call_id)
        if call is None or call.bye is None or not call.bye.matches(response):
            return
        call.bye.receive(response, now)
        self._drain_bye(call, now)

    # -- timers ----------------------------------------------------------------------------

    def _on_timer(self, call: _Call, now: float) -> None:
        if call.forget_at is not None and call.forget_at <= now:
            self._forget(call)
            return
        if call.answer_at is not None and call.answer_at <= now:
            call.answer_at = None
            self._answer(call, now)
            return
        if call.ends_at is not None and call.ends_at <= now:
            self._send_bye(call, now, reason="maximum duration")
            return
        if (deadline := call.tx_timer()) is not None and deadline <= now:
            call.tx.handle_timer(now)
            self._drain(call, now)
            return
        if call.bye is not None and (deadline := call.bye_timer()) is not None and deadline <= now:
            call.bye.handle_timer(now)
            self._drain_bye(call, now)

    def _drain(self, call: _Call, now: float) -> None:
        """Send what the INVITE's transaction wants sent; act on its ACK or the lack of one."""
        tx = call.tx
        for response in tx.messages_to_send():
            self._send(response, call.addr)
        while (event := tx.next_event()) is not None:
            if isinstance(event, AckReceived):
                if call.state is CallState.ANSWERED:
                    call.state = CallState.CONFIRMED
            elif isinstance(event, AckTimedOut):
                if call.state is CallState.ANSWERED:
                    # No ACK for our 2xx: the dialog exists, so end it with a BYE
                    # (RFC 3261 13.3.1.4).
                    self._send_bye(call, now, reason="no ACK")
                elif call.state is CallState.REJECTED:
                    self._terminate(call, now)  # no ACK for our error response

    def _drain_bye(self, call: _Call, now: float) -> None:
        """Send what our BYE's transaction wants sent; its final response or Timer F ends it."""
        bye = call.bye
        assert bye is not None
        for message in bye.messages_to_send():
            self._send(message, call.addr)
        while (event := bye.next_event()) is not None:
            final = not isinstance(event, ResponseReceived) or event.response.code >= 200
            if final and call.state is CallState.ENDING:
                self._terminate(call, now)

    # -- output ----------------------------------------------------------------------------

    def _answer(self, call: _Call, now: float) -> None:
        assert call.negotiated is not None
        try:
            call.rtp_port = self._rtp_ports.open(call.call_id)
        except OSError as exc:
            logger.warning("no RTP port for call %s: %s", call.call_id, exc)
            self._reject(call, 503, now, reason="no RTP port", headers=[("Retry-After", "5")])
            return
        call.ends_at = now + self._max_duration
        self._send_ok(call, now)
        self._events.append(CallAnswered(call.call_id, call.negotiated.codec, call.rtp_port))

    def _send_ok(self, call: _Call, now: float) -> None:
        assert call.negotiated is not None and call.rtp_port is not None
        body = sdp.build_answer(
            call.negotiated, self._rtp_host, call.rtp_port, _session_id(call), call.sdp_version
        )
        headers = [
            ("Contact", self._contact()),
            *(("Record-Route", rr) for rr in call.invite.headers.getlist("Record-Route")),
            ("Allow", ALLOW),
        ]
        ok = build_response(call.invite, 200, to_tag=call.local_tag, headers=headers, body=body)
        call.state = CallState.ANSWERED  # until the transaction reports the ACK
        self._respond(call, ok, now)

    def _reject(
        self,
        call: _Call,
        code: int,
        now: float,
        *,
        reason: str,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        response = build_response(call.invite, code, to_tag=call.local_tag, headers=headers or [])
        call.state = CallState.REJECTED
        call.answer_at = None
        self._respond(call, response, now)
        self._end(call, reason)

    def _send_bye(self, call: _Call, now: float, *, reason: str) -> None:
        call.local_cseq += 1
        remote = call.invite.contact
        from_header = call.invite.headers["From"]
        target = str(remote[0].uri) if remote else str(Address.parse(from_header).uri)
        via = f"SIP/2.0/{self._transport} {self._hostport()};branch={new_branch()};rport"
        to_header = call.invite.headers["To"]
        if not tag_of(to_header):
            to_header = f"{to_header};tag={call.local_tag}"
        # We are the callee: the route set is the Record-Route list in its order (RFC 3261 12.1.1).
        bye = make_request(
            "BYE",
            target,
            [
                ("Via", via),
                ("Max-Forwards", "70"),
                *(("Route", route) for route in call.routes),
                ("From", to_header),
                ("To", from_header),
                ("Call-ID", call.call_id),
                ("CSeq", f"{call.local_cseq} BYE"),
                ("User-Agent", SERVER),
            ],
        )
        call.bye = NonInviteClientTransaction(
            bye, reliable=self._reliable, t1=self._t1, t2=self._t2
        )
        call.state = CallState.ENDING
        call.ends_at = None
        call.bye.start(now)
        self._drain_bye(call, now)
        self._end(call, reason)

    def _transaction(self, invite: Request) -> InviteServerTransaction:
        # A retransmitted INVITE before the ACK gets the 2xx again at once: the caller missed it.
        return InviteServerTransaction(
            invite, reliable=self._reliable, t1=self._t1, t2=self._t2, resend_2xx=True
        )

    def _respond(self, call: _Call, response: Response, now: float) -> None:
        call.tx.respond(response, now)
        self._drain(call, now)

    def _end(self, call: _Call, reason: str) -> None:
        """Release the call's media and report it, once."""
        if call.ended:
            return
        call.ended = True
        if call.rtp_port is not None:
            self._rtp_ports.close(call.call_id)
        self._events.append(CallEnded(call.call_id, reason))

    def _terminate(self, call: _Call, now: float) -> None:
        call.state = CallState.TERMINATED  # the transactions' timers stop with it
        call.answer_at = call.ends_at = None
        call.forget_at = now + LINGER

    def _forget(self, call: _Call) -> None:
        self._end(call, "forgotten")
        self._calls.pop(call.call_id, None)

    def _send(self, message: SipMessage | bytes, addr: Addr) -> None:
        self._datagrams.append((bytes(message), addr))

    def _hostport(self) -> str:
        host, port = self._local_addr
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def _contact(self) -> str:
        suffix = "" if self._transport == "UDP" else f";transport={self._transport.lower()}"
        return f"<sip:demo@{self._hostport()}{suffix}>"


def _session_id(call: _Call) -> int:
    # Stable per call so re-answers keep the same o= line with a higher version.
    return random.Random(call.call_id).randrange(1, 2**31)


def build_response(
    request: Request,
    code: int,
    *,
    to_tag: str | None = None,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> Response:
    """A response of the demo peer to ``request`` (To tagged if asked)."""
    return make_response(
        request,
        code,
        to_tag=to_tag or "",
        headers=[("Server", SERVER), *(headers or [])],
        body=body,
        content_type="application/sdp" if body else None,
    )
