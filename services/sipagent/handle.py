"""One placed call as the service sees it, and what the agent drives behind it.

``CallHandle`` queues the call's events and turns the service's requests
(hang up, hold, DTMF) into actions the agent runs on the sans-I/O call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from sipmessage import Request

from services.common.sip.message import SipMessage
from services.common.sip.next_hop import Hops
from services.sipagent.attempt import DialPlan
from services.sipagent.events import CallEvent
from services.sipagent.resolve import Target
from services.sipagent.transfer import TransferringCall
from services.sipagent.transport import Addr, SipTransport

SipObserver = Callable[[str, str], None]
"Told ``(direction, summary)`` of each SIP message of a call (``>`` sent, ``<`` received)."


class SipCall(Protocol):
    """What ``SipAgent`` drives: ``TransferringCall``, or ``RecoveredBye`` for an adopted dialog."""

    call_id: str
    sip_call_id: str

    @property
    def request_uri(self) -> str: ...

    def start(self, now: float) -> None: ...

    def receive(self, message: SipMessage, now: float) -> None: ...

    def hangup(self, cause: str, now: float) -> None: ...

    def handle_timer(self, now: float) -> None: ...

    def get_timer(self) -> float | None: ...

    def messages_to_send(self) -> list[SipMessage]: ...

    def next_event(self) -> CallEvent | None: ...

    @property
    def finished(self) -> bool: ...


class CallDriver(Protocol):
    """The agent as a handle sees it: it runs every action on the call, then sends."""

    def hangup(self, handle: CallHandle, cause: str) -> None: ...

    def drive(self, handle: CallHandle, action: Callable[[float], None]) -> None: ...


class CallHandle:
    """One placed call as the service sees it: a queue of events and a hang-up.

    After a failover ``call``, ``trunk`` and ``transport`` are those of the
    INVITE to the current target.
    """

    def __init__(
        self, agent: CallDriver, call: SipCall, trunk: Addr, transport: SipTransport | None = None
    ) -> None:
        self.call = call
        self.trunk = trunk
        self.transport = transport
        "The transport of the call (None: the agent's first one)."
        self.events: asyncio.Queue[CallEvent] = asyncio.Queue()
        self.observer: SipObserver | None = None
        self.target: Target | None = None
        self.hops: Hops | None = None
        "Where in-dialog requests go (None: everything to ``trunk``)."
        self._agent = agent
        # The agent's own bookkeeping (failover, hang-up), not for the service.
        self._dial: DialPlan | None = None
        self._provisional = False
        "The current target sent a provisional response: no failover from here on."
        self._hung_up = False
        self._retired = False
        "An earlier attempt kept only to absorb retransmissions: its events go nowhere."
        self._closed = False
        "Ended by the agent itself (transport failure): nothing more to do."

    @property
    def request_uri(self) -> str:
        return self.call.request_uri

    def hangup(self, cause: str) -> None:
        self._agent.hangup(self, cause)

    def hold(self, held: bool) -> None:
        """Put the trunk on hold or resume it (a re-INVITE once the call is answered)."""
        call = self.call
        if isinstance(call, TransferringCall):
            self._agent.drive(self, lambda now: call.hold(held, now))

    def send_dtmf(self, digits: str, duration_ms: int) -> None:
        """Send DTMF by SIP INFO when the trunk gets it that way."""
        call = self.call
        if isinstance(call, TransferringCall):
            self._agent.drive(self, lambda now: call.send_dtmf(digits, duration_ms, now))

    def destination(self, request: Request) -> Addr:
        """Where ``request`` goes: the trunk, or within a dialog its next hop."""
        return self.hops.destination(request) if self.hops else self.trunk
