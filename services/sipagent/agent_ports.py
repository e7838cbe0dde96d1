"""What ``AgentCore`` exchanges with its adapter: the actions it asks for, what it is given.

Actions, pulled in order with ``actions_to_send()``: ``Transmit`` and
``Connect``. Given at construction: ``SentBy`` (the agent's address as a peer
sees it), a ``Screen`` (``SourceScreen``) and ``Hosts`` (``RegistrationTable``);
set later: ``OnInvite``. All plain records and protocols, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sipmessage import Request, Response

from services.common.sip.message import SipMessage
from services.sipagent.hosted import Addr, SipCall
from services.sipagent.resolve import Target


@dataclass(frozen=True)
class Transmit:
    """Send ``data`` to ``addr`` over the transport called ``transport``."""

    data: bytes
    addr: Addr
    transport: str
    "``udp``, ``tcp`` or ``tls``: the adapter's open transport of that name."
    quiet: bool = False
    """No log line for it: an answer to an INVITE the door refused, which a scanner may
    draw by the thousand (the door logs its refusals within the screen's budget)."""


@dataclass(frozen=True)
class Connect:
    """Get the transport of ``target`` ready for it before the next ``Transmit`` there.

    Over TLS: check the certificate of ``target.server_name`` against
    ``tls_ca`` (a trunk's CA file; empty: SIP_TLS_CA, else the system's).
    """

    target: Target
    tls_ca: str = ""


Action = Transmit | Connect

SentBy = Callable[[Addr, str], str]
"This agent's host:port as ``addr`` sees it over a transport (by name): for Via and Contact."

OnInvite = Callable[[Request, Addr, str, float], SipCall | Response | None]
"""Told ``(request, source, transport, now)`` of an INVITE outside a dialog for no call.

Returns a call to host under the INVITE's Call-ID (the core calls its
``start(now)``), a response to send (sent again to the INVITE's
retransmissions), or None to drop it.
"""


class Screen(Protocol):
    """Which sources the core hears (``SourceScreen``); it answers its refusals itself."""

    def admit(self, addr: Addr, now: float) -> bool: ...

    def unparsable(self, addr: Addr, now: float) -> bool: ...

    def request(
        self, request: Request, addr: Addr, transport: str, now: float, in_dialog: bool
    ) -> bool: ...

    def allow(self, host: str) -> None: ...


class Hosts(Protocol):
    """Others hosted by Call-ID next to the calls: the REGISTER bindings (``RegistrationTable``)."""

    def receive(self, message: SipMessage, now: float) -> bool: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...
