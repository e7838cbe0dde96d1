"""Who is at the other end of one WebSocket, and how fast they may talk: sans I/O.

``Caller`` is fixed when the socket opens: the source address (the peer, or
what ``X-Forwarded-For`` says when the peer is a trusted proxy) and the client
token's claims. ``MessageGate`` is the socket's ``WS_MESSAGE_RATE``: a message
over the rate is dropped with one ``rate_limited`` error, and a socket that
keeps going after a whole burst's worth of refusals in a row is closed.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

from services.common.access import Network
from services.common.rates import Rate, TokenBucket
from services.signaling.tokens import LEEWAY, Claims


@dataclass(frozen=True)
class Caller:
    source: str = ""
    "The address calls are counted against."
    claims: Claims | None = None
    "The client token's claims; None when tokens are off."
    token_deadline: float | None = None
    "Loop time after which the token (and ``LEEWAY``) has expired: no new call then."

    @property
    def identity(self) -> str | None:
        return self.claims.sub if self.claims is not None else None

    def token_expired(self, now: float) -> bool:
        return self.token_deadline is not None and now > self.token_deadline


def token_deadline(claims: Claims, wall_now: float, loop_now: float) -> float:
    """``claims``' expiry (plus leeway) on the loop's clock."""
    return loop_now + (claims.expires_at + LEEWAY - wall_now)


def source_address(
    peer: str | None, forwarded_for: str | None, trusted: tuple[Network, ...]
) -> str:
    """The client's address: the peer, or from ``X-Forwarded-For`` when the peer is a
    trusted proxy (read right to left, skipping trusted proxies)."""
    address = peer or ""
    if not forwarded_for or not _trusted(address, trusted):
        return address
    for hop in reversed([part.strip() for part in forwarded_for.split(",")]):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return address  # a malformed chain: believe only the peer
        address = hop
        if not _trusted(hop, trusted):
            break
    return address


def _trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


class Gate(enum.Enum):
    PASS = "pass"
    REFUSE = "refuse"
    "Drop the message and say ``rate_limited``."
    DROP = "drop"
    "Drop it silently (already said)."
    CLOSE = "close"
    "Close the socket: it keeps flooding."


class MessageGate:
    """``WS_MESSAGE_RATE`` of one socket."""

    def __init__(self, rate: Rate | None) -> None:
        self._rate = rate
        self._bucket = TokenBucket.full(rate, 0.0) if rate is not None else None
        self._refused = 0
        self._told = False

    def check(self, now: float) -> Gate:
        if self._rate is None or self._bucket is None:
            return Gate.PASS
        if self._bucket.take(self._rate, now):
            # Refusals count while they follow each other: a socket open all day
            # that goes over the rate now and then is never closed for it.
            self._told = False
            self._refused = 0
            return Gate.PASS
        self._refused += 1
        if self._refused > self._rate.count:
            return Gate.CLOSE
        if self._told:
            return Gate.DROP
        self._told = True
        return Gate.REFUSE
