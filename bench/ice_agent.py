"""ICE for one lean browser peer: the controlling agent with one host candidate, sans I/O.

The peer has a single local candidate, so its check list is one pair per
remote address. ``IceAgent`` sends a Binding request to every address of
``webrtc_sdp.check_addresses`` (USERNAME ``remote:local``, PRIORITY,
ICE-CONTROLLING, MESSAGE-INTEGRITY keyed with the remote ice-pwd,
FINGERPRINT), retransmits them, and nominates the first pair that succeeds
with one more request carrying USE-CANDIDATE (regular nomination, RFC 8445
section 8.1.1: the controlled side switches only to the pair we name). It
answers the remote's checks and consent requests with a success response
keyed by our own ice-pwd, and checks consent itself (RFC 7675) every
``CONSENT_INTERVAL`` seconds once connected; no answer for
``CONSENT_TIMEOUT`` seconds fails the agent.

Nothing here owns a socket or a clock: ``start``, ``receive`` and ``poll``
take the time and return the datagrams to send, as (bytes, address) pairs.
aioice's ``stun`` module is the message codec.
"""

from __future__ import annotations

import random
import secrets
import string
from dataclasses import dataclass

from aioice import stun

Address = tuple[str, int]
Datagram = tuple[bytes, Address]

CHECK_RTO = 0.1
"First retransmission of a check; doubles, at most ``CHECK_RTO_MAX``."
CHECK_RTO_MAX = 1.0
CHECK_TRIES = 8
CONNECT_TIMEOUT = 10.0
"No nominated pair this long after ``start``: the agent fails."
CONSENT_INTERVAL = 5.0
CONSENT_TIMEOUT = 30.0
PRFLX_PRIORITY = (110 << 24) | (65535 << 8) | 255
"PRIORITY of our checks: a peer-reflexive candidate of component 1 (RFC 8445 5.1.2.1)."

_ICE_CHARS = string.ascii_letters + string.digits + "+/"


def ice_string(length: int) -> str:
    """Random ice-char text (RFC 8839 section 5.4) for ice-ufrag and ice-pwd."""
    return "".join(secrets.choice(_ICE_CHARS) for _ in range(length))


def binding_request(
    remote_ufrag: str,
    local_ufrag: str,
    remote_pwd: str,
    tie_breaker: int,
    nominate: bool = False,
    transaction_id: bytes | None = None,
) -> stun.Message:
    """A controlling agent's check, integrity and fingerprint added: send ``bytes()`` of it."""
    request = stun.Message(
        message_method=stun.Method.BINDING,
        message_class=stun.Class.REQUEST,
        transaction_id=transaction_id,
    )
    request.attributes["USERNAME"] = f"{remote_ufrag}:{local_ufrag}"
    request.attributes["PRIORITY"] = PRFLX_PRIORITY
    request.attributes["ICE-CONTROLLING"] = tie_breaker
    if nominate:
        request.attributes["USE-CANDIDATE"] = None
    request.add_message_integrity(remote_pwd.encode())  # adds FINGERPRINT too
    return request


def binding_success(request: stun.Message, source: Address, local_pwd: str) -> stun.Message:
    """The success response to ``request`` that came from ``source``."""
    response = stun.Message(
        message_method=stun.Method.BINDING,
        message_class=stun.Class.RESPONSE,
        transaction_id=request.transaction_id,
    )
    response.attributes["XOR-MAPPED-ADDRESS"] = source
    response.add_message_integrity(local_pwd.encode())
    return response


def is_valid_request(message: stun.Message, local_ufrag: str, local_pwd: str) -> bool:
    """A Binding request for us: USERNAME ``local:...`` and integrity under our ice-pwd."""
    username = message.attributes.get("USERNAME")
    return (
        message.message_method == stun.Method.BINDING
        and message.message_class == stun.Class.REQUEST
        and isinstance(username, str)
        and username.startswith(local_ufrag + ":")
        and message.check_message_integrity(local_pwd.encode())
    )


@dataclass(slots=True)
class _Transaction:
    data: bytes
    address: Address
    nominate: bool
    consent: bool
    due: float
    rto: float
    tries: int = 1


