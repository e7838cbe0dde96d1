"""Fuzz of the dial plan (``services.common.dialplan``).

Properties: on any text ``normalize`` returns or raises ``DestinationError``,
``parse_pattern`` returns or raises ``ValueError``, ``denied_by`` and
``allowed_by`` never raise; ``normalize`` is idempotent on its output. For a
random E.164 number every spelling people or attackers use (separators
anywhere, ``00``/``011``/``%2B``/``%252B``/full-width for ``+``, full-width
digits, invisible characters, ``tel:`` and ``sip:…;user=phone``) normalizes
to the number itself, and a deny prefix of the number denies every spelling,
the one without ``+`` included.
"""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from services.common.dialplan import (
    MAX_LOCAL_DIGITS,
    DestinationError,
    National,
    Pattern,
    allowed_by,
    denied_by,
    is_number,
    normalize,
    parse_pattern,
)
from tests.unit.fuzz.support import any_text, fuzz, mutate_text

SEPARATORS = (
    " ",
    "  ",
    "-",
    ".",
    "(",
    ")",
    "[",
    "]",
    "/",
    "\t",
    "\u00a0",  # no-break space
    "\u2009",  # thin space
    "\u3000",  # ideographic space
    "\u2010",  # hyphen
    "\u2011",  # non-breaking hyphen
    "\u2013",  # en dash
    "\u2014",  # em dash
    "\uff0d",  # full-width hyphen-minus
    "\u200b",  # zero-width space
    "\u200c",  # zero-width non-joiner
    "\u2060",  # word joiner
    "\u200e",  # left-to-right mark
    "\u202e",  # right-to-left override
    "\ufeff",  # byte order mark
)
PLUS_FORMS = ("+", "00", "011", "%2B", "%2b", "%252B", "\uff0b", "\ufe62")
"Spellings of ``+`` (the last two: full-width and small plus, NFKC makes them +)."


def e164() -> st.SearchStrategy[str]:
    """``+``, a non-zero digit, then 7 to 14 digits (8 to 15 in all)."""
    return st.builds(
        lambda first, rest: f"+{first}{rest}",
        st.sampled_from("123456789"),
        st.text(st.sampled_from("0123456789"), min_size=7, max_size=14),
    )


@st.composite
def spellings(draw: st.DrawFn, number: str, *, plus: bool = True, uri: bool = True) -> str:
    """``number`` (``+`` and digits) as someone might type or smuggle it; ``uri``: in a
    ``tel:`` or ``sip:`` URI too."""
    units = [draw(st.sampled_from(PLUS_FORMS))] if plus else []
    for digit in number[1:]:
        if draw(st.integers(0, 3)) == 0:
            digit = chr(0xFF10 + int(digit))  # full-width digit
        units.append(digit)
    out = []
    for unit in units:
        if draw(st.integers(0, 2)) == 0:
            out.append(draw(st.sampled_from(SEPARATORS)))
        out.append(unit)
    if draw(st.booleans()):
        out.append(draw(st.sampled_from(SEPARATORS)))
    text = "".join(out)
    if not uri:
        return text
    wrapper = draw(
        st.sampled_from(
            (
                "{}",
                " {} ",
                "tel:{}",
                "TEL:{}",
                "tel:{};phone-context=example.com",
                "sip:{}@trunk.example.com;user=phone",
                "SIP:{}@trunk.example.com;user=phone",
                "sips:{}@198.51.100.7:5061;user=phone",
                "sip:{};isub=1@host",
            )
        )
    )
    return wrapper.format(text)


def any_destination() -> st.SearchStrategy[str]:
    mutated = st.builds(
        lambda data, base: mutate_text(data, base),
        st.data(),
        st.sampled_from(("+15551234567", "support", "*97", "tel:+44 20 7946 0000", "00 1 555")),
    )
    return st.one_of(any_text(60), mutated, e164())


# --- no exception but the documented one; idempotence -----------------------------------------


def compact(spelled: str) -> str:
    """The digits of a bare spelling (what normalize sees once separators are gone)."""
    return "".join(c for c in unicodedata.normalize("NFKC", spelled) if c.isdigit())


NATIONALS = (None, National("1", "1"), National("44", "0"), National("39", ""))
"No national format (the default), and a few countries' (NANP, UK, Italy: no prefix)."


def safe_normalize(raw: str, national: National | None = None) -> str | None:
    try:
        return normalize(raw, national)
    except DestinationError:
        return None


@fuzz(300)
@given(any_destination(), st.sampled_from(NATIONALS))
@example("%25" * 30 + "2B1", None)
@example("sip:@", None)
@example("tel:", None)
@example("\u0000", None)
@example("1" * 10_000, None)
@example("0 20 7946 0000", National("44", "0"))
def test_normalize_raises_only_destination_error_and_is_idempotent(
    raw: str, national: National | None
) -> None:
    number = safe_normalize(raw, national)
    if number is None:
        return
    assert number and number == number.strip()
    assert normalize(number, national) == number
    if is_number(number) and not number.startswith("+"):
        # Digits alone are an extension; a longer number came out in E.164 or was refused.
        assert len(number) <= MAX_LOCAL_DIGITS, number


@fuzz(300)
@given(st.one_of(any_destination(), any_destination().map(lambda s: s + "*")), any_destination())
def test_patterns_raise_only_value_error_and_matching_never_raises(raw: str, dest: str) -> None:
    try:
        pattern = parse_pattern(raw)
    except ValueError:
        return
    assert isinstance(pattern, Pattern)
    number = safe_normalize(dest)
    for destination in [dest] if number is None else [dest, number]:
        denied_by([pattern], destination)
        assert allowed_by([pattern], destination) in (True, False)
    # A pattern parsed again from its own text is the same pattern.
    assert parse_pattern(str(pattern)) == pattern


