"""One call of the demo peer: its state, its dialog's fields, its transactions and deadlines.

A record the UAS (``uas``) moves from state to state; ``deadline`` says when
any of its timers is next due, in the clock of the ``now`` the UAS is fed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from sipmessage import Request, Response

from services.common.sip.invite_server import InviteServerTransaction
from services.common.sip.transaction import NonInviteClientTransaction
from services.demo import sdp
from services.demo.events import Addr
from services.demo.messages import build_response


class CallState(enum.Enum):
    RINGING = "ringing"  # 100 and 180 sent, 200 due at the end of the ring delay
    ANSWERED = "answered"  # 200 sent, re-sent by its transaction until the ACK
    CONFIRMED = "confirmed"  # ACK received, the echo runs
    REJECTED = "rejected"  # a final error sent to the INVITE, waiting for its ACK
    ENDING = "ending"  # our BYE sent, waiting for its response
    TERMINATED = "terminated"  # over; kept a while to answer retransmissions


LIVE = frozenset({CallState.ANSWERED, CallState.CONFIRMED})
"The states of an answered call whose dialog is up."


@dataclass
class DemoCall:
    """One call from its INVITE until the UAS forgets it."""

    call_id: str
    addr: Addr
    invite: Request
    "The latest INVITE (the first or a re-INVITE)."
    cseq: int
    local_tag: str
    tx: InviteServerTransaction
    "The transaction of the latest INVITE."
    state: CallState = CallState.RINGING
    negotiated: sdp.Negotiated | None = None
    rtp_port: int | None = None
    sdp_version: int = 0
    ended: bool = False
    local_cseq: int = 0
    bye: NonInviteClientTransaction | None = None
    # Deadlines, in the clock of ``now``; None when not armed.
    answer_at: float | None = None
    ends_at: float | None = None
    forget_at: float | None = None
    routes: list[str] = field(default_factory=list)
    "The route set, fixed by the dialog-creating INVITE's Record-Route."

    def response(self, code: int, headers: list[tuple[str, str]] | None = None) -> Response:
        """A response to the latest INVITE, To tagged with our tag."""
        return build_response(self.invite, code, to_tag=self.local_tag, headers=headers or [])

    def tx_timer(self) -> float | None:
        """When the INVITE's transaction is due; its timers stop once we end the call."""
        if self.state in (CallState.ENDING, CallState.TERMINATED):
            return None
        return self.tx.get_timer()

    def bye_timer(self) -> float | None:
        return self.bye.get_timer() if self.bye and self.state is CallState.ENDING else None

    def deadline(self) -> float | None:
        times = (
            self.answer_at,
            self.ends_at,
            self.forget_at,
            self.tx_timer(),
            self.bye_timer(),
        )
        return min((t for t in times if t is not None), default=None)
