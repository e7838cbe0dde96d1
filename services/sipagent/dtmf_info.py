"""DTMF by SIP INFO (``application/dtmf-relay``), both ways.

Digits go by INFO when the trunk's mode is ``info``, or when it is
``rfc4733`` but the trunk's current SDP has no telephone-event (media then
sends no RFC 4733 events). One digit per INFO, the next once the previous
one has its final response (or timed out), so the trunk hears them in order.
"""

from __future__ import annotations

import logging
import re
from collections import deque
from collections.abc import Callable

from sipmessage import Request

from services.common.sip.transaction import (
    NonInviteClientTransaction,
    ResponseReceived,
    TransactionEvent,
)
from services.sipagent.dialog_context import DialogContext
from services.sipagent.events import DtmfIn
from services.sipagent.trunk_sdp import has_telephone_event

log = logging.getLogger(__name__)

DIGITS = frozenset("0123456789*#ABCD")
DTMF_RELAY = "application/dtmf-relay"
DTMF = "application/dtmf"
# RFC 4733 event codes 10 and 11 are * and #; some trunks send them as numbers.
_EVENT_CODES = {str(i): d for i, d in enumerate("0123456789*#ABCD")}
_SIGNAL = re.compile(r"^\s*signal\s*=\s*(\S+)\s*$", re.IGNORECASE | re.MULTILINE)


def uses_info(mode: str, remote_sdp: str) -> bool:
    """Whether DTMF toward the trunk goes by INFO rather than RTP events."""
    return mode == "info" or not has_telephone_event(remote_sdp)


def relay_body(digit: str, duration_ms: int) -> bytes:
    return f"Signal={digit}\r\nDuration={duration_ms}\r\n".encode()


def digit_of(content_type: str, body: bytes) -> str | None:
    """The digit of an INFO body; None when there is none we recognise."""
    text = body.decode("utf-8", "replace")
    if content_type == DTMF_RELAY:
        match = _SIGNAL.search(text)
        value = match.group(1) if match else ""
    else:
        value = text.strip()
    value = value.upper()
    if value in DIGITS:
        return value
    return _EVENT_CODES.get(value)


class InfoDtmf:
    """INFO digits out (queued, one at a time) and in (reported as ``DtmfIn``)."""

    def __init__(self, context: DialogContext, mode: str, remote_sdp: Callable[[], str]) -> None:
        self._context = context
        self._mode = mode
        self._remote_sdp = remote_sdp
        self._queue: deque[tuple[str, int]] = deque()
        self._tx: NonInviteClientTransaction | None = None
        self._challenged = False

    def send(self, digits: str, duration_ms: int, now: float) -> None:
        """Send ``digits`` by INFO if INFO is how this trunk gets them; else nothing."""
        if not uses_info(self._mode, self._remote_sdp()):
            return
        self._queue.extend((digit, duration_ms) for digit in digits.upper() if digit in DIGITS)
        if self._tx is None:
            self._next(now)

    def on_info(self, request: Request, now: float) -> None:
        context = self._context
        content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if not request.body:
            context.respond(request, 200, now)  # an empty INFO only probes the dialog
            return
        if content_type not in (DTMF_RELAY, DTMF):
            context.respond(request, 415, now, headers=[("Accept", f"{DTMF_RELAY}, {DTMF}")])
            return
        digit = digit_of(content_type, request.body)
        if digit is None:
            context.respond(request, 400, now)
            return
        context.respond(request, 200, now)
        context.events.append(DtmfIn(digit))

    def _next(self, now: float, auth: tuple[str, str] | None = None) -> None:
        if not self._queue:
            self._tx = None
            return
        digit, duration_ms = self._queue[0]
        context = self._context
        request = context.request(
            "INFO",
            headers=[auth] if auth else [],
            body=relay_body(digit, duration_ms),
            content_type=DTMF_RELAY,
        )
        self._challenged = auth is not None
        self._tx = NonInviteClientTransaction(request, reliable=context.reliable, t1=context.t1)
        context.start(self._tx, now, self._on_event)

    def _on_event(self, event: TransactionEvent, now: float) -> None:
        if isinstance(event, ResponseReceived):
            response = event.response
            if response.code < 200:
                return
            if response.code in (401, 407) and not self._challenged and self._tx is not None:
                header = self._context.authorize(response, self._tx.request)
                if header is not None:
                    self._next(now, header)
                    return
            if response.code >= 300:
                log.info("%s: INFO digit refused: %d", self._context.call_id, response.code)
        else:
            log.info("%s: INFO digit timed out", self._context.call_id)
        self._queue.popleft()
        self._next(now)
