"""The REFER the trunk sends in a confirmed dialog (RFC 3515), sans-I/O.

``Referral`` answers REFER (202, or 603 when the trunk's ``transfer``
setting is ``decline``), reports ``TransferRequested`` and sends the
``Event: refer`` NOTIFYs with ``message/sipfrag`` progress of the new call.
Placing that call is ``TransferringCall``'s business (``transfer.py``).
"""

from __future__ import annotations

import dataclasses
import logging

from sipmessage import URI, Request

from services.common.sip.transaction import (
    NonInviteClientTransaction,
    ResponseReceived,
    TransactionEvent,
)
from services.sipagent.dialog_context import DialogContext
from services.sipagent.events import TransferRequested

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
