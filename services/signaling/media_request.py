"""Which media worker gets a call's ``CallRequested``, and again when one declines.

``MediaRequest`` keeps a call's request until a worker has taken it: the
first goes to the worker ``Placement`` chooses (the queue group without one),
a decline sends the same request to the next choice. Both directions of call
use it; the call does the publishing.
"""

from __future__ import annotations

from proto import subjects
from proto.events import CallDeclined, CallRequested
from services.common.fleet.placement import Placement


class MediaRequest:
    def __init__(self, placement: Placement | None) -> None:
        """``placement``: chooses the media worker (one per process); None: the queue group."""
        self._placement = placement
        self._request: CallRequested | None = None

    @property
    def pending(self) -> CallRequested | None:
        """The request no media worker has taken yet, or None."""
        return self._request

    def start(self, request: CallRequested, now: float) -> str:
        """The subject to publish ``request`` on first."""
        self._request = request
        if self._placement is None:
            return subjects.media_work()
        return self._placement.start(request.call_id, now).subject

    def declined(self, event: CallDeclined, now: float) -> str | None:
        """The subject to offer the call to next, or None when no worker is left."""
        if self._placement is None:
            return None
        target = self._placement.declined(event.call_id, event.media_id, now)
        return target.subject if target is not None else None

    def taken(self, call_id: str) -> None:
        """A media worker prepared the call: the request is done."""
        self._request = None
        if self._placement is not None:
            self._placement.finished(call_id)

    def finished(self, call_id: str) -> None:
        """The call is over: whatever placement held for it goes."""
        if self._placement is not None:
            self._placement.finished(call_id)
        self._request = None
