"""In-dialog OPTIONS keep-alive: find a trunk that forgot the call.

Every ``interval`` seconds an OPTIONS goes in the dialog. Any final
response but 408 and 481 proves the dialog alive (a 405 or 501 too); a 408,
a 481 or no response at all (Timer F) ends the call as a dead dialog.
"""

from __future__ import annotations

import logging

from services.common.sip.transaction import (
    NonInviteClientTransaction,
    ResponseReceived,
    TransactionEvent,
)
from services.sipagent.dialog_context import ALLOW, DialogContext

log = logging.getLogger(__name__)

DEAD = frozenset({408, 481})
"Responses saying the dialog is gone (RFC 5057 4.1: 481, and 408 from a proxy)."


class KeepAlive:
    """One OPTIONS at a time, ``interval`` seconds after the last answer; 0: off."""

    def __init__(self, context: DialogContext, interval: float, now: float) -> None:
        self._context = context
        self._interval = interval
        self._next_at: float | None = now + interval if interval > 0 else None
        self._tx: NonInviteClientTransaction | None = None

    def handle_timer(self, now: float) -> None:
        if self._next_at is None or now < self._next_at or self._tx is not None:
            return
        self._next_at = None
        context = self._context
        request = context.request(
            "OPTIONS", headers=[("Accept", "application/sdp"), ("Allow", ALLOW)]
        )
        self._tx = NonInviteClientTransaction(request, reliable=context.reliable, t1=context.t1)
        context.start(self._tx, now, self._on_event)

    def get_timer(self) -> float | None:
        return self._next_at

    def _on_event(self, event: TransactionEvent, now: float) -> None:
        if isinstance(event, ResponseReceived):
            code = event.response.code
            if code < 200:
                return
            if code not in DEAD:
                self._tx = None
                self._next_at = now + self._interval
                return
            reason = f"keep-alive OPTIONS answered {code}"
        else:
            reason = "keep-alive OPTIONS unanswered"
        self._tx = None
        log.info("%s: dialog dead: %s", self._context.call_id, reason)
        self._context.dead(reason, now)
