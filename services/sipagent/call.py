"""One outbound call toward the trunk, sans-I/O.

``OutboundCall`` sends the INVITE, answers digest challenges, ACKs the 2xx,
cancels or hangs up on request and answers the trunk's in-dialog requests.
It is driven with ``start``/``receive``/``hangup``/``handle_timer`` and
reports ``Progress``, ``Answered`` and exactly one ``Ended``. Once the
dialog is confirmed, ``InDialog`` handles everything in it but BYE: session
changes, hold, DTMF by INFO, keep-alive and REFER.

Every state has a timer: Timer B or the INVITE deadline before a final
answer, the CANCEL window while cancelling, Timer F of the BYE while hanging
up. A confirmed dialog is never left without a BYE.
"""

from __future__ import annotations

import enum
import logging
import random
from collections import deque
from dataclasses import replace

from sipmessage import Request, Response

from proto import errors
from services.sipagent.dialog_context import ALLOW, USER_AGENT, DialogContext
from services.sipagent.events import Answered, CallEvent, Ended, HoldRefused, Progress
from services.sipagent.in_dialog import InDialog
from services.sipagent.sip.auth import AuthError, DigestAuthenticator
from services.sipagent.sip.dialog import Dialog
from services.sipagent.sip.message import (
    SipMessage,
    SipParseError,
    make_request,
    make_response,
    new_branch,
    new_call_id,
    new_tag,
    summary,
    tag_of,
)
from services.sipagent.sip.transaction import (
    T1,
    InviteClientTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    ResponseReceived,
    TransactionEvent,
)

log = logging.getLogger(__name__)

__all__ = ["ALLOW", "USER_AGENT", "CallState", "OutboundCall"]

MAX_AUTH_ATTEMPTS = 3
"Challenges answered per request; only ``stale=true`` ones after the first."

# Causes a hang-up request may carry through to CallEnded as they are.
_SPECIFIC_CAUSES = frozenset(
    {errors.BROWSER_GONE, errors.MEDIA_FAILED, errors.SETUP_FAILED, errors.INTERNAL}
)


class CallState(enum.Enum):
    IDLE = "idle"
    CALLING = "calling"
    "INVITE sent, no provisional response yet: a CANCEL is not allowed."
    PROCEEDING = "proceeding"
    CANCELLING = "cancelling"
    CONFIRMED = "confirmed"
    TERMINATING = "terminating"
    "BYE sent."
    ENDED = "ended"


END_STATES = frozenset({CallState.ENDED})

_ClientTx = InviteClientTransaction | NonInviteClientTransaction


