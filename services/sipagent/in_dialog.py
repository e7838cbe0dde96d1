"""Requests within a confirmed dialog, sans-I/O.

``InDialog`` takes over once the INVITE's 2xx is ACKed: it answers the
trunk's re-INVITE, UPDATE, OPTIONS, INFO and REFER, and sends our own hold
re-INVITEs, INFO digits, OPTIONS keep-alives and session refreshes. BYE,
CANCEL and the call's end stay with ``CallBase``.
"""

from __future__ import annotations

from sipmessage import Request

from services.sipagent.dialog_context import ALLOW, DialogContext, timers_of
from services.sipagent.dtmf_info import InfoDtmf
from services.sipagent.keepalive import KeepAlive
from services.sipagent.referral import Referral
from services.sipagent.session_timer import Negotiated, SessionTimer
from services.sipagent.session_update import SessionUpdates


class InDialog:
    """Everything a confirmed dialog does besides BYE."""

    def __init__(
        self,
        context: DialogContext,
        *,
        local_sdp: str,
        remote_sdp: str,
        dtmf: str = "rfc4733",
        keepalive: float = 0.0,
        transfer: str = "follow",
        now: float = 0.0,
        settled: Negotiated = None,
        use_update: bool = False,
    ) -> None:
        """``local_sdp``/``remote_sdp``: our SDP and the trunk's as the INVITE settled them.

        ``settled``: the session timer the INVITE's 2xx set (None: none yet; a
        re-INVITE or UPDATE may start one); ``use_update``: the trunk allows UPDATE.
        """
        self.context = context
        self.session = SessionUpdates(context, local_sdp, remote_sdp)
        self.dtmf = InfoDtmf(context, dtmf, lambda: self.session.remote_sdp)
        self.keepalive = KeepAlive(context, keepalive, now)
        self.referral = Referral(context, transfer)
        self.timer = SessionTimer(
            context,
            settled,
            now,
            use_update=use_update,
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
        self.timer.handle_timer(now)

    def get_timer(self) -> float | None:
        return timers_of(
            self.context.get_timer(),
            self.session.get_timer(),
            self.keepalive.get_timer(),
            self.timer.get_timer(),
        )

    def cancels(self, cancel: Request) -> bool:
        """Whether ``cancel`` matches a server transaction of the dialog (RFC 3261 9.2)."""
        return self.context.serves(cancel) or self.session.serves(cancel)

    def absorb(self, request: Request, now: float) -> bool:
        """Whether ``request`` is a retransmission we answered already (answer re-sent)."""
        return self.context.absorb(request, now) or self.session.absorb(request)
