"""Requests within a confirmed dialog, sans-I/O.

``InDialog`` takes over once the INVITE's 2xx is ACKed: it answers the
trunk's re-INVITE, UPDATE, OPTIONS, INFO and REFER, and sends our own hold
re-INVITEs, INFO digits, OPTIONS keep-alives and session refreshes. BYE,
CANCEL and the call's end stay with ``CallBase``.
"""

from __future__ import annotations

from sipmessage import Request, Response

from services.sipagent.dialog_context import ALLOW, DialogContext, timers_of
from services.sipagent.dtmf_info import InfoDtmf
from services.sipagent.keepalive import KeepAlive
from services.sipagent.session_timer import SessionTimer
from services.sipagent.session_update import SessionUpdates
from services.sipagent.transfer import Referral


class InDialog:
    """Everything a confirmed dialog does besides BYE."""

    def __init__(
        self,
        context: DialogContext,
        *,
        offer_sdp: str,
        answer_sdp: str,
        dtmf: str = "rfc4733",
        keepalive: float = 0.0,
        transfer: str = "follow",
        now: float = 0.0,
        answer: Response | None = None,
    ) -> None:
        """``offer_sdp``/``answer_sdp``: the INVITE's offer and the trunk's answer.

        ``answer``: the INVITE's 2xx, for its session timer (none without it).
        """
        self.context = context
        self.session = SessionUpdates(context, offer_sdp, answer_sdp)
        self.dtmf = InfoDtmf(context, dtmf, lambda: self.session.remote_sdp)
        self.keepalive = KeepAlive(context, keepalive, now)
        self.referral = Referral(context, transfer)
        self.timer: SessionTimer | None = None
        if answer is not None:
            self.timer = SessionTimer(
                context,
                answer,
                now,
                refreshed=lambda: self.session.refreshed,
                reinvite=self.session.refresh,
            )
            self.session.timer = self.timer

    def on_request(self, request: Request, now: float) -> None:
        """A new request in the dialog (CSeq already checked), other than BYE and ACK."""
        context = self.context
        method = request.method
        if method == "INVITE":
            self.session.on_invite(request, now)
        elif method == "UPDATE":
            self.session.on_update(request, now)
        elif method == "OPTIONS":
            context.respond(
                request, 200, now, headers=[("Allow", ALLOW), ("Accept", "application/sdp")]
            )
        elif method == "INFO":
            self.dtmf.on_info(request, now)
        elif method == "REFER":
            self.referral.on_refer(request, now)
        else:
            context.respond(request, 501, now, headers=[("Allow", ALLOW)])

    def on_ack(self, ack: Request, now: float) -> None:
        self.session.on_ack(ack, now)

    def hold(self, held: bool, now: float) -> None:
        self.session.hold(held, now)

    def send_dtmf(self, digits: str, duration_ms: int, now: float) -> None:
        self.dtmf.send(digits, duration_ms, now)

    def handle_timer(self, now: float) -> None:
        self.context.handle_timer(now)
        self.session.handle_timer(now)
        self.keepalive.handle_timer(now)
        if self.timer is not None:
            self.timer.handle_timer(now)

    def get_timer(self) -> float | None:
        return timers_of(
            self.context.get_timer(),
            self.session.get_timer(),
            self.keepalive.get_timer(),
            self.timer.get_timer() if self.timer is not None else None,
        )

    def cancels(self, cancel: Request) -> bool:
        """Whether ``cancel`` matches a server transaction of the dialog (RFC 3261 9.2)."""
        return self.context.serves(cancel) or self.session.serves(cancel)

    def absorb(self, request: Request, now: float) -> bool:
        """Whether ``request`` is a retransmission we answered already (answer re-sent)."""
        return self.context.absorb(request, now) or self.session.absorb(request)
