"""The source guard's decisions on a fake clock: who may send, how fast, what is logged."""

from __future__ import annotations

import pytest

from services.common.rates import Rate
from services.sipagent.source_guard import (
    KNOWN_FACTOR,
    LOG_INTERVAL,
    LOG_LINES,
    MAX_SOURCES,
    OVER_BUDGET,
    SILENT,
    SourceGuard,
    Verdict,
)

TRUNK = "203.0.113.10"
SCANNER = "198.51.100.66"
RATE = Rate(50, 1.0)


def guard(mode: str = "reject", rate: Rate | None = RATE, **limits: int) -> SourceGuard:
    return SourceGuard({TRUNK}, mode, rate, **limits)


def test_known_sources_pass_and_unknown_ones_are_refused_per_mode() -> None:
    assert guard().check(TRUNK, 0.0, in_dialog=False) is Verdict.PASS
    assert guard().check(SCANNER, 0.0, in_dialog=False) is Verdict.REJECT
    assert guard("drop").check(SCANNER, 0.0, in_dialog=False) is Verdict.DROP
    with pytest.raises(ValueError):
        SourceGuard(set(), "ignore")


def test_a_request_of_a_dialog_passes_from_any_address() -> None:
    # A BYE from another server of the trunk, after Record-Route.
    for mode in ("reject", "drop"):
        assert guard(mode).check(SCANNER, 0.0, in_dialog=True) is Verdict.PASS


def test_resolved_addresses_become_known_in_every_form() -> None:
    g = guard()
    g.allow("192.0.2.7")
    assert g.source("192.0.2.7", False) is Verdict.PASS
    assert g.known("::ffff:192.0.2.7")  # as a dual-stack socket reports it
    g.allow("[2001:DB8:0::1]")
    assert g.known("2001:db8::1")
    g.allow("::ffff:192.0.2.8")
    assert g.known("192.0.2.8")
    count = g.known_count
    g.allow("sip.example.com")  # a name is not an address
    g.allow("")
    assert g.known_count == count


def test_an_unknown_source_gets_its_burst_then_its_rate() -> None:
    g = guard()
    verdicts = [g.rate(SCANNER, 10.0) for _ in range(200)]
    assert verdicts[:50] == [Verdict.PASS] * 50
    assert set(verdicts[50:]) == {Verdict.LIMITED}
    # 0.1 s later, 5 tokens are back; a second later, the whole burst.
    assert [g.rate(SCANNER, 10.1) for _ in range(10)].count(Verdict.PASS) == 5
    assert [g.rate(SCANNER, 11.2) for _ in range(100)].count(Verdict.PASS) == 50
    # Another source has its own bucket.
    assert g.rate("198.51.100.67", 11.2) is Verdict.PASS


def test_known_trunks_get_a_larger_allowance() -> None:
    g = guard()
    verdicts = [g.check(TRUNK, 0.0, in_dialog=False) for _ in range(RATE.count * KNOWN_FACTOR + 5)]
    assert verdicts.count(Verdict.PASS) == RATE.count * KNOWN_FACTOR
    assert verdicts[-1] is Verdict.LIMITED
    # An unknown source allowed later (a trunk name resolved) gets the larger one too.
    g.rate("192.0.2.7", 0.0)
    g.allow("192.0.2.7")
    assert [g.rate("192.0.2.7", 5.0) for _ in range(600)].count(Verdict.PASS) == 500


def test_no_rate_means_no_limit_but_the_source_still_counts() -> None:
    g = guard(rate=None)
    assert all(g.rate(SCANNER, 0.0) is Verdict.PASS for _ in range(10_000))
    assert g.check(SCANNER, 0.0, in_dialog=False) is Verdict.REJECT
    assert g.sources == 0


