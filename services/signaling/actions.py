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


Action = SendMessage | Publish | Subscribe | Unsubscribe | Close
