"""RFC 4028 session timers in a confirmed dialog.

Our INVITE offers ``Session-Expires`` (``Supported: timer``); the 2xx says
who refreshes. When we do, an UPDATE (a re-INVITE if the trunk does not
allow UPDATE) goes every half interval; when the trunk does and no re-INVITE
or UPDATE of its own comes before the interval is nearly over
(``interval - min(32, interval / 3)``, RFC 4028 10), the call is ended as a
dead dialog. A 2xx without ``Session-Expires`` means no session timer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sipmessage import Response

from services.common.digits import number
from services.sipagent.dialog_context import DialogContext
from services.sipagent.sip.transaction import (
    NonInviteClientTransaction,
    ResponseReceived,
    TransactionEvent,
)

log = logging.getLogger(__name__)

SESSION_EXPIRES = 1800
"Seconds our INVITE asks for (the RFC 4028 recommended value)."
MIN_SE = 90
"The smallest interval RFC 4028 allows."
DEAD = frozenset({408, 481})


def session_expires(value: str | None) -> tuple[int, str] | None:
    """``(seconds, refresher)`` of a Session-Expires value; None when absent or unreadable."""
    if not value:
        return None
    delta, *params = (part.strip() for part in value.split(";"))
    seconds = number(delta)
    if not seconds:
        return None
    refresher = "uac"  # a 2xx must name the refresher; without one we keep the call alive
    for param in params:
        name, _, setting = param.partition("=")
        if name.strip().lower() == "refresher" and setting.strip().lower() in ("uac", "uas"):
            refresher = setting.strip().lower()
    return seconds, refresher


def min_se(response: Response) -> int | None:
    """The Min-SE of a 422, if readable."""
    value = (response.headers.get("Min-SE") or "").split(";")[0].strip()
    return number(value)


class SessionTimer:
    """Refresh the session, or watch the trunk refresh it."""

    def __init__(
        self,
        context: DialogContext,
        answer: Response,
        now: float,
        *,
        refreshed: Callable[[], float | None],
        reinvite: Callable[[list[tuple[str, str]], float], None],
    ) -> None:
        """``refreshed()``: when the trunk last refreshed; ``reinvite(headers, now)``: ours."""
        self._context = context
        self._refreshed = refreshed
        self._reinvite = reinvite
        self._start = now
        self._tx: NonInviteClientTransaction | None = None
        parsed = session_expires(answer.headers.get("Session-Expires"))
        allow = (answer.headers.get("Allow") or "").upper()
        self._use_update = "UPDATE" in [method.strip() for method in allow.split(",")]
        self.interval: int | None = parsed[0] if parsed else None
        self.ours = parsed is not None and parsed[1] == "uac"
        "We (the UAC of the INVITE) refresh."
        self._next: float | None = None
        if self.interval is not None:
            self._next = now + self.interval / 2 if self.ours else self._expiry(now)

    def _expiry(self, since: float) -> float:
        assert self.interval is not None
        return since + self.interval - min(32, self.interval / 3)

    def get_timer(self) -> float | None:
        if self._next is None or self.ours:
            return self._next
        # The trunk's refresh moves the deadline.
        refreshed = self._refreshed()
        return self._expiry(refreshed) if refreshed is not None else self._next

    def handle_timer(self, now: float) -> None:
        deadline = self.get_timer()
        if deadline is None or now < deadline:
            return
        if not self.ours:
            self._next = None
            log.info("%s: the trunk did not refresh the session", self._context.call_id)
            self._context.dead("session expired without a refresh", now)
            return
        assert self.interval is not None
        self._next = now + self.interval / 2
        headers = [("Session-Expires", f"{self.interval};refresher=uac"), ("Supported", "timer")]
        if not self._use_update:
            self._reinvite(headers, now)
            return
        if self._tx is not None:
            return
        context = self._context
        request = context.request("UPDATE", headers=headers)
        self._tx = NonInviteClientTransaction(request, reliable=context.reliable, t1=context.t1)
        context.start(self._tx, now, self._on_event)

    def _on_event(self, event: TransactionEvent, now: float) -> None:
        if isinstance(event, ResponseReceived):
            if event.response.code < 200:
                return
            self._tx = None
            if event.response.code not in DEAD:
                return
        self._tx = None
        self._next = None
        self._context.dead("session refresh refused or unanswered", now)
