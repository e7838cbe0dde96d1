"""RFC 4028 session timers in a confirmed dialog.

Our INVITE offers ``Session-Expires`` (``Supported: timer``) and the 2xx
says who refreshes; to the trunk's INVITE our 2xx says it (``answer_timer``).
When we refresh, an UPDATE (a re-INVITE if the trunk does not allow UPDATE)
goes every half interval; when the trunk does and no re-INVITE
or UPDATE of its own comes before the interval is nearly over
(``interval - min(32, interval / 3)``, RFC 4028 10), the call is ended as a
dead dialog. A 2xx without ``Session-Expires`` means no session timer.

Every refresh renegotiates (RFC 4028 7.2, 9, 10): the 2xx of each re-INVITE
or UPDATE, ours or the trunk's, says again who refreshes and how often, or
turns the timer off. Our refresh by UPDATE answers a challenge once, takes a
422's Min-SE, and falls back to re-INVITE on 405 or 501.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sipmessage import Request, Response

from services.common.digits import number
from services.common.sip.transaction import (
    NonInviteClientTransaction,
    ResponseReceived,
    TransactionEvent,
)
from services.sipagent.dialog_context import DialogContext

log = logging.getLogger(__name__)

SESSION_EXPIRES = 1800
"Seconds our INVITE asks for (the RFC 4028 recommended value)."
MIN_SE = 90
"The smallest interval RFC 4028 allows."
DEAD = frozenset({408, 481})


def session_expires(value: str | None) -> tuple[int, str] | None:
    """``(seconds, refresher)`` of a Session-Expires value; None when absent or unreadable."""
    parsed = _session_expires(value)
    if parsed is None:
        return None
    # A 2xx must name the refresher; without one we keep the call alive.
    return parsed[0], parsed[1] or "uac"


def _session_expires(value: str | None) -> tuple[int, str | None] | None:
    """``(seconds, refresher or None when not named)``; None when absent or unreadable."""
    if not value:
        return None
    delta, *params = (part.strip() for part in value.split(";"))
    seconds = number(delta)
    if not seconds:
        return None
    refresher = None
    for param in params:
        name, _, setting = param.partition("=")
        if name.strip().lower() == "refresher" and setting.strip().lower() in ("uac", "uas"):
            refresher = setting.strip().lower()
    return seconds, refresher


def supports_timer(message: Request | Response) -> bool:
    """Whether ``message`` says ``Supported: timer`` (or requires it)."""
    tokens = [
        token.strip().lower()
        for name in ("Supported", "Require")
        for value in message.headers.getlist(name)
        for token in value.split(",")
    ]
    return "timer" in tokens


Negotiated = tuple[int, bool] | None
"What a 2xx settled: ``(interval, we refresh)``, or None for no session timer."


def answer_timer(request: Request, current: Negotiated) -> tuple[list[tuple[str, str]], Negotiated]:
    """RFC 4028 9: the session-timer headers of our 2xx to the trunk's re-INVITE or UPDATE.

    ``current``: the timer as it stands. Returns the headers and what they settle.
    The request's Session-Expires is taken; without one a running timer is kept
    going. An unnamed refresher stays who it was, and is us when the trunk does
    not support timers; ``Require: timer`` only to a request that supports them.
    """
    supported = supports_timer(request)
    parsed = _session_expires(request.headers.get("Session-Expires"))
    if parsed is not None:
        interval, refresher = parsed
    elif current is not None:
        interval, refresher = current[0], None
    else:
        return [], None
    if refresher is None:
        keep = "uas" if current is None or current[1] else "uac"
        refresher = keep if supported else "uas"
    headers = [("Session-Expires", f"{interval};refresher={refresher}")]
    if refresher == "uac" and supported:
        headers.append(("Require", "timer"))
    # In the trunk's request we are the UAS.
    return headers, (interval, refresher == "uas")


def negotiated(response: Response) -> Negotiated:
    """RFC 4028 7.2: what the 2xx to our re-INVITE or UPDATE settled (we are the UAC)."""
    parsed = session_expires(response.headers.get("Session-Expires"))
    return None if parsed is None else (parsed[0], parsed[1] == "uac")


def allows_update(message: Request | Response) -> bool:
    """Whether ``message`` lists UPDATE in its Allow."""
    allow = ",".join(message.headers.getlist("Allow")).upper()
    return "UPDATE" in [method.strip() for method in allow.split(",")]


def min_se(response: Response) -> int | None:
    """The Min-SE of a 422, if readable."""
    value = (response.headers.get("Min-SE") or "").split(";")[0].strip()
    return number(value)


class SessionTimer:
    """Refresh the session, or watch the trunk refresh it."""

    def __init__(
        self,
        context: DialogContext,
        settled: Negotiated,
        now: float,
        *,
        use_update: bool,
        refreshed: Callable[[], float | None],
        reinvite: Callable[[list[tuple[str, str]], float], None],
    ) -> None:
        """``settled``: what the INVITE's 2xx settled (``negotiated`` of the trunk's 2xx,
        or ``answer_timer`` of the trunk's INVITE); ``use_update``: the trunk allows UPDATE.

        ``refreshed()``: when the trunk last refreshed; ``reinvite(headers, now)``: ours.
        """
        self._context = context
        self._refreshed = refreshed
        self._reinvite = reinvite
        self._since = now
        self._tx: NonInviteClientTransaction | None = None
        self._challenged = False
        "Our UPDATE refresh answered a challenge already."
        self._use_update = use_update
        self.interval: int | None = None
        self.ours = False
        "We refresh."
        self._next: float | None = None
        self.renegotiate(settled, now)

    @property
    def current(self) -> Negotiated:
        return None if self.interval is None else (self.interval, self.ours)

    def renegotiate(self, settled: Negotiated, now: float) -> None:
        """A 2xx to a re-INVITE or UPDATE, ours or the trunk's, set the timer anew."""
        self._since = now
        if settled is None:
            self.interval, self._next = None, None
            return
        self.interval, self.ours = settled
        self._next = now + self.interval / 2 if self.ours else self._expiry(now)

    def request_headers(self) -> list[tuple[str, str]]:
        """For our re-INVITE or UPDATE: keep the timer as it is (RFC 4028 7.4)."""
        if self.interval is None:
            return [("Supported", "timer")]
        refresher = "uac" if self.ours else "uas"
        return [
            ("Session-Expires", f"{self.interval};refresher={refresher}"),
            ("Supported", "timer"),
        ]

    def _expiry(self, since: float) -> float:
        assert self.interval is not None
        return since + self.interval - min(32, self.interval / 3)

    def get_timer(self) -> float | None:
        if self._next is None or self.ours:
            return self._next
        # The trunk's refresh moves the deadline.
        refreshed = self._refreshed()
        if refreshed is None or refreshed <= self._since:
            return self._next
        return self._expiry(refreshed)

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
        self._refresh(now)

    def _refresh(self, now: float, auth: tuple[str, str] | None = None) -> None:
        assert self.interval is not None
        headers = [("Session-Expires", f"{self.interval};refresher=uac"), ("Supported", "timer")]
        if not self._use_update:
            self._reinvite(headers, now)
            return
        if self._tx is not None and auth is None:
            return
        self._challenged = auth is not None
        context = self._context
        request = context.request("UPDATE", headers=[*headers, *([auth] if auth else [])])
        self._tx = NonInviteClientTransaction(request, reliable=context.reliable, t1=context.t1)
        context.start(self._tx, now, self._on_event)

    def _on_event(self, event: TransactionEvent, now: float) -> None:
        if isinstance(event, ResponseReceived):
            response = event.response
            if response.code < 200:
                return
            tx, self._tx = self._tx, None
            if 200 <= response.code < 300:
                self.renegotiate(negotiated(response), now)
                return
            if self._retry(response, tx, now):
                return
            if response.code not in DEAD:
                return
        self._tx = None
        self._next = None
        self._context.dead("session refresh refused or unanswered", now)

    def _retry(self, response: Response, tx: NonInviteClientTransaction | None, now: float) -> bool:
        """Refresh again when the refusal of our UPDATE says how; False when it does not."""
        code = response.code
        if code in (401, 407) and tx is not None and not self._challenged:
            header = self._context.authorize(response, tx.request)
            if header is None:
                return False
            self._refresh(now, header)
            return True
        if code in (405, 501):
            log.info("%s: the trunk refuses UPDATE: refresh by re-INVITE", self._context.call_id)
            self._use_update = False
            self._refresh(now)
            return True
        wanted = min_se(response) if code == 422 else None
        if wanted is not None and self.interval is not None and wanted > self.interval:
            self.interval = wanted
            self._refresh(now)
            return True
        return False
