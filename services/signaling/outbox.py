"""What one browser session has to say, collected in order for its adapter.

The session and the parts of its current call append actions here; the
adapter pulls them with ``BrowserSession.pop_actions()``. Messages to a
browser whose socket is gone are dropped here, in one place.
"""

from __future__ import annotations

from proto.events import AnyEvent
from services.signaling.actions import Action, Close, Publish, SendMessage
from services.signaling.messages import Outgoing


class Outbox:
    def __init__(self) -> None:
        self._actions: list[Action] = []
        self._socket_open = True

    @property
    def socket_open(self) -> bool:
        """False once the socket closed or was closed: nothing more is sent to it."""
        return self._socket_open

    def socket_gone(self) -> None:
        """The socket closed (or is being closed): drop messages from now on."""
        self._socket_open = False

    def send(self, message: Outgoing) -> None:
        """A message to the browser, unless its socket is gone."""
        if self._socket_open:
            self._actions.append(SendMessage(message))

    def publish(self, subject: str, event: AnyEvent) -> None:
        self._actions.append(Publish(subject, event))

    def add(self, action: Action) -> None:
        self._actions.append(action)

    def close(self, code: int, reason: str) -> None:
        """Close the socket with ``code``; nothing more is sent to it."""
        self._actions.append(Close(code, reason))
        self._socket_open = False

    def pop(self) -> list[Action]:
        """What to do, in order; each action is returned once."""
        actions, self._actions = self._actions, []
        return actions