def test_the_table_stays_bounded_under_a_scan_from_many_addresses() -> None:
    g = guard()
    now = 0.0
    refused = 0
    largest = 0
    for i in range(60_000):
        now += 0.00005  # 20,000 new addresses a second, each sending once
        verdict = g.check(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", now, in_dialog=False)
        refused += verdict is Verdict.LIMITED
        largest = max(largest, g.sources)
        if i % 1000 == 0:
            g.report(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", now)
    assert largest <= MAX_SOURCES
    assert refused > 0  # beyond the table, new sources wait for room
    # The trunk is not in that table: it is never crowded out.
    assert g.check(TRUNK, now, in_dialog=False) is Verdict.PASS
    # Once the scan is over the sources are forgotten (those logged a minute later).
    g.rate(SCANNER, now + 2.0)
    assert g.sources <= LOG_LINES + 1
    g.rate("198.51.100.67", now + 2.0 + LOG_INTERVAL)
    assert g.sources == 1


def test_a_full_table_refuses_new_sources_until_some_go_quiet() -> None:
    g = guard(max_sources=100)
    for i in range(100):
        assert g.rate(f"10.0.0.{i}", 0.0) is Verdict.PASS
    assert g.full
    assert g.rate("10.0.1.1", 0.5) is Verdict.LIMITED
    assert not g.tracked("10.0.1.1")
    # A second later every bucket is full again: forgetting them changes nothing.
    assert g.rate("10.0.1.1", 2.0) is Verdict.PASS
    assert g.sources == 1


def test_a_busy_source_keeps_its_bucket_while_others_come_and_go() -> None:
    g = guard(max_sources=50)
    passed = 0
    now = 0.0
    for step in range(1000):  # 5 s: the scanner at 200/s, a new address every step
        now = step * 0.005
        passed += g.rate(SCANNER, now) is Verdict.PASS
        g.rate(f"10.1.{step >> 8}.{step & 255}", now)
    # Its burst and 50/s, not a fresh burst each time the table is swept.
    assert passed <= RATE.count + RATE.count * now + 1
    assert g.tracked(SCANNER)


def test_one_log_line_per_source_per_minute() -> None:
    g = guard()
    reports = [g.report(SCANNER, i * 0.01) for i in range(1000)]  # 10 s of refusals
    assert reports[0] == 0
    assert reports[1:] == [SILENT] * 999
    # A minute after the first line: the next one, with how many were not logged.
    assert g.report(SCANNER, LOG_INTERVAL) == 999
    assert g.report(SCANNER, LOG_INTERVAL + 1) == SILENT


def test_log_lines_are_bounded_whatever_the_number_of_sources() -> None:
    g = guard()
    lines = [g.report(f"10.2.{i >> 8}.{i & 255}", 0.0) for i in range(1000)]
    assert sum(line >= 0 for line in lines) == LOG_LINES
    # Past the budget, one word that lines are missing, then silence for a minute.
    assert lines[LOG_LINES] == OVER_BUDGET
    assert lines[LOG_LINES + 1 :] == [SILENT] * (1000 - LOG_LINES - 1)
    # Half a minute later, half the budget is back; the word was said already.
    later = [g.report(f"10.9.9.{i}", LOG_INTERVAL / 2) for i in range(LOG_LINES)]
    assert later == [0] * (LOG_LINES // 2) + [SILENT] * (LOG_LINES // 2)
    # New sources refused for want of room share one line a minute.
    g = guard(max_sources=10)
    for i in range(10):
        g.rate(f"10.3.0.{i}", 0.0)
    lines = [g.report(f"10.4.{i >> 8}.{i & 255}", 0.5) for i in range(500)]
    assert sum(line >= 0 for line in lines) == 1


def test_logging_without_a_rate_is_bounded_too() -> None:
    g = guard(rate=None, max_sources=100)
    assert g.report(SCANNER, 0.0) == 0
    assert g.report(SCANNER, 1.0) == SILENT
    for i in range(1000):
        g.report(f"10.5.{i >> 8}.{i & 255}", 2.0 + i * 0.01)
    assert g.sources <= 100


def test_resolved_addresses_are_bounded_and_configured_ones_stay() -> None:
    g = SourceGuard({TRUNK}, "reject", RATE, max_known=100)
    for i in range(5000):
        g.allow(f"10.6.{i >> 8}.{i & 255}")
    assert g.known(TRUNK)
    assert g.known("10.6.19.135")  # the latest
    assert not g.known("10.6.0.0")  # the oldest forgotten
    assert g.known_count <= 100 + 2
