"""Session changes in a confirmed dialog: the trunk's re-INVITE and UPDATE, our hold.

The trunk's re-INVITE is answered through the shared INVITE server
transaction (RFC 6026): its 2xx is re-sent (T1 doubling up to T2, on every
transport) until the ACK arrives, and a dialog whose ACK never comes in 64*T1
is ended (RFC 3261 13.3.1.4).
Our hold and resume re-INVITEs answer challenges once, retry a 491 after a
random 2.1 to 4 s (RFC 3261 14.1), and report a refusal without changing the
session. One left at a provisional response is given 64*T1 more, then
CANCELled and refused (RFC 3261 9.1): a later hold or refresh never waits on
it. Each accepted change is reported as ``SessionChanged``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sipmessage import Request, Response

from services.common.sip.invite_server import AckReceived, AckTimedOut, InviteServerTransaction
from services.common.sip.message import make_cancel, summary, top_branch
from services.common.sip.transaction import (
    InviteClientTransaction,
    NonInviteClientTransaction,
    ResponseReceived,
    TransactionEvent,
)
from services.sipagent.dialog_context import ALLOW, DialogContext, timers_of
from services.sipagent.events import HoldRefused, SessionChanged
from services.sipagent.session_timer import SessionTimer, answer_timer, negotiated
from services.sipagent.trunk_sdp import LocalSdp, SdpOfferError, is_held, narrowed

log = logging.getLogger(__name__)

GLARE_RETRY = (2.1, 4.0)
"Seconds (range) before our re-INVITE refused with 491 is tried again (we own the Call-ID)."
RETRY_AFTER = 5
"Retry-After (seconds) of the 500 to a re-INVITE that overlaps one still unacknowledged."


def sdp_of(message: Request | Response) -> str | None:
    """The SDP body of a message, if any."""
    content_type = (message.headers.get("Content-Type") or "application/sdp").lower()
    if not message.body or "application/sdp" not in content_type:
        return None
    return message.body.decode("utf-8", "replace")


@dataclass
class _Outgoing:
    """Our hold, resume or session refresh re-INVITE in flight."""

    held: bool
    tx: InviteClientTransaction
    challenged: bool = False
    refresh: tuple[tuple[str, str], ...] = ()
    "Session-timer headers: a refresh, not asked by the browser (no event unless SDP moved)."
    give_up_at: float | None = None
    "After a provisional response (Timer B no longer runs): when it is CANCELled."


class SessionUpdates:
    """The media session of the dialog as both sides last agreed it."""

    def __init__(self, context: DialogContext, offer_sdp: str, answer_sdp: str) -> None:
        self._context = context
        try:
            self._local: LocalSdp | None = LocalSdp(offer_sdp)
        except SdpOfferError as exc:
            log.warning("%s: our offer cannot be renegotiated: %s", context.call_id, exc)
            self._local = None
        self.remote_sdp = answer_sdp
        self.local_hold = False
        self._answering: InviteServerTransaction | None = None
        "The trunk's re-INVITE we answered 2xx: until its ACK, then absorbing until Timer L."
        self._offered = False
        "Our 200 carried the offer (re-INVITE without SDP): the answer comes in the ACK."
        self._outgoing: _Outgoing | None = None
        self._cancelled: _Outgoing | None = None
        "Our re-INVITE given up on: a 2xx crossing its CANCEL still sets the session."
        self._acks: dict[int, Request] = {}
        "ACKs of our re-INVITEs' 2xx by CSeq, re-sent when a 2xx is retransmitted."
        self._retry_at: float | None = None
        self._retry_held = False
        self._retry_refresh: tuple[tuple[str, str], ...] = ()
        self._wanted: bool | None = None
        "A hold or resume asked while another re-INVITE was under way."
        self.refreshed: float | None = None
        "When the trunk last refreshed the session (re-INVITE or UPDATE), for session timers."
        self.timer: SessionTimer | None = None
        "The dialog's session timer, renegotiated by every re-INVITE and UPDATE."

    @property
    def remote_hold(self) -> bool:
        return is_held(self.remote_sdp)

    @property
    def busy(self) -> bool:
        """An offer of ours or of the trunk's is still open."""
        return self._outgoing is not None or self._unacknowledged is not None

    @property
    def _unacknowledged(self) -> InviteServerTransaction | None:
        """The transaction of the trunk's re-INVITE whose 2xx has no ACK yet."""
        tx = self._answering
        return tx if tx is not None and not tx.acknowledged and not tx.terminated else None

    # --- the trunk's re-INVITE and UPDATE ---------------------------------------

    def on_invite(self, request: Request, now: float) -> None:
        context = self._context
        if self._unacknowledged is not None:
            # RFC 3261 14.2: a re-INVITE while the previous one is not ACKed yet.
            context.respond(request, 500, now, headers=[("Retry-After", str(RETRY_AFTER))])
            return
        if self._outgoing is not None:
            context.respond(request, 491, now)  # glare with our own re-INVITE
            return
        offer = sdp_of(request)
        try:
            body = self._answer(offer) if offer is not None else self._offer()
        except SdpOfferError as exc:
            log.info("%s: re-INVITE refused: %s", context.call_id, exc)
            context.respond(request, 488, now)
            return
        context.dialog.refresh_target(request)
        response = context.response(
            request,
            200,
            headers=[
                ("Contact", context.contact),
                ("Allow", ALLOW),
                *self._timer_answer(request, now),
            ],
            body=body.encode(),
            content_type="application/sdp",
        )
        tx = InviteServerTransaction(request, reliable=context.reliable, t1=context.t1)
        tx.respond(response, now)
        context.outbox.extend(tx.messages_to_send())
        log.info("%s: > 200 OK (re-INVITE)", context.call_id)
        self._answering, self._offered = tx, offer is None
        self.refreshed = now
        if offer is not None:
            self._accept(narrowed(offer, body))

    def on_update(self, request: Request, now: float) -> None:
        context = self._context
        offer = sdp_of(request)
        if offer is not None and self._outgoing is not None:
            context.respond(request, 491, now)
            return
        if offer is not None and self._unacknowledged is not None:
            context.respond(request, 500, now, headers=[("Retry-After", str(RETRY_AFTER))])
            return
        body = b""
        if offer is not None:
            try:
                body = self._answer(offer).encode()
            except SdpOfferError as exc:
                log.info("%s: UPDATE refused: %s", context.call_id, exc)
                context.respond(request, 488, now)
                return
        context.dialog.refresh_target(request)
        context.respond(
            request,
            200,
            now,
            headers=[("Contact", context.contact), *self._timer_answer(request, now)],
            body=body,
            content_type="application/sdp",
        )
        self.refreshed = now
        if offer is not None:
            self._accept(narrowed(offer, body.decode()))

    def on_ack(self, ack: Request, now: float) -> None:
        tx = self._answering
        if tx is None or not tx.matches(ack):
            return  # the ACK of a refusal, or a stray one
        tx.receive(ack, now)
        if not isinstance(tx.next_event(), AckReceived):
            return  # a retransmitted ACK, absorbed
        if self._offered:
            answer = sdp_of(ack)
            if answer is None:
                log.warning("%s: ACK without the SDP answer: session kept", self._context.call_id)
            else:
                self._accept(answer)
        self._continue(now)

    def _answer(self, offer: str) -> str:
        return self._sdp().answer(offer, local_hold=self.local_hold)

    def _offer(self, held: bool | None = None) -> str:
        held = self.local_hold if held is None else held
        return self._sdp().offer("sendonly" if held else "sendrecv")

    def _sdp(self) -> LocalSdp:
        if self._local is None:
            raise SdpOfferError("our offer has no audio")
        return self._local

    def _accept(self, remote_sdp: str) -> None:
        self.remote_sdp = remote_sdp
        self._report()

    def _report(self, transferred_to: str = "") -> None:
        self._context.events.append(
            SessionChanged(self.remote_sdp, self.local_hold, self.remote_hold, transferred_to)
        )

    def _timer_answer(self, request: Request, now: float) -> list[tuple[str, str]]:
        """The session-timer headers of our 2xx to ``request``, which set the timer anew."""
        timer = self.timer
        headers, settled = answer_timer(request, timer.current if timer else None)
        if timer is not None:
            timer.renegotiate(settled, now)
        return headers

    # --- our hold and resume -----------------------------------------------------

    def hold(self, held: bool, now: float) -> None:
        """Put the trunk on hold (``sendonly``) or resume it (``sendrecv``)."""
        if self.busy or self._retry_at is not None:
            self._wanted = held
            return
        if held == self.local_hold:
            self._report()  # nothing to change: say how things stand
            return
        self._send(held, now)

    def refresh(self, headers: list[tuple[str, str]], now: float) -> None:
        """A session-timer refresh by re-INVITE (our SDP as it stands)."""
        if self.busy or self._retry_at is not None:
            return  # the offer under way refreshes the session as well
        self._send(self.local_hold, now, refresh=tuple(headers))

    def _send(
        self,
        held: bool,
        now: float,
        auth: tuple[str, str] | None = None,
        refresh: tuple[tuple[str, str], ...] = (),
    ) -> None:
        context = self._context
        try:
            body = self._offer(held).encode()
        except SdpOfferError as exc:
            self._context.events.append(HoldRefused(held, None, str(exc)))
            return
        # RFC 4028 7.4: every re-INVITE of ours asks to keep the session timer going.
        timer = refresh or (self.timer.request_headers() if self.timer else ())
        request = context.request(
            "INVITE",
            headers=[("Allow", ALLOW), *timer, *([auth] if auth else [])],
            body=body,
            content_type="application/sdp",
        )
        tx = InviteClientTransaction(request, reliable=context.reliable, t1=context.t1)
        self._outgoing = _Outgoing(held, tx, challenged=auth is not None, refresh=refresh)
        context.start(tx, now, self._on_event)

    def _on_event(self, event: TransactionEvent, now: float) -> None:
        outgoing = self._outgoing
        if not isinstance(event, ResponseReceived):
            if outgoing is not None:
                self._refuse(outgoing, None, "No answer from the trunk", now)
            return
        response = event.response
        if response.code < 200:
            if outgoing is not None and outgoing.give_up_at is None:
                outgoing.give_up_at = now + 64 * self._context.t1
            return
        if 200 <= response.code < 300:
            self._on_success(response, now)
            return
        if outgoing is None or response.cseq.sequence != outgoing.tx.request.cseq.sequence:
            return
        log.info("%s: < %s (re-INVITE)", self._context.call_id, summary(response))
        if response.code == 491:
            self._outgoing = None
            self._retry_held = outgoing.held
            self._retry_refresh = outgoing.refresh
            self._retry_at = now + self._context.rng.uniform(*GLARE_RETRY)
        elif response.code in (401, 407) and not outgoing.challenged:
            header = self._context.authorize(response, outgoing.tx.request)
            if header is None:
                self._refuse(outgoing, response.code, "Authentication failed", now)
            else:
                self._send(outgoing.held, now, header, outgoing.refresh)
        else:
            self._refuse(outgoing, response.code, response.phrase, now)

    def _on_success(self, response: Response, now: float) -> None:
        context = self._context
        sequence = response.cseq.sequence
        ack = self._acks.get(sequence)
        if ack is not None:
            context.outbox.append(ack)  # a retransmitted 2xx
            return
        outgoing = self._outgoing
        auth = [
            (name, value)
            for name in ("Authorization", "Proxy-Authorization")
            for value in (outgoing.tx.request.headers.getlist(name) if outgoing else [])
        ]
        ack = context.request("ACK", cseq=sequence, headers=auth)
        self._acks = {sequence: ack}
        context.outbox.append(ack)
        log.info("%s: < %s (re-INVITE), > ACK", context.call_id, summary(response))
        context.dialog.refresh_target(response)
        quiet = False
        if outgoing is not None and outgoing.tx.request.cseq.sequence == sequence:
            self._outgoing = None
            self.local_hold = outgoing.held
            quiet = bool(outgoing.refresh)
        elif self._cancelled is not None and self._cancelled.tx.request.cseq.sequence == sequence:
            self.local_hold = self._cancelled.held  # its 2xx crossed our CANCEL
        self._cancelled = None
        if self.timer is not None:
            self.timer.renegotiate(negotiated(response), now)  # RFC 4028 7.2
        answer = sdp_of(response)
        if answer is not None and answer != self.remote_sdp:
            self.remote_sdp = answer
            quiet = False
        if not quiet:
            self._report()
        self._continue(now)

    def _refuse(self, outgoing: _Outgoing, status: int | None, reason: str, now: float) -> None:
        self._outgoing = None
        if outgoing.refresh:
            log.info("%s: session refresh refused: %s", self._context.call_id, reason)
            if status is None or status in (408, 481):
                self._context.dead("session refresh refused or unanswered", now)
                return
        else:
            log.info("%s: %s refused: %s", self._context.call_id, _what(outgoing.held), reason)
            self._context.events.append(HoldRefused(outgoing.held, status, reason))
        self._continue(now)

    def _continue(self, now: float) -> None:
        """Send the hold or resume asked while busy, if it still changes something."""
        wanted, self._wanted = self._wanted, None
        if wanted is not None and not self.busy and self._retry_at is None:
            self.hold(wanted, now)

    # --- timers ------------------------------------------------------------------

    def _give_up(self, outgoing: _Outgoing, now: float) -> None:
        """CANCEL our re-INVITE left at a provisional response, and refuse it."""
        context = self._context
        invite = outgoing.tx.request
        cancel = make_cancel(invite, context.user_agent)
        tx = NonInviteClientTransaction(cancel, reliable=context.reliable, t1=context.t1)
        context.start(tx, now, lambda event, now: None)
        self._cancelled = outgoing
        self._refuse(outgoing, None, "No answer from the trunk", now)

    def handle_timer(self, now: float) -> None:
        outgoing = self._outgoing
        if outgoing is not None and outgoing.give_up_at is not None and now >= outgoing.give_up_at:
            self._give_up(outgoing, now)
        tx = self._answering
        if tx is not None and (deadline := tx.get_timer()) is not None and deadline <= now:
            tx.handle_timer(now)
            self._context.outbox.extend(tx.messages_to_send())
            if tx.terminated:
                self._answering = None
            if isinstance(tx.next_event(), AckTimedOut):
                self._context.dead("no ACK for our 200 to the re-INVITE", now)
                return
        if self._retry_at is not None and now >= self._retry_at:
            self._retry_at = None
            held, self._wanted = self._wanted, None
            self._send(self._retry_held if held is None else held, now, refresh=self._retry_refresh)

    def get_timer(self) -> float | None:
        answering = self._answering
        outgoing = self._outgoing
        return timers_of(
            outgoing.give_up_at if outgoing else None,
            answering.get_timer() if answering else None,
            self._retry_at,
        )

    def serves(self, cancel: Request) -> bool:
        """Whether ``cancel`` names the re-INVITE answered 2xx and not ACKed yet.

        Its 2xx was sent at once, so the CANCEL changes nothing (RFC 3261 9.2).
        """
        answering = self._unacknowledged
        return answering is not None and top_branch(cancel) == answering.branch

    def absorb(self, request: Request) -> bool:
        """A retransmitted re-INVITE we answered 2xx: the 2xx again until its ACK.

        Its transaction absorbs it after the ACK (RFC 6026); a retransmitted
        INVITE arms no timer in any state, so no clock is needed here.
        """
        tx = self._answering
        if tx is None or request.method != "INVITE" or not tx.matches(request):
            return False
        final = tx.final
        if final is not None and not tx.acknowledged:
            self._context.outbox.append(final)
        return True


def _what(held: bool) -> str:
    return "hold" if held else "resume"