class OutboundCall:
    """The UAC state machine of one call."""

    def __init__(
        self,
        *,
        call_id: str,
        request_uri: str,
        from_uri: str,
        contact: str,
        sent_by: str,
        offer_sdp: str,
        username: str = "",
        password: str = "",
        transport: str = "udp",
        invite_timeout: float = 60.0,
        t1: float = T1,
        sip_call_id: str | None = None,
        authenticator: DigestAuthenticator | None = None,
        user_agent: str = USER_AGENT,
        invite_headers: list[tuple[str, str]] | None = None,
        dtmf: str = "rfc4733",
        keepalive: float = 0.0,
        transfer: str = "follow",
        rng: random.Random | None = None,
    ) -> None:
        """``invite_headers``: custom headers (already checked) for the INVITE only.

        ``dtmf``: the trunk's DTMF mode; ``keepalive``: seconds between
        in-dialog OPTIONS (0: none); ``transfer``: ``follow`` or ``decline``
        a REFER; ``rng``: for the glare back-off, seeded in tests.
        """
        self.call_id = call_id
        "The bridge's call id, for logs."
        self.sip_call_id = sip_call_id or new_call_id()
        self.request_uri = request_uri
        self.state = CallState.IDLE
        self._from = f"<{from_uri}>;tag={new_tag()}"
        self._to = f"<{request_uri}>"
        self._contact = contact
        self._sent_by = sent_by
        self._offer = offer_sdp.encode()
        self._transport = transport.lower()
        self._reliable = self._transport != "udp"
        self._invite_timeout = invite_timeout
        self._t1 = t1
        self._user_agent = user_agent
        self._invite_headers = list(invite_headers or [])
        self._auth = authenticator
        if self._auth is None and username:
            self._auth = DigestAuthenticator(username, password)

        self._cseq = 0
        self._invite: Request | None = None
        self._invite_auth: list[tuple[str, str]] = []
        self._invite_tx: InviteClientTransaction | None = None
        self._cancel_tx: NonInviteClientTransaction | None = None
        self._bye_tx: NonInviteClientTransaction | None = None
        self._client_txs: list[_ClientTx] = []
        self._server_txs: list[NonInviteServerTransaction] = []
        self._auth_attempts = 0
        self._bye_auth_attempts = 0
        self._dialog: Dialog | None = None
        self._ack: Request | None = None
        self._forks: dict[str, Request] = {}
        "ACKs of the 2xx of other forks, by their To tag, re-sent on retransmission."
        self._invite_deadline: float | None = None
        self._cancel_deadline: float | None = None
        self._pending: Ended | None = None
        "How the call ends once the CANCEL or BYE in flight completes."
        self._reported = False
        "Whether ``Ended`` was emitted; SIP clean-up may go on after it."
        self._last_progress: Progress | None = None
        self._dtmf = dtmf
        self._keepalive = keepalive
        self._transfer = transfer
        self._rng = rng
        self._in_dialog: InDialog | None = None
        self._outbox: list[SipMessage] = []
        self._events: deque[CallEvent] = deque()

    # --- driving -----------------------------------------------------------------

    def start(self, now: float) -> None:
        """Send the INVITE."""
        assert self.state is CallState.IDLE
        self._invite_deadline = now + self._invite_timeout
        self._send_invite(now)
        self._set_state(CallState.CALLING)

    def receive(self, message: SipMessage, now: float) -> None:
        """Handle a message of this call (same SIP Call-ID)."""
        if isinstance(message, Response):
            self._receive_response(message, now)
        else:
            self._receive_request(message, now)

    def hangup(self, cause: str, now: float) -> None:
        """End the call from our side: CANCEL before the answer, BYE after."""
        if self.state is CallState.IDLE:
            self._end(Ended(_cause(cause, errors.CANCELLED), None, "Cancelled"), now)
        elif self.state in (CallState.CALLING, CallState.PROCEEDING):
            if self._pending is None:
                self._pending = Ended(_cause(cause, errors.CANCELLED), None, "Cancelled")
            # Without a provisional response a CANCEL is not allowed (RFC 3261 9.1):
            # it goes out with the first one, or Timer B ends the transaction. The
            # caller is told now; a late 2xx still gets its ACK and BYE.
            if self.state is CallState.PROCEEDING:
                self._send_cancel(now)
            else:
                self._report(self._pending)
        elif self.state is CallState.CONFIRMED:
            self._pending = Ended(_cause(cause, errors.NORMAL), None, "Hung up")
            self._send_bye(now)

    def hold(self, held: bool, now: float) -> None:
        """Put the trunk on hold or resume it; ``HoldRefused`` at once before the answer."""
        if self.state is CallState.CONFIRMED and self._in_dialog is not None:
            self._in_dialog.hold(held, now)
        else:
            self._events.append(HoldRefused(held, None, "The call is not answered"))

    def send_dtmf(self, digits: str, duration_ms: int, now: float) -> None:
        """Send ``digits`` by INFO when that is how the trunk gets them (else media does)."""
        if self.state is CallState.CONFIRMED and self._in_dialog is not None:
            self._in_dialog.send_dtmf(digits, duration_ms, now)

    def notify_transfer(self, status: int, phrase: str, now: float) -> None:
        """Tell the referrer how the call to the Refer-To target went (NOTIFY)."""
        if self.state is CallState.CONFIRMED and self._in_dialog is not None:
            self._in_dialog.referral.notify(status, phrase, now)

    def retire(self, now: float) -> None:
        """End this dialog after a transfer replaced it: BYE, unless the trunk sent one."""
        self.hangup(errors.NORMAL, now)

    def handle_timer(self, now: float) -> None:
        for tx in list(self._client_txs) + list(self._server_txs):
            deadline = tx.get_timer()
            if deadline is not None and deadline <= now:
                tx.handle_timer(now)
                self._drain(tx, now)
        deadline = self._invite_deadline
        calling = self.state in (CallState.CALLING, CallState.PROCEEDING)
        if calling and deadline is not None and now >= deadline:
            self._invite_deadline = None
            self._on_invite_timeout(now)
        in_dialog = self._in_dialog
        if self.state is CallState.CONFIRMED and in_dialog is not None:
            deadline = in_dialog.get_timer()
            if deadline is not None and deadline <= now:
                in_dialog.handle_timer(now)
        if self._cancel_deadline is not None and now >= self._cancel_deadline:
            self._cancel_deadline = None
            if self.state is CallState.CANCELLING:
                # RFC 3261 9.1: no final response 64*T1 after the CANCEL.
                self._end(self._pending or Ended(errors.CANCELLED, None, "Cancelled"), now)
        self._prune()

    def get_timer(self) -> float | None:
        timers = [tx.get_timer() for tx in self._client_txs]
        timers += [tx.get_timer() for tx in self._server_txs]
        if self.state in (CallState.CALLING, CallState.PROCEEDING):
            timers.append(self._invite_deadline)
        if self.state is CallState.CANCELLING:
            timers.append(self._cancel_deadline)
        if self.state is CallState.CONFIRMED and self._in_dialog is not None:
            timers.append(self._in_dialog.get_timer())
        return min((t for t in timers if t is not None), default=None)

    def messages_to_send(self) -> list[SipMessage]:
        # Cleared in place: the in-dialog parts share this list.
        out = list(self._outbox)
        self._outbox.clear()
        return out

    def next_event(self) -> CallEvent | None:
        return self._events.popleft() if self._events else None

    @property
    def finished(self) -> bool:
        """Ended, and no transaction left absorbing retransmissions."""
        return self.state in END_STATES and self.get_timer() is None

    @property
    def dialog(self) -> Dialog | None:
        """The confirmed dialog (from the 2xx), for the call registry; None before."""
        return self._dialog

    # --- responses ---------------------------------------------------------------

    def _receive_response(self, response: Response, now: float) -> None:
        if self._in_dialog is not None and self._in_dialog.context.receive_response(response, now):
            return
        for tx in self._client_txs:
            if tx.matches(response):
                tx.receive(response, now)
                self._drain(tx, now)
                break
        else:
            if 200 <= response.code < 300 and response.cseq.method == "INVITE":
                # A 2xx retransmitted after Timer M: ACK it again all the same.
                self._on_success(response, now)
            else:
                log.debug("%s: stray %s", self.call_id, summary(response))
        self._prune()

    def _drain(self, tx: _ClientTx | NonInviteServerTransaction, now: float) -> None:
        self._outbox.extend(tx.messages_to_send())
        if isinstance(tx, NonInviteServerTransaction):
            return
        while (event := tx.next_event()) is not None:
            if tx is self._invite_tx:
                self._on_invite_event(event, now)
            elif tx is self._bye_tx:
                self._on_bye_event(event, now)
            elif isinstance(event, ResponseReceived):
                log.info("%s: < %s (%s)", self.call_id, summary(event.response), tx.request.method)

    def _on_invite_event(self, event: TransactionEvent, now: float) -> None:
        if not isinstance(event, ResponseReceived):
            # Timer B: no response at all to the INVITE.
            log.info("%s: INVITE timed out (Timer B)", self.call_id)
            pending = self._pending
            if pending is None or pending.cause == errors.TIMEOUT:
                pending = self._no_answer(408)
            self._end(pending, now)
            return
        response = event.response
        if response.code >= 300:
            # The transaction has already queued its ACK.
            log.info("%s: < %s", self.call_id, summary(response))
            log.info("%s: > ACK", self.call_id)
        if response.code < 200:
            self._on_provisional(response, now)
        elif response.code < 300:
            self._on_success(response, now)
        elif response.code in (401, 407):
            self._on_challenge(response, now)
        else:
            self._on_failure(response, now)

    def _on_provisional(self, response: Response, now: float) -> None:
        log.info("%s: < %s", self.call_id, summary(response))
        if self.state is CallState.CALLING:
            self._set_state(CallState.PROCEEDING)
        if self.state is not CallState.PROCEEDING:
            return
        if self._pending is not None:
            self._send_cancel(now)
            return
        if response.code not in (180, 183):
            return
        progress = Progress(response.code, _sdp_of(response))
        if progress != self._last_progress:
            self._last_progress = progress
            self._events.append(progress)

    def _on_success(self, response: Response, now: float) -> None:
        if self._dialog is not None:
            tag = tag_of(response.headers["To"])
            ack = self._ack if tag == self._dialog.remote_tag else self._forks.get(tag)
            if ack is not None:
                log.debug("%s: re-sending ACK for retransmitted 2xx", self.call_id)
                self._outbox.append(ack)
            else:
                self._on_forked_success(response, now)
            return
        log.info("%s: < %s", self.call_id, summary(response))
        assert self._invite is not None
        try:
            self._dialog = Dialog.from_response(self._invite, response)
        except SipParseError as exc:
            log.warning("%s: unusable 2xx: %s", self.call_id, exc)
            self._end(Ended(errors.REJECTED, response.code, "Invalid answer from the trunk"), now)
            return
        self._ack = self._dialog.create_request(
            "ACK", self._via(), cseq=self._invite.cseq.sequence, headers=self._invite_auth
        )
        self._outbox.append(self._ack)
        log.info("%s: > ACK", self.call_id)
        if self._pending is not None or self.state in END_STATES:
            # The 2xx crossed our CANCEL (or came too late): end the dialog it made.
            self._send_bye(now)
            return
        self._set_state(CallState.CONFIRMED)
        answer = _sdp_of(response) or ""
        self._in_dialog = self._make_in_dialog(self._dialog, answer, now)
        self._events.append(Answered(answer))

    def _make_in_dialog(self, dialog: Dialog, answer: str, now: float) -> InDialog:
        context = DialogContext(
            call_id=self.call_id,
            dialog=dialog,
            via=self._via,
            contact=self._contact,
            outbox=self._outbox,
            events=self._events,
            dead=self._on_dead,
            authenticator=self._auth,
            reliable=self._reliable,
            t1=self._t1,
            user_agent=self._user_agent,
            rng=self._rng,
        )
        return InDialog(
            context,
            offer_sdp=self._offer.decode(),
            answer_sdp=answer,
            dtmf=self._dtmf,
            keepalive=self._keepalive,
            transfer=self._transfer,
            now=now,
        )

    def _on_dead(self, reason: str, now: float) -> None:
        """The trunk forgot the dialog: tell the caller now, BYE all the same."""
        if self.state is not CallState.CONFIRMED:
            return
        ended = Ended(errors.DEAD_DIALOG, None, "The trunk stopped answering")
        log.info("%s: %s", self.call_id, reason)
        self._pending = ended
        self._report(ended)
        self._send_bye(now)

    def _on_forked_success(self, response: Response, now: float) -> None:
        """ACK and BYE a 2xx from a second fork (RFC 3261 13.2.2.4), leaving the call be."""
        assert self._invite is not None
        try:
            dialog = Dialog.from_response(self._invite, response)
        except SipParseError as exc:
            log.warning("%s: unusable 2xx from another fork: %s", self.call_id, exc)
            return
        log.info("%s: < %s from another fork: ACK and BYE it", self.call_id, summary(response))
        ack = dialog.create_request(
            "ACK", self._via(), cseq=self._invite.cseq.sequence, headers=self._invite_auth
        )
        self._forks[dialog.remote_tag] = ack
        self._outbox.append(ack)
        bye = dialog.create_request("BYE", self._via(), headers=[("User-Agent", self._user_agent)])
        # Not ``_bye_tx``: its outcome must not end or change the call.
        self._start(NonInviteClientTransaction(bye, reliable=self._reliable, t1=self._t1), now)

    def _on_challenge(self, response: Response, now: float) -> None:
        if self._pending is not None or self.state not in (
            CallState.CALLING,
            CallState.PROCEEDING,
        ):
            self._on_failure(response, now)
            return
        try:
            if self._auth is None:
                raise AuthError("no credentials configured")
            challenge = self._auth.choose(response)
            if self._auth_attempts >= MAX_AUTH_ATTEMPTS or (
                self._auth_attempts and not challenge.stale
            ):
                raise AuthError("credentials refused")
            self._auth_attempts += 1
            name, value = self._auth.authorize(response, "INVITE", self.request_uri, self._offer)
        except AuthError as exc:
            log.info("%s: authentication failed: %s", self.call_id, exc)
            self._end(Ended(errors.REJECTED, response.code, "Authentication failed"), now)
            return
        self._invite_auth = [(name, value)]
        if self.state is CallState.PROCEEDING:
            self._set_state(CallState.CALLING)
        self._send_invite(now)

    def _on_failure(self, response: Response, now: float) -> None:
        pending = self._pending
        if pending is None:
            self._end(Ended(errors.REJECTED, response.code, response.phrase), now)
        elif pending.cause == errors.TIMEOUT:
            self._end(pending, now)
        else:
            self._end(replace(pending, status=response.code, reason=response.phrase), now)

    def _on_bye_event(self, event: TransactionEvent, now: float) -> None:
        if isinstance(event, ResponseReceived):
            response = event.response
            if response.code < 200:
                return
            log.info("%s: < %s (BYE)", self.call_id, summary(response))
            if response.code in (401, 407) and self._retry_bye(response, now):
                return
        else:
            log.info("%s: BYE timed out", self.call_id)
        self._end(self._pending or Ended(errors.NORMAL, None, "Hung up"), now)

    def _retry_bye(self, response: Response, now: float) -> bool:
        """Answer a challenge to our BYE once; False when it cannot be."""
        if self._auth is None or self._bye_auth_attempts or self._dialog is None:
            return False
        self._bye_auth_attempts += 1
        uri = str(self._dialog.remote_target)
        try:
            header = self._auth.authorize(response, "BYE", uri)
        except AuthError:
            return False
        self._send_bye(now, [header])
        return True

    # --- requests from the trunk -------------------------------------------------

    def _receive_request(self, request: Request, now: float) -> None:
        in_dialog = self._in_dialog if self.state is CallState.CONFIRMED else None
        if request.method == "ACK":
            if in_dialog is not None:
                in_dialog.on_ack(request, now)
            return
        for server_tx in self._server_txs:
            if server_tx.matches(request):
                server_tx.receive(request, now)
                self._drain(server_tx, now)
                return
        if in_dialog is not None and in_dialog.absorb(request, now):
            return
        dialog = self._dialog
        ended = self.state is CallState.ENDED
        if dialog is None or ended or not dialog.matches(request) or request.method == "CANCEL":
            self._respond(request, 481, now)
            return
        if not dialog.accept_remote_cseq(request):
            self._respond(request, 500, now)
            return
        log.info("%s: < %s", self.call_id, request.method)
        if request.method == "BYE":
            self._respond(request, 200, now)
            if self.state is CallState.TERMINATING and self._pending is not None:
                self._end(self._pending, now)
            else:
                remote = Ended(errors.REMOTE_HANGUP, None, "Remote party hung up")
                self._end(remote, now, dialog_closed=True)
        elif in_dialog is not None:
            in_dialog.on_request(request, now)
        elif request.method == "OPTIONS":
            self._respond(request, 200, now, [("Allow", ALLOW), ("Accept", "application/sdp")])
        else:
            self._respond(request, 501, now, [("Allow", ALLOW)])

    def _respond(
        self,
        request: Request,
        code: int,
        now: float,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        response = make_response(
            request,
            code,
            to_tag=tag_of(self._from),
            headers=[("User-Agent", self._user_agent), *(headers or [])],
        )
        server_tx = NonInviteServerTransaction(request, reliable=self._reliable, t1=self._t1)
        server_tx.respond(response, now)
        self._server_txs.append(server_tx)
        self._drain(server_tx, now)
        log.info("%s: > %s", self.call_id, summary(response))

    # --- sending -----------------------------------------------------------------

    def _via(self, branch: str | None = None) -> str:
        transport = self._transport.upper()
        return f"SIP/2.0/{transport} {self._sent_by};rport;branch={branch or new_branch()}"

    def _send_invite(self, now: float) -> None:
        self._cseq += 1
        self._invite = make_request(
            "INVITE",
            self.request_uri,
            [
                ("Via", self._via()),
                ("Max-Forwards", "70"),
                ("From", self._from),
                ("To", self._to),
                ("Call-ID", self.sip_call_id),
                ("CSeq", f"{self._cseq} INVITE"),
                ("Contact", self._contact),
                *self._invite_auth,
                ("User-Agent", self._user_agent),
                ("Allow", ALLOW),
                *self._invite_headers,
            ],
            self._offer,
            "application/sdp",
        )
        self._invite_tx = InviteClientTransaction(
            self._invite, reliable=self._reliable, t1=self._t1
        )
        self._start(self._invite_tx, now)

    def _send_cancel(self, now: float) -> None:
        assert self._invite is not None
        invite = self._invite
        cancel = make_request(
            "CANCEL",
            invite.uri,
            [
                ("Via", invite.headers.getlist("Via")[0]),
                ("Max-Forwards", "70"),
                ("From", invite.headers["From"]),
                ("To", invite.headers["To"]),
                ("Call-ID", invite.call_id),
                ("CSeq", f"{invite.cseq.sequence} CANCEL"),
                ("User-Agent", self._user_agent),
            ],
        )
        self._cancel_tx = NonInviteClientTransaction(cancel, reliable=self._reliable, t1=self._t1)
        self._cancel_deadline = now + 64 * self._t1
        self._set_state(CallState.CANCELLING)
        self._start(self._cancel_tx, now)

    def _send_bye(self, now: float, headers: list[tuple[str, str]] | None = None) -> None:
        assert self._dialog is not None
        bye = self._dialog.create_request(
            "BYE", self._via(), headers=[*(headers or []), ("User-Agent", self._user_agent)]
        )
        self._bye_tx = NonInviteClientTransaction(bye, reliable=self._reliable, t1=self._t1)
        if self.state not in END_STATES:
            self._set_state(CallState.TERMINATING)
        self._start(self._bye_tx, now)

    def _start(self, tx: _ClientTx, now: float) -> None:
        log.info("%s: > %s", self.call_id, tx.request.method)
        self._client_txs.append(tx)
        tx.start(now)
        self._drain(tx, now)

    # --- state -------------------------------------------------------------------

    def _on_invite_timeout(self, now: float) -> None:
        log.info("%s: no answer within %.0f s", self.call_id, self._invite_timeout)
        if self._pending is None:
            self._pending = self._no_answer(None)
        if self.state is CallState.PROCEEDING:
            self._send_cancel(now)
        else:
            # In Calling a CANCEL is not allowed: the first provisional response
            # triggers it, or Timer B ends the transaction. The caller is told now.
            self._report(self._pending)

    def _no_answer(self, status: int | None) -> Ended:
        return Ended(errors.TIMEOUT, status, "No answer")

    def _end(self, ended: Ended, now: float, *, dialog_closed: bool = False) -> None:
        if self.state in END_STATES:
            return
        if self.state is CallState.CONFIRMED and not dialog_closed:
            # Never leave the trunk's side of a confirmed dialog open.
            self._pending = ended
            self._send_bye(now)
            return
        self._set_state(CallState.ENDED)
        self._invite_deadline = self._cancel_deadline = None
        self._report(ended)

    def _report(self, ended: Ended) -> None:
        """Emit ``Ended`` once, whether or not SIP clean-up is still under way."""
        if self._reported:
            return
        self._reported = True
        self._events.append(ended)
        log.info(
            "%s: ended (%s%s)",
            self.call_id,
            ended.cause,
            f", {ended.status} {ended.reason}" if ended.status else "",
        )

    def _prune(self) -> None:
        self._client_txs = [tx for tx in self._client_txs if not tx.terminated]
        self._server_txs = [tx for tx in self._server_txs if not tx.terminated]

    def _set_state(self, state: CallState) -> None:
        log.debug("%s: %s -> %s", self.call_id, self.state.value, state.value)
        self.state = state


def _cause(requested: str, default: str) -> str:
    return requested if requested in _SPECIFIC_CAUSES else default


def _sdp_of(response: Response) -> str | None:
    """The SDP body of a response, if any."""
    content_type = (response.headers.get("Content-Type") or "application/sdp").lower()
    if not response.body or "application/sdp" not in content_type:
        return None
    return response.body.decode("utf-8", "replace")
