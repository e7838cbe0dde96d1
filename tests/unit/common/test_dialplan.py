"""The dial plan's one spelling of a destination, and its allow/deny patterns."""

from __future__ import annotations

import pytest

from services.common.dialplan import (
    DestinationError,
    National,
    allowed_by,
    denied_by,
    normalize,
    parse_pattern,
    parse_prefixes,
)

LONDON = "+442079460958"
SPELLINGS = [
    "+44 20 7946 0958",
    "0044 20 7946 0958",
    "011-44-20-7946-0958",
    "%2B442079460958",
    "%252B442079460958",
    "tel:+44-20-7946-0958",
    "sip:+442079460958@trunk.example;user=phone",
    "SIP:+442079460958@trunk.example",
    "＋４４２０７９４６０９５８",
    "(+44) 20.7946.0958",
    "[+44] 20/7946/0958",
    "+44\u200b2079460958",
    "+44\u00a020\u20117946\u20110958",
    "tel:+442079460958;phone-context=+44",
]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_every_spelling_is_one_number(spelling: str) -> None:
    assert normalize(spelling) == LONDON


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("support", "support"),
        ("ai_assistant", "ai_assistant"),
        ("sip:support@pbx.example", "support"),
        ("1001", "1001"),
        ("*97", "*97"),
        ("1234#", "1234#"),
        ("  +15551234567 ", "+15551234567"),
    ],
)
def test_names_extensions_and_feature_codes(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


@pytest.mark.parametrize(
    "raw",
    ["", "a b", "bob@evil.example", "*6719005551234", "x" * 65, "+", "+1 900 555 0100 ext", "ü"],
)
def test_what_is_neither_is_refused(raw: str) -> None:
    with pytest.raises(DestinationError):
        normalize(raw)


def test_normalize_is_idempotent() -> None:
    for spelling in SPELLINGS:
        once = normalize(spelling)
        assert normalize(once) == once


def test_deny_prefix_stops_the_number_with_or_without_plus() -> None:
    deny = parse_prefixes("+1900, +1 976 ,00 882*")
    assert [str(p) for p in deny] == ["+1900*", "+1976*", "+882*"]
    assert denied_by(deny, normalize("+1 900 555 0100")) is not None
    assert denied_by(deny, "19005550100") is not None  # as the SIP agent may see it
    assert denied_by(deny, normalize("011 1 900 555 0100")) is not None
    assert denied_by(deny, normalize("+88212345678")) is not None
    assert denied_by(deny, normalize("+15551234567")) is None


def test_an_exact_deny_entry_stops_that_number_only() -> None:
    deny = [parse_pattern("+15550100")]
    assert denied_by(deny, "15550100") is not None
    assert denied_by(deny, "+155501001") is None


def test_allow_matches_the_exact_form_only() -> None:
    allow = [parse_pattern("+1*")]
    assert allowed_by(allow, normalize("+1 555 123 4567"))
    assert not allowed_by(allow, normalize("+44 20 7946 0958"))
    assert not allowed_by(allow, "15551234567")  # a national spelling is not +1
    assert allowed_by([parse_pattern("support")], "SUPPORT")
    assert not allowed_by([parse_pattern("support")], "support2")
    assert allowed_by([parse_pattern("*")], "anything")


def test_patterns_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="trailing"):
        parse_pattern("a b*")


@pytest.mark.parametrize("raw", ["19005550100", "900-555-0100", "(020) 7946 0958", "5550100"])
def test_national_format_needs_its_country(raw: str) -> None:
    with pytest.raises(DestinationError, match="international form"):
        normalize(raw)


@pytest.mark.parametrize(
    ("raw", "national", "expected"),
    [
        ("900-555-0100", National("1", "1"), "+19005550100"),
        ("1 900 555 0100", National("1", "1"), "+19005550100"),
        ("(020) 7946 0958", National("44"), "+442079460958"),
        ("06 1234 5678", National("39", ""), "+390612345678"),
        ("+33 1 23 45 67 89", National("44"), "+33123456789"),
        ("1001", National("1", "1"), "1001"),
    ],
)
def test_national_format_with_a_country(raw: str, national: National, expected: str) -> None:
    assert normalize(raw, national) == expected
