"""Which sockets of this instance listen as which user: sans I/O.

A user's subject (``subjects.inbound_calls``) is subscribed while at least
one socket here listens as that user, and unsubscribed when the last one
stops, so a signaling instance hears only the calls it can ring.
"""

from __future__ import annotations

from proto import subjects
from services.signaling.actions import Subscribe, Unsubscribe


class Listeners:
    """Sockets by user and users by socket; each change says what to (un)subscribe."""

    def __init__(self) -> None:
        self._sockets: dict[str, dict[str, None]] = {}
        "User to its sockets, in the order they started listening."
        self._users: dict[str, str] = {}
        "Socket to the user it listens as."

    def user_of(self, socket: str) -> str | None:
        return self._users.get(socket)

    def sockets(self, user: str) -> tuple[str, ...]:
        """The sockets listening as ``user``, oldest first."""
        return tuple(self._sockets.get(user, ()))

    @property
    def users(self) -> tuple[str, ...]:
        return tuple(self._sockets)

    def add(self, socket: str, user: str) -> list[Subscribe | Unsubscribe]:
        """``socket`` listens as ``user`` (instead of whoever it listened as)."""
        if self._users.get(socket) == user:
            return []
        changes: list[Subscribe | Unsubscribe] = list(self.remove(socket))
        self._users[socket] = user
        sockets = self._sockets.setdefault(user, {})
        if not sockets:
            changes.append(Subscribe(subjects.inbound_calls(user)))
        sockets[socket] = None
        return changes

    def remove(self, socket: str) -> list[Subscribe | Unsubscribe]:
        """``socket`` listens no more (or never did)."""
        user = self._users.pop(socket, None)
        if user is None:
            return []
        sockets = self._sockets[user]
        sockets.pop(socket, None)
        if sockets:
            return []
        del self._sockets[user]
        return [Unsubscribe(subjects.inbound_calls(user))]
