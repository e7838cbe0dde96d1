"""A call's dialog with the trunk once set up, and its end, sans-I/O.

``CallBase`` is what both directions share: the call's state, transactions,
outbox and events; the end of the call (a BYE for a confirmed dialog,
exactly one ``Ended``); the trunk's requests (BYE, CANCEL, OPTIONS, 481 to
strangers); and, once the dialog is confirmed, ``InDialog`` for everything
but BYE: session changes, hold, DTMF by INFO, keep-alive, REFER. How the
dialog comes to be is the subclass's: ``OutboundCall`` (``call.py``) sends
the INVITE, ``InboundCall`` (``inbound_call.py``) answers one.

A subclass drives the base through the underscore methods below (its
protected interface) and implements ``start``, ``receive``, ``hangup``,
``_setup_timer``, ``_on_setup_timer`` and ``_on_setup_event``.
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
    summary,
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
from services.sipagent.events import CallEvent, Ended, HoldRefused
from services.sipagent.in_dialog import InDialog
from services.sipagent.session_timer import Negotiated

log = logging.getLogger(__name__)

__all__ = ["ALLOW", "USER_AGENT", "CallBase", "CallState"]

# Causes a hang-up request may carry through to CallEnded as they are.
_SPECIFIC_CAUSES = frozenset(
    {
        errors.BROWSER_GONE,
        errors.MEDIA_FAILED,
        errors.MEDIA_TIMEOUT,
        errors.MEDIA_SHUTDOWN,
        errors.MAX_DURATION,
        errors.SETUP_FAILED,
        errors.OPERATOR,
        errors.INTERNAL,
    }
)


class CallState(enum.Enum):
    IDLE = "idle"
    CALLING = "calling"
    "INVITE sent, no provisional response yet: a CANCEL is not allowed."
    PROCEEDING = "proceeding"
    "Outbound: a provisional response came. Inbound: the INVITE is being answered."
    CANCELLING = "cancelling"
    ACCEPTED = "accepted"
    "Inbound: our 2xx is sent, its ACK not in yet."
    CONFIRMED = "confirmed"
    TERMINATING = "terminating"
    "BYE sent."
    ENDED = "ended"


END_STATES = frozenset({CallState.ENDED})

ClientTx = InviteClientTransaction | NonInviteClientTransaction


class CallBase:
    """What every call is made of: state, transactions, outbox, BYE, the confirmed dialog."""

    def __init__(
        self,
        *,
        call_id: str,
        sip_call_id: str,
        request_uri: str,
        local_tag: str,
        contact: str,
        sent_by: str,
        transport: str = "udp",
        t1: float = T1,
        authenticator: DigestAuthenticator | None = None,
        user_agent: str = USER_AGENT,
        dtmf: str = "rfc4733",
        keepalive: float = 0.0,
        transfer: str = "follow",
        rng: random.Random | None = None,
    ) -> None:
        """``local_tag``: our tag in the dialog (From of our INVITE, To of the trunk's).

        ``dtmf``: the trunk's DTMF mode; ``keepalive``: seconds between
        in-dialog OPTIONS (0: none); ``transfer``: ``follow`` or ``decline``
        a REFER; ``rng``: for the glare back-off, seeded in tests.
        """
        self.call_id = call_id
        "The bridge's call id, for logs."
        self.sip_call_id = sip_call_id
        self.request_uri = request_uri
        self.state = CallState.IDLE
        self._local_tag = local_tag
        self._contact = contact
        self._sent_by = sent_by
        self._transport = transport.lower()
        self._reliable = self._transport != "udp"
        self._t1 = t1
        self._user_agent = user_agent
        self._auth = authenticator
        self._bye_tx: NonInviteClientTransaction | None = None
        self._client_txs: list[ClientTx] = []
        self._server_txs: list[NonInviteServerTransaction] = []
        self._bye_auth_attempts = 0
        self._dialog: Dialog | None = None
        self._pending: Ended | None = None
        "How the call ends once the transaction in flight (CANCEL, BYE) completes."
        self._reported = False
        "Whether ``Ended`` was emitted; SIP clean-up may go on after it."
        self._dtmf = dtmf
        self._keepalive = keepalive
        self._transfer = transfer
        self._rng = rng
        self._in_dialog: InDialog | None = None
        self._outbox: list[SipMessage] = []
        self._events: deque[CallEvent] = deque()

    # --- driving (the subclass's) ------------------------------------------------

    def start(self, now: float) -> None:
        raise NotImplementedError

    def receive(self, message: SipMessage, now: float) -> None:
        """Handle a message of this call (same SIP Call-ID)."""
        raise NotImplementedError

    def hangup(self, cause: str, now: float) -> None:
        raise NotImplementedError

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

    # --- output and timers -------------------------------------------------------

    def messages_to_send(self) -> list[SipMessage]:
        # Cleared in place: the in-dialog parts share this list.
        out = list(self._outbox)
        self._outbox.clear()
        return out

    def next_event(self) -> CallEvent | None:
        return self._events.popleft() if self._events else None

    def handle_timer(self, now: float) -> None:
        for tx in list(self._client_txs) + list(self._server_txs):
            deadline = tx.get_timer()
            if deadline is not None and deadline <= now:
                tx.handle_timer(now)
                self._drain(tx, now)
        self._on_setup_timer(now)
        in_dialog = self._in_dialog
        if self.state is CallState.CONFIRMED and in_dialog is not None:
            deadline = in_dialog.get_timer()
            if deadline is not None and deadline <= now:
                in_dialog.handle_timer(now)
        self._prune()

    def get_timer(self) -> float | None:
        timers = [tx.get_timer() for tx in self._client_txs]
        timers += [tx.get_timer() for tx in self._server_txs]
        timers.append(self._setup_timer())
        if self.state is CallState.CONFIRMED and self._in_dialog is not None:
            timers.append(self._in_dialog.get_timer())
        return min((t for t in timers if t is not None), default=None)

    @property
    def finished(self) -> bool:
        """Ended, and no transaction left absorbing retransmissions."""
        return self.state in END_STATES and self.get_timer() is None

    @property
    def dialog(self) -> Dialog | None:
        """The dialog with the trunk (confirmed, or being confirmed), for the call registry."""
        return self._dialog

    # --- the set-up's hooks ------------------------------------------------------

    def _setup_timer(self) -> float | None:
        """When the set-up (INVITE, CANCEL) next needs the clock, besides its transactions."""
        return None

    def _on_setup_timer(self, now: float) -> None:
        """Run the set-up's own deadlines that are due."""

    def _on_setup_event(self, tx: ClientTx, event: TransactionEvent, now: float) -> bool:
        """An event of a set-up transaction; False when ``tx`` is not one."""
        return False

    # --- the confirmed dialog ----------------------------------------------------

    def _confirm(
        self,
        dialog: Dialog,
        *,
        local_sdp: str,
        remote_sdp: str,
        settled: Negotiated,
        use_update: bool,
        now: float,
    ) -> None:
        """The dialog is confirmed: hand it to ``InDialog``."""
        self._dialog = dialog
        self._set_state(CallState.CONFIRMED)
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
        self._in_dialog = InDialog(
            context,
            local_sdp=local_sdp,
            remote_sdp=remote_sdp,
            dtmf=self._dtmf,
            keepalive=self._keepalive,
            transfer=self._transfer,
            now=now,
            settled=settled,
            use_update=use_update,
        )

    def _in_dialog_response(self, response: Response, now: float) -> bool:
        """Pass ``response`` to an in-dialog transaction; False when none matches."""
        in_dialog = self._in_dialog
        return in_dialog is not None and in_dialog.context.receive_response(response, now)

    def _on_dead(self, reason: str, now: float) -> None:
        """The trunk forgot the dialog: tell the caller now, BYE all the same."""
        if self.state is not CallState.CONFIRMED:
            return
        ended = Ended(errors.DEAD_DIALOG, None, "The trunk stopped answering")
        log.info("%s: %s", self.call_id, reason)
        self._pending = ended
        self._report(ended)
        self._send_bye(now)

    # --- transactions ------------------------------------------------------------

    def _drain(self, tx: ClientTx | NonInviteServerTransaction, now: float) -> None:
        self._outbox.extend(tx.messages_to_send())
        if isinstance(tx, NonInviteServerTransaction):
            return
        while (event := tx.next_event()) is not None:
            if tx is self._bye_tx:
                self._on_bye_event(event, now)
            elif self._on_setup_event(tx, event, now):
                pass
            elif isinstance(event, ResponseReceived):
                log.info("%s: < %s (%s)", self.call_id, summary(event.response), tx.request.method)

    def _client_response(self, response: Response, now: float) -> bool:
        """Pass ``response`` to our client transaction of it; False when none matches."""
        for tx in self._client_txs:
            if tx.matches(response):
                tx.receive(response, now)
                self._drain(tx, now)
                return True
        return False

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
            to_tag=self._local_tag,
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

    def _start(self, tx: ClientTx, now: float) -> None:
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


def sdp_of(message: Request | Response) -> str | None:
    """The SDP body of a message, if any."""
    content_type = (message.headers.get("Content-Type") or "application/sdp").lower()
    if not message.body or "application/sdp" not in content_type:
        return None
    return message.body.decode("utf-8", "replace")
