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

This module is the state machine: which message or deadline moves a call
(``call.DemoCall``) from one state to the next and what is sent then. What
it writes is built by ``messages``; what it reports is in ``events``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from sipmessage import Request, Response

from services.common.sip.invite_server import AckReceived, AckTimedOut, InviteServerTransaction
from services.common.sip.message import (
    SipMessage,
    SipParseError,
    bad_request,
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
from services.demo.call import LIVE, CallState, DemoCall
from services.demo.events import Addr, CallAnswered, CallEnded, Event, RtpPorts
from services.demo.messages import (
    ALLOW,
    Local,
    Refusal,
    build_bye,
    build_ok,
    build_response,
    options_response,
    read_offer,
    register_response,
    session_id,
)

logger = logging.getLogger(__name__)

DEFAULT_RING_DELAY = 0.5
DEFAULT_MAX_DURATION = 3600.0
DEFAULT_MAX_CALLS = 200
# How long an ended call is remembered, so retransmitted BYEs and INVITEs get the same answer.
LINGER = 64 * T1


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
        self._local = Local(local_addr, transport.upper())
        self._rtp_host = rtp_host
        self._rtp_ports = rtp_ports
        # Over TCP the transport does not lose messages: only the 2xx is re-sent (end to end).
        self._reliable = self._local.transport != "UDP"
        self._ring_delay = ring_delay
        self._max_duration = max_duration
        self._max_calls = max_calls
        self._t1 = t1
        self._t2 = t2
        self._calls: dict[str, DemoCall] = {}
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
            elif call.state in LIVE:
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

        call = DemoCall(ctx.call_id, addr, request, ctx.cseq, new_tag(), self._transaction(request))
        # The route set is fixed by the dialog-creating INVITE; a re-INVITE has no Record-Route.
        call.routes = request.headers.getlist("Record-Route")
        self._calls[call.call_id] = call
        self._respond(call, build_response(request, 100), now)
        offer = self._read_offer(request)
        if isinstance(offer, Refusal):
            self._reject(
                call, offer.code, now, reason=f"rejected {offer.code}", headers=offer.headers
            )
            return
        call.negotiated = offer
        self._respond(call, call.response(180, [("Contact", self._local.contact)]), now)
        call.answer_at = now + self._ring_delay
        if self._ring_delay <= 0:
            self._answer(call, now)

    def _read_offer(self, request: Request) -> sdp.Negotiated | Refusal:
        if self.active_calls > self._max_calls:
            return Refusal(503, [("Retry-After", "5")])
        return read_offer(request)

    def _handle_reinvite(
        self, call: DemoCall, request: Request, ctx: _Context, addr: Addr, now: float
    ) -> None:
        # Keep the media, renegotiate the codec: a refresh or hold must not end the echo.
        negotiated = sdp.negotiate(request.body) if request.body else call.negotiated
        call.invite, call.cseq = request, ctx.cseq
        call.tx = self._transaction(request)
        if negotiated is None:
            self._respond(call, call.response(488), now)
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
        self._send(options_response(request, None if ctx.to_tag else new_tag()), addr)

    def _handle_info(self, request: Request, ctx: _Context, addr: Addr, now: float) -> None:
        call = self._calls.get(ctx.call_id)
        known = call is not None and call.state in LIVE and ctx.to_tag == call.local_tag
        self._send(build_response(request, 200 if known else 481), addr)

    def _handle_register(self, request: Request, ctx: _Context, addr: Addr, now: float) -> None:
        # A trunk configuration may register first; the demo accepts any registration.
        self._send(register_response(request, None if ctx.to_tag else new_tag()), addr)

    def _handle_response(self, response: Response, now: float) -> None:
        call = self._calls.get(response.call_id)
        if call is None or call.bye is None or not call.bye.matches(response):
            return
        call.bye.receive(response, now)
        self._drain_bye(call, now)

    # -- timers ----------------------------------------------------------------------------

    def _on_timer(self, call: DemoCall, now: float) -> None:
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

    def _drain(self, call: DemoCall, now: float) -> None:
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

    def _drain_bye(self, call: DemoCall, now: float) -> None:
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

    def _answer(self, call: DemoCall, now: float) -> None:
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

    def _send_ok(self, call: DemoCall, now: float) -> None:
        assert call.negotiated is not None and call.rtp_port is not None
        body = sdp.build_answer(
            call.negotiated,
            self._rtp_host,
            call.rtp_port,
            session_id(call.call_id),
            call.sdp_version,
        )
        ok = build_ok(call.invite, call.local_tag, self._local.contact, body)
        call.state = CallState.ANSWERED  # until the transaction reports the ACK
        self._respond(call, ok, now)

    def _reject(
        self,
        call: DemoCall,
        code: int,
        now: float,
        *,
        reason: str,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        response = call.response(code, headers)
        call.state = CallState.REJECTED
        call.answer_at = None
        self._respond(call, response, now)
        self._end(call, reason)

    def _send_bye(self, call: DemoCall, now: float, *, reason: str) -> None:
        call.local_cseq += 1
        bye = build_bye(
            call.invite,
            local_tag=call.local_tag,
            routes=call.routes,
            cseq=call.local_cseq,
            via=self._local.via(),
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

    def _respond(self, call: DemoCall, response: Response, now: float) -> None:
        call.tx.respond(response, now)
        self._drain(call, now)

    def _end(self, call: DemoCall, reason: str) -> None:
        """Release the call's media and report it, once."""
        if call.ended:
            return
        call.ended = True
        if call.rtp_port is not None:
            self._rtp_ports.close(call.call_id)
        self._events.append(CallEnded(call.call_id, reason))

    def _terminate(self, call: DemoCall, now: float) -> None:
        call.state = CallState.TERMINATED  # the transactions' timers stop with it
        call.answer_at = call.ends_at = None
        call.forget_at = now + LINGER

    def _forget(self, call: DemoCall) -> None:
        self._end(call, "forgotten")
        self._calls.pop(call.call_id, None)

    def _send(self, message: SipMessage | bytes, addr: Addr) -> None:
        self._datagrams.append((bytes(message), addr))
