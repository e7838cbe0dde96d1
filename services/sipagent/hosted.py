"""What the agent's core hosts: the protocol of a sans-I/O call, and the core's record of one.

``SipCall`` is what ``AgentCore`` drives: ``TransferringCall`` (an outbound
call), ``RecoveredBye`` (an adopted dialog), or an inbound call. ``HostedCall``
is the core's record of one call: the current attempt, where its messages go,
and what the failover decisions need. Only ``AgentCore`` and its ``Failover``
write it; a ``CallHandle`` reads it. ``hops_for`` says where a call's
in-dialog requests go, for both directions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from sipmessage import Request

from services.common.sip.message import SipMessage
from services.common.sip.next_hop import Hops
from services.sipagent.attempt import DialPlan
from services.sipagent.events import CallEvent
from services.sipagent.resolve import Target

Addr = tuple[str, int]

SipObserver = Callable[[str, str], None]
"Told ``(direction, summary)`` of each SIP message of a call (``>`` sent, ``<`` received)."


def hops_for(trunk: Addr, transport: str, *, proxied: bool = False) -> Hops | None:
    """Where a call's in-dialog requests go: their next hop (None: all to ``trunk``).

    ``trunk``: the target of our INVITE, or the source of the trunk's. In-dialog
    requests follow the route set (Record-Route) and remote target (Contact),
    RFC 3261 12.2.1.1, except through an outbound proxy (every request goes to
    it) and over TLS (the connection whose certificate was checked, or that the
    trunk opened, carries the whole dialog).
    """
    if proxied or transport == "tls":
        return None
    return Hops(trunk)


class SipCall(Protocol):
    """A sans-I/O call as the core drives it.

    An inbound call is built from its INVITE (by the core's ``on_invite``);
    the core then hosts it under the INVITE's Call-ID and calls ``start``:
    every later message with that Call-ID (INVITE retransmissions, ACK,
    CANCEL, BYE, re-INVITEs) reaches ``receive``.
    """

    call_id: str
    "The bridge's call id."
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


@runtime_checkable
class InDialogControls(Protocol):
    """A call that can hold and send DTMF once answered (outbound and inbound calls)."""

    def hold(self, held: bool, now: float) -> None: ...

    def send_dtmf(self, digits: str, duration_ms: int, now: float) -> None: ...


@runtime_checkable
class Answering(Protocol):
    """An inbound call: it rings, rejects or answers the trunk's INVITE."""

    def ring(self, now: float) -> None: ...

    def reject(self, status: int, reason: str, now: float) -> None: ...

    def answer(self, sdp: str, now: float) -> None: ...


@dataclass(eq=False)
class HostedCall:
    """The core's record of one call (hashed by identity)."""

    call: SipCall
    "The current attempt: after a failover, the INVITE to the current target."
    trunk: Addr
    "Where requests outside a dialog go: the current target, or an inbound INVITE's source."
    transport: str
    "The name of the transport the call uses (``udp``, ``tcp``, ``tls``)."
    target: Target | None = None
    hops: Hops | None = None
    "Where in-dialog requests go (None: everything to ``trunk``)."
    dial: DialPlan | None = None
    "What a failover needs (None: the call never fails over)."
    observer: SipObserver | None = None
    inbound: bool = False
    "Hosted from the trunk's INVITE."
    provisional: bool = False
    "The current target sent a provisional response: no failover from here on."
    hung_up: bool = False
    retired: bool = False
    "An earlier attempt kept only to absorb retransmissions: its events go nowhere."
    closed: bool = False
    "Ended by the core itself (transport failure): nothing more to do."

    def retired_copy(self) -> HostedCall:
        """This attempt kept apart, only to absorb its retransmissions, once the call moved on."""
        return HostedCall(self.call, self.trunk, self.transport, hops=self.hops, retired=True)

    def destination(self, request: Request) -> Addr:
        """Where ``request`` goes: the trunk, or within a dialog its next hop."""
        return self.hops.destination(request) if self.hops else self.trunk
