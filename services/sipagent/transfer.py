"""Blind transfer asked by the trunk (REFER, RFC 3515), sans-I/O.

``Referral`` is the in-dialog half: it answers REFER (202, or 603 when the
trunk's ``transfer`` setting is ``decline``) and sends the ``Event: refer``
NOTIFYs with ``message/sipfrag`` progress. ``TransferringCall`` is what the
SIP agent hosts: it runs the original ``OutboundCall`` and, once a REFER was
accepted, a new one to the Refer-To URI through the same trunk (new
Call-ID, the same SDP offer). On its 2xx the new call becomes the call and
the old dialog is ended with BYE; on its failure the trunk is told and the
original call goes on.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from sipmessage import URI, Request

from services.common.sip.message import SipMessage
from services.common.sip.transaction import (
    NonInviteClientTransaction,
    ResponseReceived,
    TransactionEvent,
)
from services.sipagent.dialog_context import DialogContext
from services.sipagent.events import (
    Answered,
    CallEvent,
    Ended,
    SessionChanged,
    TransferRequested,
)
from services.sipagent.trunk_sdp import is_held

if TYPE_CHECKING:
    from services.common.sip.dialog import Dialog
    from services.sipagent.call import OutboundCall

log = logging.getLogger(__name__)

FOLLOW = "follow"
DECLINE = "decline"
TRANSFER_MODES = (FOLLOW, DECLINE)
SUBSCRIPTION_EXPIRES = 60
"Seconds the implicit refer subscription lasts while the new call is set up."


def refer_target(value: str) -> str:
    """The Refer-To URI without its embedded headers or password; ``ValueError`` if unusable."""
    value = value.strip()
    if "<" in value:
        start = value.index("<") + 1
        end = value.find(">", start)
        if end < 0:
            raise ValueError("unterminated Refer-To")
        text = value[start:end]
    else:
        text = value.split(";", 1)[0]
    # Embedded headers (Replaces, ...) are not followed: a blind transfer only.
    text = text.split("?", 1)[0]
    uri = URI.parse(text)
    if uri.scheme not in ("sip", "sips"):
        raise ValueError(f"cannot call a {uri.scheme}: URI")
    return str(dataclasses.replace(uri, password=None))


def sipfrag(status: int, phrase: str) -> bytes:
    return f"SIP/2.0 {status} {phrase}\r\n".encode()


class Referral:
    """The REFER the trunk sent in our dialog, and the NOTIFYs it is owed."""

    def __init__(self, context: DialogContext, mode: str = FOLLOW) -> None:
        self._context = context
        self._mode = mode
        self.active = False
        "A REFER was accepted and its final NOTIFY is not sent yet."
        self._event = "refer"
        "The Event of the NOTIFYs: ``refer;id=<CSeq>`` after the dialog's first REFER."
        self._refers = 0

    def on_refer(self, request: Request, now: float) -> None:
        context = self._context
        if self._mode == DECLINE:
            context.respond(request, 603, now)
            return
        if self.active:
            context.respond(request, 491, now)
            return
        try:
            target = refer_target(request.headers["Refer-To"])
        except (KeyError, ValueError) as exc:
            log.info("%s: REFER refused: %s", context.call_id, exc)
            context.respond(request, 400, now)
            return
        if target.startswith("sips:") and not context.secure:
            # RFC 3261 26.2.2: a sips: URI is reached over TLS end to end, or not at all.
            log.info("%s: REFER to a sips: URI refused: the call is not over TLS", context.call_id)
            context.respond(request, 403, now)
            return
        context.respond(request, 202, now)
        self.active = True
        self._refers += 1
        # RFC 3515 2.4.6: a later REFER's subscription is told apart by its CSeq.
        self._event = "refer" if self._refers == 1 else f"refer;id={request.cseq.sequence}"
        self.notify(100, "Trying", now)
        context.events.append(TransferRequested(target))

    def notify(self, status: int, phrase: str, now: float) -> None:
        """Tell the referrer how the new call goes; a final ``status`` ends the subscription."""
        if not self.active:
            return
        final = status >= 200
        state = (
            "terminated;reason=noresource" if final else f"active;expires={SUBSCRIPTION_EXPIRES}"
        )
        context = self._context
        request = context.request(
            "NOTIFY",
            headers=[("Event", self._event), ("Subscription-State", state)],
            body=sipfrag(status, phrase),
            content_type="message/sipfrag;version=2.0",
        )
        if final:
            self.active = False
        tx = NonInviteClientTransaction(request, reliable=context.reliable, t1=context.t1)
        context.start(tx, now, self._on_event)

    def _on_event(self, event: TransactionEvent, now: float) -> None:
        if isinstance(event, ResponseReceived) and event.response.code >= 300:
            log.info("%s: NOTIFY refused: %d", self._context.call_id, event.response.code)


class TransferringCall:
    """One call as the SIP agent hosts it: the original dialog, or the one a REFER made."""

    def __init__(self, call: OutboundCall, place: Callable[[str], OutboundCall]) -> None:
        """``place(uri)``: a new, unstarted call to ``uri`` through the same trunk."""
        self._active = call
        self._place = place
        self._attempt: OutboundCall | None = None
        self._target = ""
        self._retired: list[OutboundCall] = []
        "Calls replaced or failed, kept until their SIP clean-up is done."
        self._held_end: Ended | None = None
        "The original call's end while a transfer attempt may still take over."
        self._events: deque[CallEvent] = deque()
        self.dropped: list[str] = []
        "Call-IDs of replaced or failed calls now done with, for the host to forget."
        self.call_id = call.call_id
        self.sip_call_id = call.sip_call_id

    @property
    def request_uri(self) -> str:
        return self._active.request_uri

    @property
    def dialog(self) -> Dialog | None:
        return self._active.dialog

    @property
    def call(self) -> OutboundCall:
        """The call now in place (the new one after a transfer)."""
        return self._active

    @property
    def sip_call_ids(self) -> list[str]:
        return [call.sip_call_id for call in self._calls()]

    def _calls(self) -> list[OutboundCall]:
        calls = [self._active, *self._retired]
        if self._attempt is not None:
            calls.append(self._attempt)
        return calls

    # --- driving -----------------------------------------------------------------

    def start(self, now: float) -> None:
        self._active.start(now)
        self._pump(now)

    def receive(self, message: SipMessage, now: float) -> None:
        for call in self._calls():
            if call.sip_call_id == message.call_id:
                call.receive(message, now)
                break
        self._pump(now)

    def hangup(self, cause: str, now: float) -> None:
        if self._attempt is not None:
            self._attempt.hangup(cause, now)
        self._active.hangup(cause, now)
        self._pump(now)

    def hold(self, held: bool, now: float) -> None:
        self._active.hold(held, now)
        self._pump(now)

    def send_dtmf(self, digits: str, duration_ms: int, now: float) -> None:
        self._active.send_dtmf(digits, duration_ms, now)
        self._pump(now)

    def handle_timer(self, now: float) -> None:
        for call in self._calls():
            deadline = call.get_timer()
            if deadline is not None and deadline <= now:
                call.handle_timer(now)
        self._pump(now)

    def get_timer(self) -> float | None:
        timers = [call.get_timer() for call in self._calls()]
        return min((t for t in timers if t is not None), default=None)

    def messages_to_send(self) -> list[SipMessage]:
        return [message for call in self._calls() for message in call.messages_to_send()]

    def next_event(self) -> CallEvent | None:
        return self._events.popleft() if self._events else None

    @property
    def finished(self) -> bool:
        return all(call.finished for call in self._calls())

    # --- events of the calls -----------------------------------------------------

    def _pump(self, now: float) -> None:
        while (event := self._active.next_event()) is not None:
            self._on_active(event, now)
        attempt = self._attempt
        while attempt is not None and (event := attempt.next_event()) is not None:
            self._on_attempt(attempt, event, now)
            attempt = self._attempt
        for call in self._retired:
            while call.next_event() is not None:
                pass  # a replaced call's end is not the call's end
        self.dropped.extend(call.sip_call_id for call in self._retired if call.finished)
        self._retired = [call for call in self._retired if not call.finished]

    def _on_active(self, event: CallEvent, now: float) -> None:
        if isinstance(event, TransferRequested):
            self._start_attempt(event.target, now)
        elif isinstance(event, Ended) and self._attempt is not None:
            # The referrer hung up first, as it may: the new call decides.
            self._held_end = event
        else:
            self._events.append(event)

    def _start_attempt(self, target: str, now: float) -> None:
        log.info("%s: transfer to %s", self.call_id, target)
        self._target = target
        self._attempt = self._place(target)
        self._attempt.start(now)

    def _on_attempt(self, attempt: OutboundCall, event: CallEvent, now: float) -> None:
        if isinstance(event, Answered):
            old = self._active
            old.notify_transfer(200, "OK", now)
            old.retire(now)
            self._retired.append(old)
            self._active, self._attempt = attempt, None
            self._held_end = None
            self._events.append(
                SessionChanged(event.sdp, False, is_held(event.sdp), transferred_to=self._target)
            )
            log.info("%s: transferred to %s", self.call_id, self._target)
        elif isinstance(event, Ended):
            log.info("%s: transfer to %s failed: %s", self.call_id, self._target, event.reason)
            self._active.notify_transfer(event.status or 503, event.reason or "Failed", now)
            self._retired.append(attempt)
            self._attempt = None
            if self._held_end is not None:
                held, self._held_end = self._held_end, None
                self._events.append(held)
        # Progress of the new call is not the browser's business: it is still connected.
