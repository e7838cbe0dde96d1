"""One outbound call toward the trunk, sans-I/O.

``OutboundCall`` sends the INVITE, answers digest challenges, ACKs the 2xx,
cancels or hangs up on request; ``CallBase`` answers the trunk's requests.
It is driven with ``start``/``receive``/``hangup``/``handle_timer`` and
reports ``Progress``, ``Answered`` and exactly one ``Ended``. Once the
dialog is confirmed, ``InDialog`` handles everything in it but BYE: session
changes, hold, DTMF by INFO, keep-alive and REFER.

Every state has a timer: Timer B or the INVITE deadline before a final
answer, the CANCEL window while cancelling, Timer F of the BYE while hanging
up. A confirmed dialog is never left without a BYE.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from sipmessage import Response

from proto import errors
from services.common.sip.auth import AuthError
from services.common.sip.dialog import Dialog
from services.common.sip.message import (
    SipMessage,
    SipParseError,
    make_cancel,
    make_request,
    summary,
    tag_of,
)
from services.common.sip.transaction import (
    InviteClientTransaction,
    NonInviteClientTransaction,
    ResponseReceived,
    TransactionEvent,
)
from services.sipagent.call_base import (
    END_STATES,
    MAX_AUTH_ATTEMPTS,
    CallBase,
    CallState,
    cause_of,
    sdp_of,
)
from services.sipagent.dialog_context import ALLOW, USER_AGENT
from services.sipagent.events import Answered, Ended, Progress
from services.sipagent.session_timer import min_se

log = logging.getLogger(__name__)

__all__ = ["ALLOW", "USER_AGENT", "CallState", "OutboundCall"]


class OutboundCall(CallBase):
    """The UAC state machine of one call."""

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
            self._end(Ended(cause_of(cause, errors.CANCELLED), None, "Cancelled"), now)
        elif self.state in (CallState.CALLING, CallState.PROCEEDING):
            if self._pending is None:
                self._pending = Ended(cause_of(cause, errors.CANCELLED), None, "Cancelled")
            # Without a provisional response a CANCEL is not allowed (RFC 3261 9.1):
            # it goes out with the first one, or Timer B ends the transaction. The
            # caller is told now; a late 2xx still gets its ACK and BYE.
            if self.state is CallState.PROCEEDING:
                self._send_cancel(now)
            else:
                self._report(self._pending)
        elif self.state is CallState.CONFIRMED:
            self._pending = Ended(cause_of(cause, errors.NORMAL), None, "Hung up")
            self._send_bye(now)

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
        elif response.code == 422 and self._too_brief(response, now):
            pass
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
        progress = Progress(response.code, sdp_of(response))
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
        answer = sdp_of(response) or ""
        self._in_dialog = self._make_in_dialog(self._dialog, response, answer, now)
        self._events.append(Answered(answer))

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

    def _too_brief(self, response: Response, now: float) -> bool:
        """RFC 4028 422: ask again with the trunk's Min-SE; False when that cannot help."""
        wanted = min_se(response)
        calling = self.state in (CallState.CALLING, CallState.PROCEEDING)
        if wanted is None or wanted <= self._session_expires or self._pending or not calling:
            return False
        log.info("%s: session interval too brief: asking %d s", self.call_id, wanted)
        self._session_expires = self._min_se = wanted
        if self.state is CallState.PROCEEDING:
            self._set_state(CallState.CALLING)
        self._send_invite(now)
        return True

    def _on_failure(self, response: Response, now: float) -> None:
        pending = self._pending
        if pending is None:
            self._end(Ended(errors.REJECTED, response.code, response.phrase), now)
        elif pending.cause == errors.TIMEOUT:
            self._end(pending, now)
        else:
            self._end(replace(pending, status=response.code, reason=response.phrase), now)

    # --- sending -----------------------------------------------------------------

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
                ("Supported", "timer"),
                ("Session-Expires", str(self._session_expires)),
                *([("Min-SE", str(self._min_se))] if self._min_se else []),
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
        cancel = make_cancel(invite, self._user_agent)
        self._cancel_tx = NonInviteClientTransaction(cancel, reliable=self._reliable, t1=self._t1)
        self._cancel_deadline = now + 64 * self._t1
        self._set_state(CallState.CANCELLING)
        self._start(self._cancel_tx, now)

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
