"""What the demo peer's UAS reports about calls, and the RTP ports it is given.

Small typed records, pulled with ``DemoUas.next_event()``; the adapter starts
or stops the echo on them. ``RtpPorts`` is injected so tests need no socket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

Addr = tuple[str, int]


class RtpPorts(Protocol):
    """Opens and closes the per-call echo socket; ``open`` raises OSError when it cannot."""

    def open(self, call_id: str) -> int: ...

    def close(self, call_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class CallAnswered:
    """A call got its 200 OK."""

    call_id: str
    "The Call-ID of the call."
    codec: str
    "The codec of the answer, PCMU or PCMA."
    rtp_port: int
    "The local port echoing the call's RTP."


@dataclass(frozen=True, slots=True)
class CallEnded:
    """A call is over, answered or not; its RTP port is closed."""

    call_id: str
    "The Call-ID of the call."
    reason: str
    "Why, in a few words: 'remote BYE', 'cancelled', 'rejected 488', 'maximum duration'..."


Event = CallAnswered | CallEnded
