"""What the agent keeps and says for messages of no call. Pure.

``Expiring`` remembers keys for a while, bounded in number (the Call-IDs of
calls no longer hosted, for a 2xx that comes late; the INVITEs answered
without a call, for their retransmissions); ``stateless_reply`` is the answer
to a request of no call.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from sipmessage import Response

from services.common.sip.message import SipMessage, make_response, new_tag
from services.sipagent.call import ALLOW, USER_AGENT

K = TypeVar("K")
V = TypeVar("V")


class Expiring(Generic[K, V]):
    """Up to ``limit`` keys, each with a value until a time (a bound on memory under a flood)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._entries: dict[K, tuple[float, V]] = {}

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` was put, expired or not (until it is pruned)."""
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, key: K, value: V, until: float, now: float) -> None:
        """Keep ``value`` under ``key`` until ``until``; nothing if full of live entries."""
        if len(self._entries) >= self._limit:
            self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
        if len(self._entries) < self._limit:
            self._entries[key] = (until, value)

    def get(self, key: K, now: float) -> V | None:
        """The value under ``key`` unless expired by ``now``."""
        entry = self._entries.get(key)
        return entry[1] if entry is not None and entry[0] >= now else None

    def pop(self, key: K, now: float) -> V | None:
        """``get``, and forget ``key``."""
        entry = self._entries.pop(key, None)
        return entry[1] if entry is not None and entry[0] >= now else None


def stateless_reply(message: SipMessage) -> Response | None:
    """The answer to a message of no call: OPTIONS 200, other requests 481, else none."""
    if isinstance(message, Response) or message.method == "ACK":
        return None
    if message.method == "OPTIONS":
        return make_response(
            message,
            200,
            to_tag=new_tag(),
            headers=[
                ("Allow", ALLOW),
                ("Accept", "application/sdp"),
                ("User-Agent", USER_AGENT),
            ],
        )
    return make_response(message, 481, to_tag=new_tag())
