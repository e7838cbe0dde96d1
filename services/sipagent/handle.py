"""One hosted call as the service sees it: its events, and what the service may ask of it.

``CallHandle`` queues the call's events and turns the service's requests
(hang up, hold, DTMF; ring, reject, answer for an inbound call) into actions
the agent runs on the sans-I/O call with ``now``. What it tells of the call
it reads from the core's record (``HostedCall``), which only the core writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from services.sipagent.events import CallEvent
from services.sipagent.hosted import Addr, Answering, HostedCall, InDialogControls
from services.sipagent.hosted import SipCall as SipCall
from services.sipagent.hosted import SipObserver as SipObserver
from services.sipagent.resolve import Target


class CallDriver(Protocol):
    """The agent as a handle sees it: it runs every action on the call, then sends."""

    def hangup(self, handle: CallHandle, cause: str) -> None: ...

    def drive(self, handle: CallHandle, action: Callable[[float], None]) -> None: ...


class CallHandle:
    """One hosted call as the service sees it: a queue of events and the requests it may make.

    After a failover ``call``, ``trunk`` and ``transport_name`` are those of
    the INVITE to the current target.
    """

    def __init__(self, agent: CallDriver, hosted: HostedCall) -> None:
        self.events: asyncio.Queue[CallEvent] = asyncio.Queue()
        self._agent = agent
        self._hosted = hosted

    @property
    def hosted(self) -> HostedCall:
        """The core's record of the call (read it, never write it)."""
        return self._hosted

    @property
    def call(self) -> SipCall:
        """The sans-I/O call (after a failover: the current attempt)."""
        return self._hosted.call

    @property
    def trunk(self) -> Addr:
        """Where requests outside a dialog go: the current target, or the INVITE's source."""
        return self._hosted.trunk

    @property
    def transport_name(self) -> str:
        """``udp``, ``tcp`` or ``tls``."""
        return self._hosted.transport

    @property
    def target(self) -> Target | None:
        return self._hosted.target

    @property
    def request_uri(self) -> str:
        return self._hosted.call.request_uri

    @property
    def inbound(self) -> bool:
        """Hosted from the trunk's INVITE."""
        return self._hosted.inbound

    @property
    def hung_up(self) -> bool:
        return self._hosted.hung_up

    @property
    def closed(self) -> bool:
        """Ended by the agent itself (a transport failure): nothing more to do."""
        return self._hosted.closed

    def hangup(self, cause: str) -> None:
        self._agent.hangup(self, cause)

    def hold(self, held: bool) -> None:
        """Put the trunk on hold or resume it (a re-INVITE once the call is answered)."""
        call = self._hosted.call
        if isinstance(call, InDialogControls):
            self._agent.drive(self, lambda now: call.hold(held, now))

    def send_dtmf(self, digits: str, duration_ms: int) -> None:
        """Send DTMF by SIP INFO when the trunk gets it that way."""
        call = self._hosted.call
        if isinstance(call, InDialogControls):
            self._agent.drive(self, lambda now: call.send_dtmf(digits, duration_ms, now))

    # --- an inbound call (nothing for an outbound one) ----------------------------

    def ring(self) -> None:
        """Tell the trunk the call rings (180)."""
        call = self._hosted.call
        if isinstance(call, Answering):
            self._agent.drive(self, call.ring)

    def reject(self, status: int, reason: str = "") -> None:
        """Refuse the trunk's INVITE with ``status`` (486, 480, 603...)."""
        call = self._hosted.call
        if isinstance(call, Answering):
            self._agent.drive(self, lambda now: call.reject(status, reason, now))

    def answer(self, sdp: str) -> None:
        """Answer the trunk's INVITE with ``sdp`` (200, sent again until ACKed)."""
        call = self._hosted.call
        if isinstance(call, Answering):
            self._agent.drive(self, lambda now: call.answer(sdp, now))