class IceAgent:
    """Controlling ICE for one local candidate; ``state``: new, checking, connected, failed."""

    def __init__(self, local_ufrag: str | None = None, local_pwd: str | None = None) -> None:
        self.local_ufrag = local_ufrag or ice_string(8)
        self.local_pwd = local_pwd or ice_string(24)
        self.tie_breaker = random.getrandbits(64)
        self.remote_ufrag = ""
        self.remote_pwd = ""
        self.state = "new"
        self.failure = ""
        self.selected: Address | None = None
        "The nominated remote address: where media goes."
        self.next_timer = float("inf")
        self.requests_answered = 0
        self.consent_sent = 0
        self.consent_ok = 0
        self._transactions: dict[bytes, _Transaction] = {}
        self._deadline = float("inf")
        self._next_consent = float("inf")
        self._last_consent = 0.0

    def start(
        self, remote_ufrag: str, remote_pwd: str, addresses: list[Address], now: float
    ) -> list[Datagram]:
        """Check every address (in order) at once; ``failed`` when there is none."""
        self.remote_ufrag, self.remote_pwd = remote_ufrag, remote_pwd
        if not addresses:
            self._fail("no usable ICE candidate in the answer")
            return []
        self.state = "checking"
        self._deadline = now + CONNECT_TIMEOUT
        out = [self._request(address, now, nominate=False) for address in addresses]
        self._update_timer()
        return out

    def _request(
        self, address: Address, now: float, nominate: bool, consent: bool = False
    ) -> Datagram:
        message = binding_request(
            self.remote_ufrag, self.local_ufrag, self.remote_pwd, self.tie_breaker, nominate
        )
        data = bytes(message)
        self._transactions[message.transaction_id] = _Transaction(
            data, address, nominate, consent, due=now + CHECK_RTO, rto=CHECK_RTO
        )
        return data, address

    def receive(self, data: bytes, source: Address, now: float) -> list[Datagram]:
        """Handle one STUN datagram (first byte 0-3) from ``source``."""
        try:
            message = stun.parse_message(data)
        except ValueError:
            return []
        if message.message_class == stun.Class.REQUEST:
            if not is_valid_request(message, self.local_ufrag, self.local_pwd):
                return []
            self.requests_answered += 1
            return [(bytes(binding_success(message, source, self.local_pwd)), source)]
        transaction = self._transactions.get(message.transaction_id)
        if transaction is None:
            return []
        if not message.check_message_integrity(self.remote_pwd.encode()):
            return []  # not from the peer we are checking: the transaction goes on
        del self._transactions[message.transaction_id]
        out: list[Datagram] = []
        ok = message.message_class == stun.Class.RESPONSE and source == transaction.address
        if transaction.consent:
            if ok:
                self.consent_ok += 1
                self._last_consent = now
        elif ok and transaction.nominate and self.state == "checking":
            self.state = "connected"
            self.selected = transaction.address
            self._drop_checks()
            self._last_consent = now
            self._next_consent = now + CONSENT_INTERVAL * (0.8 + 0.4 * random.random())
        elif ok and not transaction.nominate and self.state == "checking":
            if not any(t.nominate for t in self._transactions.values()):
                out.append(self._request(transaction.address, now, nominate=True))
        elif not ok and self.state == "checking" and not self._transactions:
            self._fail("every ICE check failed")
        self._update_timer()
        return out

    def poll(self, now: float) -> list[Datagram]:
        """Retransmissions, consent checks and time-outs due at ``now``."""
        if now < self.next_timer:
            return []
        out: list[Datagram] = []
        if self.state == "checking" and now >= self._deadline:
            self._fail("ICE timed out")
            return out
        for txid, t in list(self._transactions.items()):
            if now < t.due:
                continue
            if t.tries >= (1 if t.consent else CHECK_TRIES):
                del self._transactions[txid]
                continue
            t.tries += 1
            t.rto = min(t.rto * 2, CHECK_RTO_MAX)
            t.due = now + t.rto
            out.append((t.data, t.address))
        if self.state == "checking" and not self._transactions:
            self._fail("every ICE check timed out")
            return out
        if self.state == "connected":
            if now - self._last_consent >= CONSENT_TIMEOUT:
                self._fail("ICE consent expired")
                return out
            if now >= self._next_consent and self.selected is not None:
                self._next_consent = now + CONSENT_INTERVAL * (0.8 + 0.4 * random.random())
                self.consent_sent += 1
                out.append(self._request(self.selected, now, nominate=False, consent=True))
                # one try: the next consent check is the retry (as aioice does)
                self._transactions[_txid(out[-1][0])].due = self._next_consent
        self._update_timer()
        return out

    def _drop_checks(self) -> None:
        self._transactions = {k: t for k, t in self._transactions.items() if t.consent}

    def _fail(self, reason: str) -> None:
        self.state = "failed"
        self.failure = reason
        self._transactions.clear()
        self.next_timer = float("inf")

    def close(self) -> None:
        self.state = "closed"
        self._transactions.clear()
        self.next_timer = float("inf")

    def _update_timer(self) -> None:
        if self.state in ("failed", "closed"):
            self.next_timer = float("inf")
            return
        due = min((t.due for t in self._transactions.values()), default=float("inf"))
        if self.state == "checking":
            due = min(due, self._deadline)
        elif self.state == "connected":
            due = min(due, self._next_consent, self._last_consent + CONSENT_TIMEOUT)
        self.next_timer = due


def _txid(data: bytes) -> bytes:
    return data[8:20]
