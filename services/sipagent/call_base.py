"""The parts of an outbound call that outlive its set-up, sans-I/O.

``CallBase`` holds the call's state, transactions, outbox and events, ends
it (a BYE for a confirmed dialog, exactly one ``Ended``), answers the
trunk's requests, and once the dialog is confirmed hands everything but BYE
to ``InDialog``: session changes, hold, DTMF by INFO, keep-alive, REFER.
``OutboundCall`` (``call.py``) adds the INVITE and its responses.
"""

from __future__ import annotations

import enum
import logging
import random
from collections import deque

from sipmessage import Request, Response

from proto import errors
from services.common.sip.auth import AuthError, DigestAuthenticator
from services.common.sip.dialog import Dialog
from services.common.sip.message import (
    SipMessage,
    make_response,
    new_branch,
    new_call_id,
    new_tag,
    summary,
    tag_of,
    top_branch,
)
from services.common.sip.transaction import (
    T1,
    InviteClientTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    ResponseReceived,
    TransactionEvent,
)
from services.sipagent.dialog_context import ALLOW, USER_AGENT, DialogContext
from services.sipagent.events import CallEvent, Ended, HoldRefused, Progress
from services.sipagent.in_dialog import InDialog
from services.sipagent.session_timer import SESSION_EXPIRES

log = logging.getLogger(__name__)

__all__ = ["ALLOW", "USER_AGENT", "CallBase", "CallState"]

MAX_AUTH_ATTEMPTS = 3
"Challenges answered per request; only ``stale=true`` ones after the first."

# Causes a hang-up request may carry through to CallEnded as they are.
_SPECIFIC_CAUSES = frozenset(
    {
        errors.BROWSER_GONE,
        errors.MEDIA_FAILED,
        errors.MEDIA_TIMEOUT,
        errors.MEDIA_SHUTDOWN,
        errors.MAX_DURATION,
        errors.SETUP_FAILED,
        errors.INTERNAL,
    }
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


class CallBase:
    """What every outbound call is made of: state, transactions, outbox, BYE, the dialog."""

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
        self._session_expires = SESSION_EXPIRES
        "Session-Expires of our INVITE (raised by a 422's Min-SE)."
        self._min_se: int | None = None
        self._outbox: list[SipMessage] = []
        self._events: deque[CallEvent] = deque()

    # --- in the confirmed dialog -------------------------------------------------

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

    def messages_to_send(self) -> list[SipMessage]:
        # Cleared in place: the in-dialog parts share this list.
        out = list(self._outbox)
        self._outbox.clear()
        return out

    def next_event(self) -> CallEvent | None:
        return self._events.popleft() if self._events else None

    def hangup(self, cause: str, now: float) -> None:
        raise NotImplementedError

    def get_timer(self) -> float | None:
        raise NotImplementedError

    @property
    def finished(self) -> bool:
        """Ended, and no transaction left absorbing retransmissions."""
        return self.state in END_STATES and self.get_timer() is None

    @property
    def dialog(self) -> Dialog | None:
        """The confirmed dialog (from the 2xx), for the call registry; None before."""
        return self._dialog

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
        raise NotImplementedError

    def _make_in_dialog(
        self, dialog: Dialog, response: Response, answer: str, now: float
    ) -> InDialog:
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
            secure=self._transport == "tls",
        )
        return InDialog(
            context,
            offer_sdp=self._offer.decode(),
            answer_sdp=answer,
            dtmf=self._dtmf,
            keepalive=self._keepalive,
            transfer=self._transfer,
            now=now,
            answer=response,
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
        if request.method == "CANCEL":
            # RFC 3261 9.2: 200 when it matches a transaction of ours (whose final
            # response, sent already, stands), 481 when it matches none.
            self._respond(request, 200 if self._cancels(request, in_dialog) else 481, now)
            return
        dialog = self._dialog
        ended = self.state is CallState.ENDED
        if dialog is None or ended or not dialog.matches(request):
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

    def _cancels(self, cancel: Request, in_dialog: InDialog | None) -> bool:
        """Whether ``cancel`` matches one of our server transactions."""
        branch = top_branch(cancel)
        if any(top_branch(tx.request) == branch for tx in self._server_txs):
            return True
        return in_dialog is not None and in_dialog.cancels(cancel)

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


def cause_of(requested: str, default: str) -> str:
    return requested if requested in _SPECIFIC_CAUSES else default


def sdp_of(response: Response) -> str | None:
    """The SDP body of a response, if any."""
    content_type = (response.headers.get("Content-Type") or "application/sdp").lower()
    if not response.body or "application/sdp" not in content_type:
        return None
    return response.body.decode("utf-8", "replace")
