"""RFC 3261 section 17 transactions, sans-I/O.

Each transaction is driven with ``receive(message, now)`` and
``handle_timer(now)``; what it wants sent is pulled with
``messages_to_send()``, what happened with ``next_event()``, and when it next
needs the clock with ``get_timer()``. Over a reliable transport nothing is
retransmitted and the absorbing timers D, K and J are zero.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

from sipmessage import Request, Response

from services.common.sip.message import SipMessage, make_request, summary, top_branch

log = logging.getLogger(__name__)

T1 = 0.5
"RTT estimate (seconds)."
T2 = 4.0
"Maximum retransmit interval of non-INVITE requests (seconds)."
T4 = 5.0
"Maximum time a message stays in the network (seconds)."
TIMER_D = 32.0
"How long an INVITE client transaction absorbs retransmitted final responses."


@dataclass(frozen=True)
class ResponseReceived:
    """A response the transaction user must see (not a retransmission it absorbed)."""

    response: Response


@dataclass(frozen=True)
class TransactionTimedOut:
    """Timer B or F fired: no final response arrived."""


TransactionEvent = ResponseReceived | TransactionTimedOut


class State(enum.Enum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    ACCEPTED = "accepted"
    TERMINATED = "terminated"


M = TypeVar("M", bound=SipMessage)
E = TypeVar("E")


class TransactionBase(Generic[M, E]):
    """Timers, outbox and events shared by every transaction kind (``M``: what it
    sends, ``E``: the events it reports)."""

    def __init__(
        self, request: Request, *, reliable: bool, t1: float, state: State = State.TRYING
    ) -> None:
        self.request = request
        self.reliable = reliable
        self.state = state
        self._t1 = t1
        self._timers: dict[str, float] = {}
        self._outbox: list[M] = []
        self._events: deque[E] = deque()

    @property
    def branch(self) -> str:
        return top_branch(self.request)

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED

    def get_timer(self) -> float | None:
        return min(self._timers.values(), default=None)

    def handle_timer(self, now: float) -> None:
        for name, deadline in sorted(self._timers.items(), key=lambda item: item[1]):
            if deadline <= now and self._timers.get(name) == deadline:
                del self._timers[name]
                self._on_timer(name, now)

    def messages_to_send(self) -> list[M]:
        out, self._outbox = self._outbox, []
        return out

    def next_event(self) -> E | None:
        return self._events.popleft() if self._events else None

    def _on_timer(self, name: str, now: float) -> None:
        raise NotImplementedError

    def _set_state(self, state: State) -> None:
        log.debug(
            "%s %s: %s -> %s", self.request.method, self.branch, self.state.value, state.value
        )
        self.state = state
        if state is State.TERMINATED:
            self._timers.clear()


class _ClientTransaction(TransactionBase[SipMessage, TransactionEvent]):
    def matches(self, response: Response) -> bool:
        """RFC 3261 17.1.3: same top Via branch and same CSeq method."""
        return top_branch(response) == self.branch and response.cseq.method == self.request.method


class InviteClientTransaction(_ClientTransaction):
    """RFC 3261 17.1.1 with the Accepted state of RFC 6026."""

    def __init__(
        self,
        request: Request,
        *,
        reliable: bool = False,
        t1: float = T1,
        timer_d: float = TIMER_D,
    ) -> None:
        super().__init__(request, reliable=reliable, t1=t1)
        self.state = State.CALLING
        self._timer_d = 0.0 if reliable else timer_d
        self._interval = t1
        self._ack: Request | None = None

    def start(self, now: float) -> None:
        """Send the INVITE and arm Timers A and B."""
        self._outbox.append(self.request)
        if not self.reliable:
            self._timers["A"] = now + self._interval
        self._timers["B"] = now + 64 * self._t1

    def receive(self, response: Response, now: float) -> None:
        code = response.code
        if self.state in (State.CALLING, State.PROCEEDING):
            if code < 200:
                self._timers.pop("A", None)
                self._set_state(State.PROCEEDING)
                self._timers.pop("B", None)
                self._events.append(ResponseReceived(response))
            elif code < 300:
                # 2xx retransmissions go to the TU, which re-sends its ACK (RFC 6026).
                self._timers.clear()
                self._set_state(State.ACCEPTED)
                self._timers["M"] = now + 64 * self._t1
                self._events.append(ResponseReceived(response))
            else:
                self._timers.clear()
                self._ack = self._make_ack(response)
                self._outbox.append(self._ack)
                self._set_state(State.COMPLETED)
                self._timers["D"] = now + self._timer_d
                self._events.append(ResponseReceived(response))
        elif self.state is State.COMPLETED and code >= 300 and self._ack is not None:
            log.debug("re-sending ACK for retransmitted %s", summary(response))
            self._outbox.append(self._ack)
        elif self.state is State.ACCEPTED and 200 <= code < 300:
            self._events.append(ResponseReceived(response))

    def _on_timer(self, name: str, now: float) -> None:
        if name == "A" and self.state is State.CALLING:
            self._outbox.append(self.request)
            self._interval *= 2
            self._timers["A"] = now + self._interval
        elif name == "B" and self.state is State.CALLING:
            self._set_state(State.TERMINATED)
            self._events.append(TransactionTimedOut())
        elif name in ("D", "M"):
            self._set_state(State.TERMINATED)

    def _make_ack(self, response: Response) -> Request:
        """The ACK of a non-2xx final response (RFC 3261 17.1.1.3)."""
        request = self.request
        headers = [
            ("Via", request.headers.getlist("Via")[0]),
            ("Max-Forwards", "70"),
            *(("Route", value) for value in request.headers.getlist("Route")),
            ("From", request.headers["From"]),
            ("To", response.headers["To"]),
            ("Call-ID", request.headers["Call-ID"]),
            ("CSeq", f"{request.cseq.sequence} ACK"),
        ]
        return make_request("ACK", request.uri, headers)


class NonInviteClientTransaction(_ClientTransaction):
    """RFC 3261 17.1.2: BYE, CANCEL and the like."""

    def __init__(
        self,
        request: Request,
        *,
        reliable: bool = False,
        t1: float = T1,
        t2: float = T2,
        t4: float = T4,
    ) -> None:
        super().__init__(request, reliable=reliable, t1=t1)
        self._t2 = t2
        self._timer_k = 0.0 if reliable else t4
        self._interval = t1

    def start(self, now: float) -> None:
        """Send the request and arm Timers E and F."""
        self._outbox.append(self.request)
        if not self.reliable:
            self._timers["E"] = now + self._interval
        self._timers["F"] = now + 64 * self._t1

    def receive(self, response: Response, now: float) -> None:
        if self.state not in (State.TRYING, State.PROCEEDING):
            return  # retransmitted final response, absorbed in Completed
        if response.code < 200:
            if self.state is State.TRYING:
                self._set_state(State.PROCEEDING)
            self._events.append(ResponseReceived(response))
            return
        self._timers.clear()
        self._set_state(State.COMPLETED)
        self._timers["K"] = now + self._timer_k
        self._events.append(ResponseReceived(response))

    def _on_timer(self, name: str, now: float) -> None:
        if name == "E" and self.state in (State.TRYING, State.PROCEEDING):
            self._outbox.append(self.request)
            # Trying doubles up to T2; Proceeding retransmits every T2.
            if self.state is State.TRYING:
                self._interval = min(self._interval * 2, self._t2)
            else:
                self._interval = self._t2
            self._timers["E"] = now + self._interval
        elif name == "F":
            self._set_state(State.TERMINATED)
            self._events.append(TransactionTimedOut())
        elif name == "K":
            self._set_state(State.TERMINATED)


class NonInviteServerTransaction(TransactionBase[SipMessage, TransactionEvent]):
    """RFC 3261 17.2.2, reduced to what a UAC needs: answer once, repeat on retransmission.

    Also used for the 488 to a re-INVITE, which is retransmitted only when the
    INVITE is (no Timer G).
    """

    def __init__(self, request: Request, *, reliable: bool = False, t1: float = T1) -> None:
        super().__init__(request, reliable=reliable, t1=t1)
        self._response: Response | None = None

    def matches(self, request: Request) -> bool:
        return top_branch(request) == self.branch and request.method == self.request.method

    def respond(self, response: Response, now: float) -> None:
        """Send the final response and keep it for retransmitted requests (Timer J)."""
        self._response = response
        self._outbox.append(response)
        self._set_state(State.COMPLETED)
        self._timers["J"] = now + (0.0 if self.reliable else 64 * self._t1)

    def receive(self, request: Request, now: float) -> None:
        if self.state is State.COMPLETED and self._response is not None:
            log.debug(
                "re-sending %s for retransmitted %s", summary(self._response), summary(request)
            )
            self._outbox.append(self._response)

    def _on_timer(self, name: str, now: float) -> None:
        if name == "J":
            self._set_state(State.TERMINATED)
