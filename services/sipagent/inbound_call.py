"""One call from the trunk, sans-I/O: the INVITE we answer, and the dialog it makes.

``InboundCall`` is the UAS of one INVITE. The host decides (it rings
browsers over NATS) and tells the call: ``start`` (100 Trying), ``ring``
(180, once), ``reject`` (a final 4xx-6xx), ``answer`` (200 with our SDP,
re-sent until the ACK by the INVITE server transaction) or ``hangup``
(before the answer a final response saying why, ``unanswered_status``:
503 with Retry-After when the agent stops, 500 for internal, else 480; BYE
after).
Only the trunk's CANCEL before our final response gets the INVITE a 487
(and the CANCEL its 200): the call ends ``cancelled``. A call that gets no
final response from the host within ``max_unanswered`` of its start ends
itself with 480, ``no_answer``: a backstop should the host never decide.

On the ACK the call reports ``Answered`` with the INVITE's SDP offer (the
trunk's side of the session) and from then on is a confirmed dialog like an
outbound one (``CallBase``): BYE both ways, hold, DTMF, the trunk's
re-INVITE/UPDATE, session timers, keep-alive, REFER. No ACK within 64*T1:
BYE, and ``Ended`` with cause ``timeout``. Exactly one ``Ended`` per call.

``refusal(invite)`` says what is wrong with an INVITE the bridge cannot
answer (no SDP offer, a body that is not SDP, no Contact, an extension we
lack, a session interval too brief); the host refuses those itself.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

from sipmessage import Request, Response

from proto import errors
from services.common.sip.dialog import Dialog
from services.common.sip.invite_server import AckReceived, AckTimedOut, InviteServerTransaction
from services.common.sip.message import (
    SipMessage,
    make_response,
    new_tag,
    summary,
    top_branch,
)
from services.common.sip.transaction import T1
from services.sipagent.call_base import CallBase, CallState, cause_of, sdp_of
from services.sipagent.dialog_context import ALLOW, USER_AGENT
from services.sipagent.events import Answered, Ended
from services.sipagent.session_timer import (
    MIN_SE,
    Negotiated,
    allows_update,
    answer_timer,
    session_expires,
)

log = logging.getLogger(__name__)

SUPPORTED = "timer"
"The option tags we support (``Supported``; anything else in a ``Require`` gets 420)."
MAX_UNANSWERED = 600.0
"Seconds a call may wait for the host's final response, at most (ring, claim, media set-up)."
RETRY_AFTER = "5"
"Seconds the trunk is asked to wait before it tries this agent again (a 503 while draining)."
SHUTTING_DOWN = frozenset({errors.NORMAL, errors.DRAINING, errors.MEDIA_SHUTDOWN})
"""Causes of a hang-up before the answer that tell the trunk 503: try another agent. Before
the answer no browser hangs up (the ring speaks for them), so ``normal`` is this agent's own
end: the service stopping."""


def unanswered_status(cause: str) -> tuple[int, str, tuple[tuple[str, str], ...]]:
    """The final response to the INVITE of a call hung up before its answer, by cause:
    503 (Retry-After) when this agent stops, 500 for its own fault, 487 only for the
    caller's CANCEL, else 480 (no answer, nobody listening, set-up or media failed,
    an operator)."""
    if cause in SHUTTING_DOWN:
        return 503, "Service Unavailable", (("Retry-After", RETRY_AFTER),)
    if cause == errors.INTERNAL:
        return 500, "Server Internal Error", ()
    if cause == errors.CANCELLED:
        return 487, "Request Terminated", ()
    return 480, "Temporarily Unavailable", ()


@dataclass(frozen=True)
class Refusal:
    """Why an INVITE cannot be answered: the final response to send instead."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()


