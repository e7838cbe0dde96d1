"""Rates written as settings (``10/min``) and the token bucket that enforces one, sans I/O.

A ``Rate`` of N per period allows a burst of N and refills at N per period;
``TokenBucket`` is the state of one key (an identity, an address, a socket),
plain numbers fed the current time, so it can live in memory or in a KV
entry shared by replicas.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PERIODS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
}
_RATE = re.compile(r"^\s*(\d{1,9})\s*/\s*([a-z]+)\s*$")


@dataclass(frozen=True)
class Rate:
    """``count`` events per ``period`` seconds; a burst of ``count`` at most."""

    count: int
    period: float

    @property
    def per_second(self) -> float:
        return self.count / self.period

    def __str__(self) -> str:
        unit = {1.0: "s", 60.0: "min", 3600.0: "h"}.get(self.period, f"{self.period:g}s")
        return f"{self.count}/{unit}"


PER_SECOND_50 = Rate(50, 1.0)
PER_MINUTE_10 = Rate(10, 60.0)
PER_MINUTE_30 = Rate(30, 60.0)


def parse_rate(text: str) -> Rate | None:
    """``10/min``, ``5/s``, ``100/h`` as a ``Rate``; ``off`` or ``0`` as None (no limit).

    Raises ``ValueError`` with a message fit for a settings error.
    """
    raw = text.strip().lower()
    if raw in ("off", "0", "none"):
        return None
    match = _RATE.match(raw)
    period = _PERIODS.get(match.group(2)) if match else None
    if match is None or period is None:
        raise ValueError(f"must be a count per s, min or h such as 10/min (or off), got {text!r}")
    count = int(match.group(1))
    if count < 1:
        raise ValueError(f"must allow at least 1 per period (or be off), got {text!r}")
    return Rate(count, period)


@dataclass
class TokenBucket:
    """One key's allowance: ``tokens`` left at time ``at`` (full when new)."""

    tokens: float
    at: float

    @classmethod
    def full(cls, rate: Rate, now: float) -> TokenBucket:
        return cls(float(rate.count), now)

    def take(self, rate: Rate, now: float, cost: float = 1.0) -> bool:
        """Refill for the time passed, then take ``cost`` if there is that much."""
        elapsed = max(0.0, now - self.at)
        self.tokens = min(float(rate.count), self.tokens + elapsed * rate.per_second)
        self.at = max(self.at, now)
        if self.tokens + 1e-9 < cost:
            return False
        self.tokens -= cost
        return True

    def retry_after(self, rate: Rate, cost: float = 1.0) -> float:
        """Seconds until ``cost`` tokens are back (0 when they are there)."""
        return max(0.0, (cost - self.tokens) / rate.per_second)
