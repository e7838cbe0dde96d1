"""The INVITE server transaction (RFC 3261 17.2.1 as amended by RFC 6026), sans-I/O.

Fed the INVITE at creation, then the transaction user's responses
(``respond``) and the requests that match it (``receive``: INVITE
retransmissions, the ACK of a non-2xx, the ACK of the 2xx); driven by
``handle_timer(now)``; what it wants sent is pulled with
``messages_to_send()``, what happened with ``next_event()``, when it next
needs the clock with ``get_timer()``.

- Proceeding: a retransmitted INVITE gets the last provisional response again.
- Completed (3xx-6xx sent): Timer G re-sends the final response on an
  unreliable transport until the ACK, Timer H (64*T1) gives up with
  ``AckTimedOut``; after the ACK, Timer I (T4, zero when reliable) absorbs
  its retransmissions.
- Accepted (2xx sent, RFC 6026): the 2xx is re-sent at T1 doubling up to T2
  until its ACK arrives (``AckReceived``), on every transport: RFC 3261
  13.3.1.4 makes this end to end, independent of the transport. Retransmitted
  INVITEs and ACKs are absorbed (with ``resend_2xx``, an INVITE retransmitted
  before the ACK gets the 2xx again at once); Timer L (64*T1) ends the
  transaction, with ``AckTimedOut`` when no ACK came.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sipmessage import Request, Response

from services.common.sip.message import summary, tag_of, top_branch
from services.common.sip.transaction import T1, T2, T4, State, TransactionBase

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AckReceived:
    """The ACK of our 2xx arrived (the first one; retransmissions are absorbed)."""

    ack: Request


@dataclass(frozen=True)
class AckTimedOut:
    """Timer H (non-2xx) or Timer L (2xx) fired before any ACK came."""

    status: int
    "The final response that was never acknowledged."


ServerEvent = AckReceived | AckTimedOut


ServerState = State
"""The states an INVITE server transaction goes through: Proceeding, Completed,
Confirmed, Accepted, Terminated (the transactions' shared ``State``)."""


class InviteServerTransaction(TransactionBase[Response, ServerEvent]):
    """One INVITE we answer: its responses, their retransmission, its ACK."""

    def __init__(
        self,
        request: Request,
        *,
        reliable: bool = False,
        t1: float = T1,
        t2: float = T2,
        t4: float = T4,
        resend_2xx: bool = False,
    ) -> None:
        """``resend_2xx``: in Accepted, a retransmitted INVITE gets the 2xx again
        at once until the ACK (the caller evidently missed it), instead of being
        absorbed until the next retransmission; RFC 6026 leaves that to the
        transaction user."""
        super().__init__(request, reliable=reliable, t1=t1, state=State.PROCEEDING)
        self._resend_2xx = resend_2xx
        self.acknowledged = False
        "The ACK of our final response arrived."
        self._t2 = t2
        self._t4 = t4
        self._last: Response | None = None
        "The last response sent: re-sent for a retransmitted INVITE or by Timer G."
        self._interval = t1

    @property
    def final(self) -> Response | None:
        """Our final response, once sent."""
        last = self._last
        return last if last is not None and last.code >= 200 else None

    # --- the transaction user ----------------------------------------------------

    def respond(self, response: Response, now: float) -> None:
        """Send ``response``; a provisional one only in Proceeding, a final one once."""
        if self.state is not State.PROCEEDING:
            log.debug("INVITE %s: %s after the final response dropped", self.branch, response.code)
            return
        self._last = response
        self._outbox.append(response)
        t1 = self._t1
        if response.code < 200:
            return
        if response.code < 300:
            self._set_state(State.ACCEPTED)
            self._timers["retransmit"] = now + t1
            self._timers["L"] = now + 64 * t1
            return
        self._set_state(State.COMPLETED)
        if not self.reliable:
            self._timers["G"] = now + t1
        self._timers["H"] = now + 64 * t1

    # --- the network -------------------------------------------------------------

    def matches(self, request: Request) -> bool:
        """Whether ``request`` is for this transaction.

        A retransmitted INVITE or the ACK of a non-2xx: the top Via branch
        (RFC 3261 17.2.3). The ACK of a 2xx is a new transaction of the
        caller's: same Call-ID, CSeq number and our To tag (RFC 3261 13.3.1.4).
        """
        if request.method == "INVITE":
            return top_branch(request) == self.branch
        if request.method != "ACK":
            return False
        last = self._last
        if last is not None and 200 <= last.code < 300:
            return (
                request.call_id == self.request.call_id
                and request.cseq.sequence == self.request.cseq.sequence
                and tag_of(request.headers.get("To") or "") == tag_of(last.headers["To"])
            )
        return top_branch(request) == self.branch

    def receive(self, request: Request, now: float) -> None:
        """A request that ``matches``: re-send, absorb, or take the ACK."""
        state = self.state
        if request.method == "INVITE":
            if state in (State.PROCEEDING, State.COMPLETED) and self._last is not None:
                log.debug("re-sending %s for a retransmitted INVITE", summary(self._last))
                self._outbox.append(self._last)
            elif state is State.ACCEPTED and self._resend_2xx and not self.acknowledged:
                assert self._last is not None
                log.debug("re-sending %s for a retransmitted INVITE", summary(self._last))
                self._outbox.append(self._last)
            return  # otherwise Accepted and Confirmed absorb it (RFC 6026 8.5)
        if state is State.COMPLETED:
            self.acknowledged = True
            self._timers.clear()
            self._set_state(State.CONFIRMED)
            self._timers["I"] = now + (0.0 if self.reliable else self._t4)
        elif state is State.ACCEPTED and not self.acknowledged:
            self.acknowledged = True
            self._timers.pop("retransmit", None)
            self._events.append(AckReceived(request))

    # --- timers ------------------------------------------------------------------

    def _on_timer(self, name: str, now: float) -> None:
        last = self._last
        assert last is not None
        if name in ("G", "retransmit"):
            self._outbox.append(last)
            # Timer G and the 2xx both double from T1 up to T2.
            self._interval = min(self._interval * 2, self._t2)
            self._timers[name] = now + self._interval
        elif name in ("H", "L"):
            if not self.acknowledged:
                log.info("INVITE %s: no ACK for %s", self.branch, summary(last))
                self._events.append(AckTimedOut(last.code))
            self._set_state(State.TERMINATED)
        elif name == "I":
            self._set_state(State.TERMINATED)