# --- spellings of one number --------------------------------------------------------------------


@st.composite
def numbers_and_spellings(draw: st.DrawFn) -> tuple[str, str]:
    number = draw(e164())
    return number, draw(spellings(number))


@fuzz(300)
@given(numbers_and_spellings())
@example(("+15551234567", "+1 (555) 123-4567"))
@example(("+15551234567", "011 1 555 123 4567"))
@example(("+15551234567", "%252B15551234567"))
@example(("+442079460000", "sip:+44-20-7946-0000@trunk;user=phone"))
def test_every_spelling_normalizes_to_the_number(pair: tuple[str, str]) -> None:
    number, spelled = pair
    assert normalize(spelled) == number, spelled


@st.composite
def deny_cases(draw: st.DrawFn) -> tuple[str, int, str, National | None]:
    """(number, k, a spelling, the national format it is written for). The spelling
    is international, bare digits (no ``+``, no national format known: refused), or
    national (trunk prefix and national number, with the number's country known)."""
    number = draw(e164())
    k = draw(st.integers(1, len(number) - 1))
    how = draw(st.sampled_from(("international", "bare", "national")))
    if how == "international":
        return number, k, draw(spellings(number)), draw(st.sampled_from(NATIONALS))
    if how == "bare":
        return number, k, draw(spellings(number, plus=False)), None
    digits = number[1:]
    split = draw(st.integers(1, 3))
    country, significant = digits[:split], digits[split:]
    prefix = draw(st.sampled_from(("0", "1", "")))
    # Real national numbers: long enough not to be an extension, and not starting
    # with the trunk prefix's digit nor with 00 (international).
    if len(prefix + significant) <= MAX_LOCAL_DIGITS or significant[:1] in ("0", prefix):
        return number, k, draw(spellings(number)), None
    national = National(country, prefix)
    return number, k, draw(spellings("+" + prefix + significant, plus=False)), national


@fuzz(300)
@given(deny_cases())
@example(("+19005550100", 4, "1 900 555 0100", National("1", "1")))
@example(("+19005550100", 4, "tel:1-900-555-0100", National("1", "1")))
@example(("+19005550100", 4, "1 900 555 0100", None))
@example(("+442079460000", 3, "(020) 7946 0000", National("44", "0")))
def test_a_deny_prefix_denies_every_spelling(case: tuple[str, int, str, National | None]) -> None:
    number, k, spelled, national = case
    pattern = parse_pattern(number[: k + 1] + "*")
    try:
        destination = normalize(spelled, national)
    except DestinationError:
        # Refused outright: only a number whose country is not known may be.
        assert national is None and not spelled.lstrip().startswith(PLUS_FORMS), spelled
        return
    foreign = national is not None and not compact(spelled).startswith(national.international)
    if foreign and compact(spelled).startswith(("00", "011")):
        # Another country's international prefix ("00" in North America, "011" in
        # the UK) is a national number there, as the person dialled it.
        return
    assert destination == number, (spelled, national, destination)
    assert denied_by([pattern], destination) == pattern, (pattern, spelled, destination)
    # The exact (allow) form matches the international spelling too.
    assert allowed_by([pattern], destination)


@st.composite
def pattern_spellings(draw: st.DrawFn) -> tuple[str, str]:
    number = draw(e164())
    prefix = number[: draw(st.integers(2, len(number)))]
    spelled = draw(spellings(prefix, uri=False))  # patterns are written bare
    return prefix, spelled + draw(st.sampled_from(("*", " *", "\u200b*")))


@fuzz(300)
@given(pattern_spellings())
def test_a_deny_prefix_spelled_any_way_is_the_same_pattern(pair: tuple[str, str]) -> None:
    prefix, spelled = pair
    assert parse_pattern(spelled) == parse_pattern(prefix + "*"), spelled


# --- the reported bugs, as minimal reproducers ----------------------------------------------------


@pytest.mark.parametrize("spelled", ["00*", "011*", "00 *"])
def test_bug_deny_00_star_denies_international_numbers(spelled: str) -> None:
    pattern = parse_pattern(spelled)
    assert denied_by([pattern], normalize("0044 20 7946 0000")) is not None


def test_bug_plus_star_denies_only_international_numbers() -> None:
    # dialplan.parse_pattern's comment: "+*": every international number.
    pattern = parse_pattern("+*")
    assert denied_by([pattern], normalize("+442079460000")) is not None
    assert denied_by([pattern], normalize("1234")) is None


@pytest.mark.parametrize("raw", ["1900*\u200b", "1900*\ufeff", "1900\uff0a"])
def test_bug_prefix_star_followed_by_an_invisible_character_is_a_prefix(raw: str) -> None:
    # normalize() drops these characters; parse_pattern looks for the '*' before it does.
    pattern = parse_pattern(raw)
    assert pattern == parse_pattern("1900*")
    assert denied_by([pattern], "19005550100") is not None


def test_bug_national_number_too_long_once_international_is_refused() -> None:
    uk = National("44", "0")
    # 20 digits as written, "+44" and 19 digits once made E.164: over the limit.
    with pytest.raises(DestinationError, match="at most"):
        normalize("02" + "2" * 18, uk)


@pytest.mark.parametrize("spelled", ["0113 496 0000", "0118 496 0000"])
def test_bug_uk_national_number_starting_011_stays_in_the_uk(spelled: str) -> None:
    # Leeds (0113) and Reading (0118): '011' is only North America's international prefix.
    assert normalize(spelled, National("44", "0")).startswith("+4411")
