"""One call attempt as the access controls see it: who, where to, admitted, answered.

The session keeps one per offer. It says what the audit line of the attempt
holds and whether the limits are owed a release at its end; nothing here
touches a socket or the bus.
"""

from __future__ import annotations

from services.signaling import audit
from services.signaling.actions import Audit, Release
from services.signaling.caller import Caller
from services.signaling.destinations import Destination


class Attempt:
    def __init__(
        self,
        call_id: str,
        caller: Caller,
        given: str,
        target: Destination | None = None,
        *,
        direction: str = "outbound",
        user: str | None = None,
        peer: str = "",
    ) -> None:
        self.call_id = call_id
        self.caller = caller
        self.direction = direction
        "``outbound`` (the browser's offer) or ``inbound`` (a call from the trunk it accepted)."
        self.user = user if user is not None else caller.identity
        "Who the browser is: the token's ``sub``, or the user an inbound call rang."
        self.peer = peer
        "Inbound: the trunk's caller (From user)."
        self.given = given
        "The destination as the page sent it."
        self.target = target
        "The judged destination; None when it could not be judged."
        self.admitted = False
        "The limits hold a place for this call: it is released at the end."
        self.answered_at: float | None = None

    def audit(self, outcome: str, cause: str, now: float, status: int | None = None) -> Audit:
        """The attempt's audit line, ended now with ``outcome`` and ``cause``."""
        target = self.target
        answered = self.answered_at is not None and outcome == audit.ANSWERED
        return Audit(
            audit.record(
                call_id=self.call_id,
                identity=self.user,
                source=self.caller.source,
                given=self.given,
                destination=target.number if target else "",
                trunk=target.trunk if target else "",
                outcome=outcome,
                cause=cause,
                status=status,
                duration=now - self.answered_at if answered and self.answered_at else None,
                direction=self.direction,
                caller=self.peer,
            )
        )

    def release(self) -> Release | None:
        """The release owed to the limits, once; None when nothing is held."""
        if not self.admitted:
            return None
        self.admitted = False
        return Release(self.call_id, self.caller.identity)
