"""Whether a browser's call attempt may start, and how a refusal is told.

A call attempt (an offer, or an accept of a call from the trunk) is refused
before any work when the token has expired, the dial plan says no, or the
abuse limits answer an ``Admit`` with a refusal. The page gets an ``error``
with the code, the audit one ``refused`` line; nothing is published.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from proto import errors
from services.signaling import audit, messages
from services.signaling.actions import Admit
from services.signaling.attempt import Attempt
from services.signaling.outbox import Outbox

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an attempt may not start: the error code and the text for the page."""

    code: str
    text: str


TOKEN_EXPIRED = Refusal(errors.UNAUTHORIZED, "your token has expired: connect again with a new one")
NOT_ADMITTED = Refusal(errors.SETUP_FAILED, "the call could not be admitted")
"The limits did not answer in time."

_LIMIT_REFUSALS = {
    errors.RATE_LIMITED: "too many call attempts: wait a little and try again",
    errors.TOO_MANY_CALLS: "you already have as many calls as you may",
}


def limit_refusal(code: str) -> Refusal:
    """The limits' refusal ``code`` as the page is told it."""
    return Refusal(code, _LIMIT_REFUSALS.get(code, "the call is not allowed now"))


def admit(attempt: Attempt) -> Admit:
    """The question to the limits for ``attempt``: answered by ``BrowserSession.admitted()``."""
    caller = attempt.caller
    max_calls = caller.claims.max_calls if caller.claims is not None else None
    return Admit(attempt.call_id, caller.identity, caller.source, max_calls)


def refuse(outbox: Outbox, attempt: Attempt, refusal: Refusal, now: float) -> None:
    """An attempt refused before any work: ``error`` to the page, one audit line."""
    log.info("call %s: refused (%s)", attempt.call_id, refusal.code)
    outbox.send(messages.error(refusal.code, refusal.text))
    outbox.add(attempt.audit(audit.REFUSED, refusal.code, now))
