"""Who may talk SIP to the agent, and how fast: sans I/O, fed the time.

Toll fraud starts with a scanner: OPTIONS to find a SIP agent, REGISTER to
guess passwords, INVITE to place calls on someone else's trunk. The SIP agent
places calls and takes none, so a request has no business coming from
anywhere but a trunk it talks to, unless it belongs to one of its dialogs (a
BYE from another server of the trunk, after Record-Route).

``SourceGuard`` makes three decisions, each on plain values:

- ``rate(ip, now)``, on every message before it is parsed: a token bucket per
  source address, ``SIP_SOURCE_RATE`` (burst and refill) for unknown sources,
  ``KNOWN_FACTOR`` times that for known ones (a busy trunk sends many
  responses). Over it: ``LIMITED``, the message is dropped unread.
- ``source(ip, in_dialog)``, on a parsed request: ``PASS`` from a known
  address or within one of the agent's dialogs, else ``REJECT`` (answer 403)
  or ``DROP`` (say nothing), per ``SIP_UNKNOWN_SOURCES``. Responses are not
  filtered: they only match the agent's own transactions.
- ``report(ip, now)``, on a refusal: whether it deserves a log line, at most
  one per source per ``LOG_INTERVAL`` and ``LOG_LINES`` in all per interval.

Known addresses are the configured trunks' and outbound proxies' IP literals
(``SourceGuard(known=...)``, kept for good) and those their names resolved
to (``allow``, the oldest forgotten past ``MAX_KNOWN``). The buckets of
unknown sources are a table of at most ``MAX_SOURCES`` entries: an entry is
forgotten once its bucket is full again and it has not been logged within
``LOG_INTERVAL`` (forgetting it then changes no decision); when the table is
full of sources still sending, a new source is ``LIMITED`` until some go
quiet. Memory stays flat whatever the number of addresses a scan comes from.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from services.common.rates import PER_SECOND_50, Rate, TokenBucket

KNOWN_FACTOR = 10
"A known trunk's allowance, in multiples of ``SIP_SOURCE_RATE`` (burst and refill)."
MAX_SOURCES = 10_000
"Unknown source addresses whose buckets are kept at most."
MAX_KNOWN = 1_024
"Resolved trunk addresses kept at most (configured IP literals come on top)."
SWEEP_INTERVAL = 1.0
"Seconds between two scans of the table for sources gone quiet."
LOG_INTERVAL = 60.0
"Seconds between two log lines about one source."
LOG_LINES = 20
"Log lines about refusals per ``LOG_INTERVAL``, all sources together."
_LOG_RATE = Rate(LOG_LINES, LOG_INTERVAL)
SILENT = -1
"``report``: no line for this refusal."
OVER_BUDGET = -2
"``report``: no line for this refusal, nor for other sources for a while: say so once."

MODES = ("reject", "drop")


class Verdict(Enum):
    PASS = "pass"
    "Handle the message."
    REJECT = "reject"
    "A request from an unknown source: answer 403 Forbidden."
    DROP = "drop"
    "A request from an unknown source: say nothing."
    LIMITED = "limited"
    "Over the source's rate (or no room left for a new source): dropped unread."


@dataclass
class _Source(TokenBucket):
    """One source's bucket, and what was logged about it."""

    logged: float = -math.inf
    "When a line about it was last logged."
    unlogged: int = 0
    "Refusals since that line."


def normalize(ip: str) -> str | None:
    """``ip`` as the transports report a sender (compressed IPv6); None if not an address."""
    try:
        return str(ipaddress.ip_address(ip.strip("[]")))
    except ValueError:
        return None


