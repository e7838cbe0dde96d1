"""What the agent keeps and says for messages of no call, sans-I/O.

``Expiring`` remembers keys for a while, bounded in number (the Call-IDs of
calls no longer hosted, for a 2xx that comes late; the INVITEs answered
without a call, for their retransmissions); ``stateless_reply`` is the answer
to a request of no call; ``NewInvites`` hands an INVITE outside a dialog to
``on_invite`` and repeats its answer to the INVITE's retransmissions.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Generic, TypeVar

from sipmessage import Request, Response

from services.common.sip.message import SipMessage, make_response, new_tag, tag_of, top_branch
from services.sipagent.agent_ports import OnInvite
from services.sipagent.call import ALLOW, USER_AGENT
from services.sipagent.hosted import Addr, SipCall

MAX_ANSWERED = 10000
"INVITEs answered without a call remembered at most."
ANSWERED_INVITE_TIME = 64
"In T1: how long an INVITE answered without a call gets its response again when retransmitted."

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


class NewInvites:
    """INVITEs outside a dialog for no call: ``on_invite`` decides, once per transaction."""

    def __init__(self, t1: float, forgotten: Container[str]) -> None:
        """``forgotten``: Call-IDs no longer hosted (an INVITE there is none of ``on_invite``'s)."""
        self.on_invite: OnInvite | None = None
        "Decides on an INVITE outside a dialog for no call (None: 481)."
        self._t1 = t1
        self._forgotten = forgotten
        self._answered: Expiring[tuple[str, str], bytes] = Expiring(MAX_ANSWERED)
        "INVITEs answered without a call, by Call-ID and branch: the response, for a while."

    def offered(self, request: Request) -> bool:
        """Whether ``request`` (of no hosted call) is a new INVITE for ``on_invite``.

        ``on_invite`` then screens its source itself.
        """
        return (
            self.on_invite is not None
            and request.method == "INVITE"
            and not tag_of(request.headers.get("To") or "")
            and request.call_id not in self._forgotten
        )

    def decide(
        self, request: Request, addr: Addr, transport: str, now: float
    ) -> SipCall | bytes | None:
        """What becomes of an ``offered`` INVITE: a call to host, a response to send, or nothing.

        A retransmission of an INVITE answered without a call gets the same answer.
        """
        if self.on_invite is None:
            return None
        key = (request.call_id, top_branch(request))
        answered = self._answered.get(key, now)
        if answered is not None:
            return answered
        result = self.on_invite(request, addr, transport, now)
        if isinstance(result, Response):
            data = bytes(result)
            self._answered.put(key, data, now + ANSWERED_INVITE_TIME * self._t1, now)
            return data
        return result
