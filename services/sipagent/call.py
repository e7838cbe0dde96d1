"""One outbound call toward the trunk, sans-I/O: the INVITE and what answers it.

``OutboundCall`` sends the INVITE, answers digest challenges and 422s, ACKs
the 2xx (and ACKs and BYEs the 2xx of other forks), cancels or hangs up on
request. It is driven with ``start``/``receive``/``hangup``/``handle_timer``
and reports ``Progress``, ``Answered`` and exactly one ``Ended``. The
confirmed dialog, the trunk's requests and the BYE are ``CallBase``'s.

Every state has a timer: Timer B or the INVITE deadline before a final
answer, the CANCEL window while cancelling, Timer F of the BYE while hanging
up. A confirmed dialog is never left without a BYE.
"""

from __future__ import annotations

import logging
import random
from dataclasses import replace

from sipmessage import Request, Response

from proto import errors
from services.common.sip.auth import AuthError, DigestAuthenticator
from services.common.sip.dialog import Dialog
from services.common.sip.message import (
    SipMessage,
    SipParseError,
    make_cancel,
    make_request,
    new_call_id,
    new_tag,
    summary,
    tag_of,
)
from services.common.sip.transaction import (
    T1,
    InviteClientTransaction,
    NonInviteClientTransaction,
    ResponseReceived,
    TransactionEvent,
)
from services.sipagent.call_base import (
    END_STATES,
    CallBase,
    CallState,
    ClientTx,
    cause_of,
    sdp_of,
)
from services.sipagent.dialog_context import ALLOW, USER_AGENT
from services.sipagent.events import Answered, Ended, Progress
from services.sipagent.session_timer import SESSION_EXPIRES, allows_update, min_se, negotiated

log = logging.getLogger(__name__)

MAX_AUTH_ATTEMPTS = 3
"Challenges answered per request; only ``stale=true`` ones after the first."

__all__ = ["ALLOW", "USER_AGENT", "CallState", "Ended", "OutboundCall", "cause_of", "sdp_of"]


class OutboundCall(CallBase):
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
        if authenticator is None and username:
            authenticator = DigestAuthenticator(username, password)
        tag = new_tag()
        super().__init__(
            call_id=call_id,
            sip_call_id=sip_call_id or new_call_id(),
            request_uri=request_uri,
            local_tag=tag,
            contact=contact,
            sent_by=sent_by,
            transport=transport,
            t1=t1,
            authenticator=authenticator,
            user_agent=user_agent,
            dtmf=dtmf,
            keepalive=keepalive,
            transfer=transfer,
            rng=rng,
        )
        self._from = f"<{from_uri}>;tag={tag}"
        self._to = f"<{request_uri}>"
        self._offer = offer_sdp.encode()
        self._invite_timeout = invite_timeout
        self._invite_headers = list(invite_headers or [])
        self._cseq = 0
        self._invite: Request | None = None
        self._invite_auth: list[tuple[str, str]] = []
        self._invite_tx: InviteClientTransaction | None = None
        self._cancel_tx: NonInviteClientTransaction | None = None
        self._auth_attempts = 0
        self._ack: Request | None = None
        self._forks: dict[str, Request] = {}
        "ACKs of the 2xx of other forks, by their To tag, re-sent on retransmission."
        self._invite_deadline: float | None = None
        self._cancel_deadline: float | None = None
        self._last_progress: Progress | None = None
        self._session_expires = SESSION_EXPIRES
        "Session-Expires of our INVITE (raised by a 422's Min-SE)."
        self._min_se: int | None = None

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

    # --- timers ------------------------------------------------------------------

    def _on_setup_timer(self, now: float) -> None:
        deadline = self._invite_deadline
        calling = self.state in (CallState.CALLING, CallState.PROCEEDING)
        if calling and deadline is not None and now >= deadline:
            self._invite_deadline = None
            self._on_invite_timeout(now)
        if self._cancel_deadline is not None and now >= self._cancel_deadline:
            self._cancel_deadline = None
            if self.state is CallState.CANCELLING:
                # RFC 3261 9.1: no final response 64*T1 after the CANCEL.
                self._end(self._pending or Ended(errors.CANCELLED, None, "Cancelled"), now)

    def _setup_timer(self) -> float | None:
        if self.state in (CallState.CALLING, CallState.PROCEEDING):
            return self._invite_deadline
        if self.state is CallState.CANCELLING:
            return self._cancel_deadline
        return None

    def _on_setup_event(self, tx: ClientTx, event: TransactionEvent, now: float) -> bool:
        if tx is not self._invite_tx:
            return False
        self._on_invite_event(event, now)
        return True

    def _end(self, ended: Ended, now: float, *, dialog_closed: bool = False) -> None:
        if self.state is not CallState.CONFIRMED:
            self._invite_deadline = self._cancel_deadline = None
        super()._end(ended, now, dialog_closed=dialog_closed)

    # --- responses ---------------------------------------------------------------

    def _receive_response(self, response: Response, now: float) -> None:
        if self._in_dialog_response(response, now):
            return
        if not self._client_response(response, now):
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
            dialog = Dialog.from_response(self._invite, response)
        except SipParseError as exc:
            log.warning("%s: unusable 2xx: %s", self.call_id, exc)
            self._end(Ended(errors.REJECTED, response.code, "Invalid answer from the trunk"), now)
            return
        self._dialog = dialog
        self._ack = dialog.create_request(
            "ACK", self._via(), cseq=self._invite.cseq.sequence, headers=self._invite_auth
        )
        self._outbox.append(self._ack)
        log.info("%s: > ACK", self.call_id)
        if self._pending is not None or self.state in END_STATES:
            # The 2xx crossed our CANCEL (or came too late): end the dialog it made.
            self._send_bye(now)
            return
        answer = sdp_of(response) or ""
        self._confirm(
            dialog,
            local_sdp=self._offer.decode(),
            remote_sdp=answer,
            settled=negotiated(response),
            use_update=allows_update(response),
            now=now,
        )
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