class SourceGuard:
    """The per-source decisions of one SIP agent (see the module)."""

    def __init__(
        self,
        known: Iterable[str] = (),
        mode: str = "reject",
        rate: Rate | None = PER_SECOND_50,
        *,
        max_sources: int = MAX_SOURCES,
        max_known: int = MAX_KNOWN,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be reject or drop, got {mode!r}")
        self.mode = mode
        self._refusal = Verdict.REJECT if mode == "reject" else Verdict.DROP
        self._rate = rate
        self._known_rate = (
            Rate(rate.count * KNOWN_FACTOR, rate.period) if rate is not None else None
        )
        self._idle = rate.period if rate is not None else 0.0
        "Seconds after which an unused bucket is full again."
        self._max_sources = max_sources
        self._max_known = max_known
        self._known: dict[str, _Source] = {}
        "Known addresses (their buckets), configured ones first, then in the order allowed."
        self._static: set[str] = set()
        self._sources: dict[str, _Source] = {}
        "Unknown addresses seen lately."
        self._next_sweep = -math.inf
        self._overflow = _Source(0.0, -math.inf)
        "What is logged about new sources refused for want of room."
        self._log_budget = TokenBucket(float(LOG_LINES), -math.inf)
        "Log lines left, all sources together."
        self._over_budget = -math.inf
        "When ``OVER_BUDGET`` was last returned."
        for ip in known:
            self.allow(ip, pinned=True)

    # --- what is known ---------------------------------------------------------------

    def allow(self, ip: str, *, pinned: bool = False) -> None:
        """Take ``ip`` (an address a trunk name resolved to) as a known source.

        ``pinned``: a configured address, never forgotten. Anything but an IP
        address is ignored. IPv4 addresses are also taken in their IPv6-mapped
        form, as a dual-stack socket reports them.
        """
        address = normalize(ip)
        if address is None:
            return
        forms = [address]
        parsed = ipaddress.ip_address(address)
        if isinstance(parsed, ipaddress.IPv4Address):
            forms.append(f"::ffff:{address}")
        elif parsed.ipv4_mapped is not None:
            forms.append(str(parsed.ipv4_mapped))
        for form in forms:
            if pinned:
                self._static.add(form)
            if form in self._known:
                continue
            entry = self._sources.pop(form, None)
            if entry is None:
                count = self._known_rate.count if self._known_rate is not None else 0
                entry = _Source(float(count), -math.inf)
            self._known[form] = entry
        while len(self._known) - len(self._static) > self._max_known:
            oldest = next(ip for ip in self._known if ip not in self._static)
            del self._known[oldest]

    def known(self, ip: str) -> bool:
        return ip in self._known

    def tracked(self, ip: str) -> bool:
        """Whether ``ip``, unknown, has a bucket in the table now."""
        return ip in self._sources

    @property
    def sources(self) -> int:
        """Unknown sources whose buckets are kept now."""
        return len(self._sources)

    @property
    def known_count(self) -> int:
        return len(self._known)

    # --- decisions -------------------------------------------------------------------

    def rate(self, ip: str, now: float) -> Verdict:
        """``PASS`` or ``LIMITED``: one message from ``ip``, before it is parsed."""
        if self._rate is None:
            return Verdict.PASS
        entry = self._known.get(ip)
        if entry is not None:
            assert self._known_rate is not None
            return Verdict.PASS if entry.take(self._known_rate, now) else Verdict.LIMITED
        entry = self._sources.get(ip)
        if entry is None:
            entry = self._admit(ip, now)
            if entry is None:
                return Verdict.LIMITED
        return Verdict.PASS if entry.take(self._rate, now) else Verdict.LIMITED

    def source(self, ip: str, in_dialog: bool) -> Verdict:
        """``PASS``, ``REJECT`` or ``DROP``: a parsed request from ``ip``.

        ``in_dialog``: its Call-ID is one of the agent's calls, whoever sends it.
        """
        if in_dialog or ip in self._known:
            return Verdict.PASS
        return self._refusal

    def check(self, ip: str, now: float, in_dialog: bool) -> Verdict:
        """``rate`` then ``source``: the whole decision on a request."""
        verdict = self.rate(ip, now)
        if verdict is not Verdict.PASS:
            return verdict
        return self.source(ip, in_dialog)

    def report(self, ip: str, now: float) -> int:
        """A refusal from ``ip``: the refusals of ``ip`` not logged since the last line
        about it (or about new sources refused for want of room) when this one is to be
        logged; else ``SILENT``, or ``OVER_BUDGET`` once per ``LOG_INTERVAL`` when lines
        about several sources were due but ``LOG_LINES`` were logged already."""
        entry = self._known.get(ip) or self._sources.get(ip)
        if entry is None:
            entry = self._admit(ip, now) or self._overflow
        entry.unlogged += 1
        if now - entry.logged < LOG_INTERVAL:
            return SILENT
        if not self._log_budget.take(_LOG_RATE, now):
            if now - self._over_budget < LOG_INTERVAL:
                return SILENT
            self._over_budget = now
            return OVER_BUDGET
        entry.logged = now
        unlogged, entry.unlogged = entry.unlogged - 1, 0
        return unlogged

    @property
    def full(self) -> bool:
        """No room for another unknown source (until some go quiet)."""
        return len(self._sources) >= self._max_sources

    # --- the table -------------------------------------------------------------------

    def _admit(self, ip: str, now: float) -> _Source | None:
        """A new entry for ``ip``, or None when the table is full of active sources."""
        sources = self._sources
        if now >= self._next_sweep:
            self._sweep(now)
        if len(sources) >= self._max_sources:
            return None
        count = self._rate.count if self._rate is not None else 0
        entry = _Source(float(count), now)
        sources[ip] = entry
        return entry

    def _sweep(self, now: float) -> None:
        """Forget the sources whose bucket is full again and that were not logged lately."""
        self._next_sweep = now + SWEEP_INTERVAL
        idle, quiet = now - self._idle, now - LOG_INTERVAL
        stale = [ip for ip, e in self._sources.items() if e.at <= idle and e.logged <= quiet]
        for ip in stale:
            del self._sources[ip]
