"""What a browser session asks its adapter to do: small records, pulled in order."""

from __future__ import annotations

from dataclasses import dataclass

from proto.events import AnyEvent
from services.signaling.messages import Outgoing


@dataclass(frozen=True, slots=True)
class SendMessage:
    """Send this JSON object to the browser."""

    message: Outgoing


@dataclass(frozen=True, slots=True)
class Publish:
    """Publish ``event`` on ``subject``."""

    subject: str
    event: AnyEvent


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Deliver the events of ``subject`` to ``handle_event()``."""

    subject: str


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """Stop delivering the events of ``subject``."""

    subject: str


@dataclass(frozen=True, slots=True)
class Close:
    """Close the WebSocket with this close code and reason."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Admit:
    """Ask the abuse limits whether this call may start; answer with ``admitted()``."""

    call_id: str
    identity: str | None
    source: str
    max_calls: int | None


@dataclass(frozen=True, slots=True)
class Release:
    """The admitted call ended: free its place in the identity's concurrent calls."""

    call_id: str
    identity: str | None


@dataclass(frozen=True, slots=True)
class Audit:
    """Write one audit line: a call attempt's outcome (never a token or digits)."""

    record: dict[str, object]


@dataclass(frozen=True, slots=True)
class Deliver:
    """Send this JSON object to the browser on socket ``socket`` (the switchboard's rings)."""

    socket: str
    message: Outgoing


Action = SendMessage | Publish | Subscribe | Unsubscribe | Close | Admit | Release | Audit | Deliver