class InboundCall(CallBase):
    """The UAS state machine of one call from the trunk."""

    def __init__(
        self,
        invite: Request,
        *,
        call_id: str,
        contact: str,
        sent_by: str,
        transport: str = "udp",
        user_agent: str = USER_AGENT,
        dtmf: str = "rfc4733",
        keepalive: float = 0.0,
        transfer: str = "follow",
        t1: float = T1,
        rng: random.Random | None = None,
        max_unanswered: float = MAX_UNANSWERED,
    ) -> None:
        """``invite``: the trunk's INVITE, parsed and admitted (``refusal`` found nothing).

        ``call_id``: the bridge's call id; ``contact``: our Contact (``<sip:...>``);
        ``sent_by``: host:port of our Via; ``transport``: ``udp``, ``tcp`` or ``tls``.
        Raises ``SipParseError`` when the INVITE cannot make a dialog (no Contact).
        """
        tag = new_tag()
        super().__init__(
            call_id=call_id,
            sip_call_id=invite.call_id,
            request_uri=str(invite.uri),
            local_tag=tag,
            contact=contact,
            sent_by=sent_by,
            transport=transport,
            t1=t1,
            user_agent=user_agent,
            dtmf=dtmf,
            keepalive=keepalive,
            transfer=transfer,
            rng=rng,
        )
        self.invite = invite
        self.offer_sdp = sdp_of(invite) or ""
        "The trunk's SDP offer."
        self._tag = tag
        self._early = Dialog.from_request(invite, tag)
        self._server = InviteServerTransaction(invite, reliable=self._reliable, t1=t1)
        self._rang = False
        self._answer_sdp = ""
        self._settled: Negotiated = None
        self._max_unanswered = max_unanswered
        self._give_up_at: float | None = None
        "When the call ends itself (480) if the host never gave a final response."

    @staticmethod
    def refusal(invite: Request) -> Refusal | None:
        """What is wrong with ``invite`` for us to answer it; None when nothing is."""
        content_type = (invite.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if invite.body and content_type not in ("", "application/sdp"):
            return Refusal(415, "Unsupported Media Type", (("Accept", "application/sdp"),))
        if not invite.body:
            return Refusal(488, "Not Acceptable Here", (("Warning", '399 - "offer required"'),))
        try:
            contacts = invite.contact
        except ValueError:
            contacts = []
        if not contacts:
            return Refusal(400, "Missing Contact")
        required = [
            token.strip().lower()
            for value in invite.headers.getlist("Require")
            for token in value.split(",")
            if token.strip()
        ]
        unknown = [token for token in required if token != SUPPORTED]
        if unknown:
            return Refusal(420, "Bad Extension", (("Unsupported", ", ".join(unknown)),))
        asked = session_expires(invite.headers.get("Session-Expires"))
        if asked is not None and asked[0] < MIN_SE:
            return Refusal(422, "Session Interval Too Small", (("Min-SE", str(MIN_SE)),))
        return None

    @property
    def ringing(self) -> bool:
        """180 was sent and no final response yet."""
        return self._rang and self.state is CallState.PROCEEDING

    @property
    def unanswered(self) -> bool:
        """No final response yet: the call still waits for the host (it rings)."""
        return self.state in (CallState.IDLE, CallState.PROCEEDING)

    # --- driving -----------------------------------------------------------------

    def start(self, now: float) -> None:
        """Say 100 Trying at once (RFC 3261 17.2.1)."""
        if self.state is not CallState.IDLE:
            return
        self._set_state(CallState.PROCEEDING)
        self._give_up_at = now + self._max_unanswered
        self._send(self._response(100), now)

    def ring(self, now: float) -> None:
        """180 Ringing, with our To tag; said once."""
        if self.state is not CallState.PROCEEDING or self._rang:
            return
        self._rang = True
        self._send(self._response(180, dialog=True), now)

    def reject(self, status: int, reason: str, now: float, *, cause: str = errors.REJECTED) -> None:
        """End the INVITE with a final ``status`` (4xx-6xx); ``Ended(cause, status, reason)``."""
        if self.state not in (CallState.IDLE, CallState.PROCEEDING):
            return
        if not 400 <= status < 700:
            raise ValueError(f"not a final failure status: {status}")
        self._send(self._response(status, reason), now)
        self._end(Ended(cause, status, reason), now)

    def answer(self, sdp: str, now: float) -> None:
        """200 with our SDP answer, re-sent until the trunk's ACK (then ``Answered``)."""
        if self.state not in (CallState.IDLE, CallState.PROCEEDING):
            return
        timer_headers, self._settled = answer_timer(self.invite, None)
        self._answer_sdp = sdp
        response = self._response(
            200, dialog=True, headers=[("Supported", SUPPORTED), *timer_headers]
        )
        body = sdp.encode()
        response.body = body
        response.headers.set("Content-Type", "application/sdp")
        response.headers.set("Content-Length", str(len(body)))
        # The dialog exists from our 2xx: a BYE may come before the ACK.
        self._dialog = self._early
        self._set_state(CallState.ACCEPTED)
        self._send(response, now)

    def receive(self, message: SipMessage, now: float) -> None:
        """Handle a message of this call (same SIP Call-ID)."""
        if isinstance(message, Response):
            self._receive_response(message, now)
            return
        server = self._server
        if not server.terminated and server.matches(message):
            server.receive(message, now)
            self._drain_server(now)
            return
        if message.method == "CANCEL" and top_branch(message) == top_branch(self.invite):
            self._on_cancel(message, now)
            return
        self._receive_request(message, now)
        self._prune()

    def hangup(self, cause: str, now: float) -> None:
        """End the call from our side: 480 or 487 before the answer, BYE after."""
        state = self.state
        if state in (CallState.IDLE, CallState.PROCEEDING):
            status, reason, headers = unanswered_status(cause)
            self._send(self._response(status, reason, headers=list(headers)), now)
            self._end(Ended(cause, status, reason), now)
        elif state is CallState.ACCEPTED:
            # RFC 3261 15: no BYE before the ACK (or its timeout); the host is told now.
            if self._pending is None:
                self._pending = Ended(cause_of(cause, errors.NORMAL), None, "Hung up")
                self._report(self._pending)
        elif state is CallState.CONFIRMED:
            self._pending = Ended(cause_of(cause, errors.NORMAL), None, "Hung up")
            self._send_bye(now)

    # --- the INVITE server transaction -------------------------------------------

    def _setup_timer(self) -> float | None:
        timers = [self._server.get_timer()]
        if self.state is CallState.PROCEEDING:
            timers.append(self._give_up_at)
        return min((t for t in timers if t is not None), default=None)

    def _on_setup_timer(self, now: float) -> None:
        deadline = self._server.get_timer()
        if deadline is not None and deadline <= now:
            self._server.handle_timer(now)
            self._drain_server(now)
        give_up = self._give_up_at
        if self.state is CallState.PROCEEDING and give_up is not None and give_up <= now:
            log.info("%s: no final response from the host in time: 480", self.call_id)
            self.reject(480, "Temporarily Unavailable", now, cause=errors.NO_ANSWER)

    def _send(self, response: Response, now: float) -> None:
        log.info("%s: > %s", self.call_id, summary(response))
        self._server.respond(response, now)
        self._drain_server(now)

    def _drain_server(self, now: float) -> None:
        self._outbox.extend(self._server.messages_to_send())
        while (event := self._server.next_event()) is not None:
            if isinstance(event, AckReceived):
                self._on_ack(event.ack, now)
            elif isinstance(event, AckTimedOut) and event.status < 300:
                self._on_no_ack(now)

    def _on_ack(self, ack: Request, now: float) -> None:
        if self.state is not CallState.ACCEPTED:
            return  # the BYE of either side came first
        log.info("%s: < ACK", self.call_id)
        self._confirm(
            self._early,
            local_sdp=self._answer_sdp,
            remote_sdp=self.offer_sdp,
            settled=self._settled,
            use_update=allows_update(self.invite),
            now=now,
        )
        if self._pending is not None:
            self._end(self._pending, now)  # hung up while the 200 was on its way: BYE
            return
        self._events.append(Answered(self.offer_sdp))

    def _on_no_ack(self, now: float) -> None:
        if self.state is not CallState.ACCEPTED:
            return
        log.info("%s: no ACK for our 200 in 64*T1: BYE", self.call_id)
        # RFC 3261 13.3.1.4: the dialog is confirmed all the same, and ended with BYE.
        ended = Ended(errors.TIMEOUT, None, "No ACK from the trunk")
        if self._pending is None:
            self._pending = ended
        self._report(ended)
        self._send_bye(now)

    def _on_cancel(self, cancel: Request, now: float) -> None:
        """RFC 3261 9.2: 200 to the CANCEL; 487 to the INVITE if no final response went yet."""
        self._respond(cancel, 200, now)
        if self.state not in (CallState.IDLE, CallState.PROCEEDING):
            return  # our final response stands
        log.info("%s: < CANCEL", self.call_id)
        self._send(self._response(487, "Request Terminated"), now)
        self._end(Ended(errors.CANCELLED, 487, "Cancelled by the caller"), now)

    def _receive_response(self, response: Response, now: float) -> None:
        if self._in_dialog_response(response, now) or self._client_response(response, now):
            self._prune()
            return
        log.debug("%s: stray %s", self.call_id, summary(response))

    # --- responses ---------------------------------------------------------------

    def _response(
        self,
        code: int,
        reason: str | None = None,
        *,
        dialog: bool = False,
        headers: list[tuple[str, str]] | None = None,
    ) -> Response:
        """A response to the INVITE; ``dialog``: one that makes the dialog (180, 200)."""
        extra: list[tuple[str, str]] = [("User-Agent", self._user_agent)]
        if dialog:
            extra += [
                ("Record-Route", value) for value in self.invite.headers.getlist("Record-Route")
            ]
            extra += [("Contact", self._contact), ("Allow", ALLOW)]
        extra += headers or []
        # 100 Trying carries no To tag (RFC 3261 8.2.6.2); every other response ours.
        return make_response(
            self.invite, code, reason, to_tag="" if code == 100 else self._tag, headers=extra
        )
