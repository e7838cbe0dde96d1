"""Destinations in one spelling, and the allow/deny patterns that judge them: pure code.

``normalize`` turns whatever a page sent into the one form every rule sees:
a number as E.164 (``+`` and digits) or as digits alone when it has no
international form (an extension), a name (``support``) as written. Spelling
tricks (``00``/``011`` for ``+``, spaces, dashes, dots, brackets, ``%2B``,
full-width digits, invisible characters, ``tel:`` and ``sip:`` forms) all
come out the same, so no spelling slips past a rule.

A pattern is an exact destination or a prefix ending in ``*`` (``"+1*"``),
normalized the same way. Deny patterns match numbers with or without their
``+`` (``+1900*`` also stops ``1900…``); allow patterns match the exact form.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote

INTERNATIONAL_PREFIXES = ("00", "011")
"Dialled before a country code instead of ``+`` (most of the world; North America)."
MAX_NUMBER_DIGITS = 20
MAX_NAME_LENGTH = 64

_NUMBER = re.compile(rf"\+?[0-9]{{1,{MAX_NUMBER_DIGITS}}}")
# PBX feature codes (``*97`` voicemail, ``1234#``): short, so nothing long hides
# behind a star code (``*67`` then a premium number).
_FEATURE_CODE = re.compile(r"[0-9*#]{1,8}")
MAX_FEATURE_CODE = 8
_LEADING_DIGITS = re.compile(r"[0-9]+")
_NAME = re.compile(rf"[A-Za-z][A-Za-z0-9_.\-]{{0,{MAX_NAME_LENGTH - 1}}}")
# Separators people put in numbers; Unicode spaces, dashes and invisible
# format characters (zero-width space, direction marks) are removed too.
_SEPARATORS = frozenset(" \t-.()[]/")
_SCHEMES = ("tel:", "sips:", "sip:")


MAX_LOCAL_DIGITS = 6
"""Digits a number without an international form may have (an extension). A longer
one is national format: the country it belongs to must be known (``National``), or
a rule written in E.164 could not judge it (``900…`` is ``+1900…`` on a US trunk)."""


class DestinationError(ValueError):
    """Not a number or a name the bridge dials; the message says what is allowed."""


@dataclass(frozen=True)
class National:
    """How national-format numbers become E.164 (``DIAL_COUNTRY_CODE``,
    ``DIAL_NATIONAL_PREFIX``): the trunk prefix goes, the country code comes."""

    country: str
    "Digits of the country code: ``1``, ``44``."
    prefix: str = "0"
    "The national trunk prefix dialled before an area code: ``0`` (most), ``1`` (NANP)."

    @property
    def international(self) -> tuple[str, ...]:
        """What this country dials before a country code: ``011`` in North America,
        ``00`` elsewhere (so a UK ``0113`` area code stays national)."""
        return ("011",) if self.country == "1" else ("00",)

    def e164(self, number: str) -> str:
        if self.prefix and number.startswith(self.prefix):
            number = number[len(self.prefix) :]
        return f"+{self.country}{number}"


def normalize(raw: str, national: National | None = None) -> str:
    """``raw`` as the rules see it and the trunk is dialled; ``DestinationError`` if neither
    a number nor a name, or a national-format number whose country is not known."""
    text = raw.strip()
    for _ in range(3):  # %252B is %2B is +
        decoded = unquote(text)
        if decoded == text:
            break
        text = decoded
    text = unicodedata.normalize("NFKC", text).strip()
    lowered = text.lower()
    for scheme in _SCHEMES:
        if lowered.startswith(scheme):
            text = text[len(scheme) :]
            if scheme != "tel:":
                text = text.split("@", 1)[0]
            break
    text = text.split(";", 1)[0]  # ;phone-context=…, ;user=phone
    compact = "".join(c for c in text if not _is_separator(c))
    if _NUMBER.fullmatch(compact):
        prefixes = national.international if national is not None else INTERNATIONAL_PREFIXES
        number = _international(compact, prefixes)
        if number.startswith("+") or len(number) <= MAX_LOCAL_DIGITS:
            return number
        if national is not None:
            number = national.e164(number)
            if not _NUMBER.fullmatch(number):
                raise DestinationError(f"a number has at most {MAX_NUMBER_DIGITS} digits")
            return number
        raise DestinationError(
            "write the number in international form, with + or 00 and the country code "
            "(+1 555 123 4567)"
        )
    if _FEATURE_CODE.fullmatch(compact):
        return compact
    if _NAME.fullmatch(text):
        return text
    raise DestinationError(
        f"a destination is a number (up to {MAX_NUMBER_DIGITS} digits, + or 00 for "
        f"international), a feature code (up to {MAX_FEATURE_CODE} of 0-9 * #) or a name "
        f"(a letter, then letters, digits, _ . -; up to {MAX_NAME_LENGTH})"
    )


def _is_separator(char: str) -> bool:
    return char in _SEPARATORS or unicodedata.category(char) in ("Zs", "Pd", "Cf", "Cc")


def _international(number: str, prefixes: tuple[str, ...] = INTERNATIONAL_PREFIXES) -> str:
    if number.startswith("+"):
        return number
    for prefix in prefixes:
        if number.startswith(prefix) and len(number) > len(prefix):
            return "+" + number[len(prefix) :]
    return number


def is_number(destination: str) -> bool:
    return bool(_NUMBER.fullmatch(destination))


@dataclass(frozen=True)
class Pattern:
    """One allow or deny entry: an exact destination or a prefix (``text*``)."""

    text: str
    prefix: bool

    def __str__(self) -> str:
        return self.text + ("*" if self.prefix else "")

    def matches(self, destination: str, *, loose: bool = False) -> bool:
        """Whether ``destination`` (normalized) is this entry. ``loose``: a number
        matches with or without its ``+`` (for deny lists)."""
        if self.prefix and self.text in ("", "+"):
            # "*": everything; "+*": every number in international form.
            return destination.startswith(self.text)
        if is_number(self.text):
            if not is_number(destination):
                return False
            if loose:
                return _hit(self.text.lstrip("+"), destination.lstrip("+"), self.prefix)
            return _hit(self.text, destination, self.prefix)
        return _hit(self.text.lower(), destination.lower(), self.prefix)


def _hit(text: str, destination: str, prefix: bool) -> bool:
    return destination.startswith(text) if prefix else destination == text


def parse_pattern(raw: str) -> Pattern:
    """``"+1*"``, ``"+44 20 *"``, ``"support"``; ``ValueError`` naming the entry if neither."""
    # The same cleaning as a destination's, before the trailing * is looked for:
    # "1900＊" or "1900*<zero-width space>" must not become an exact entry.
    text = "".join(
        c for c in unicodedata.normalize("NFKC", raw) if unicodedata.category(c) != "Cf"
    ).strip()
    prefix = text.endswith("*")
    if prefix:
        text = text[:-1].strip()
    if prefix and text in ("", "+", *INTERNATIONAL_PREFIXES):
        # "*": everything; "+*" (or "00*"): every number in international form.
        return Pattern("" if text == "" else "+", True)
    try:
        return Pattern(_pattern_text(text, prefix), prefix)
    except DestinationError:
        raise ValueError(f"{raw!r} is not a number or name, with an optional trailing *") from None


def _pattern_text(text: str, prefix: bool) -> str:
    # A rule may name what a destination could not be on its own: a prefix that
    # stops early ("+", "00"), a national-format number (matched as digits).
    compact = "".join(c for c in unicodedata.normalize("NFKC", text) if not _is_separator(c))
    if _NUMBER.fullmatch(compact):
        return _international(compact)
    return normalize(text)


def parse_patterns(items: Iterable[str]) -> tuple[Pattern, ...]:
    return tuple(parse_pattern(item) for item in items)


def parse_prefixes(text: str) -> tuple[Pattern, ...]:
    """A comma-separated list of prefixes such as ``DIAL_DENY`` (a trailing ``*`` optional)."""
    items = (item.strip() for item in text.split(","))
    return parse_patterns(item if item.endswith("*") else item + "*" for item in items if item)


def denied_by(patterns: Iterable[Pattern], destination: str) -> Pattern | None:
    """The first deny entry ``destination`` matches (loosely), or None.

    A feature code is judged by its leading digits too: a trunk that takes
    ``#`` as the end of dialling dials ``118118#`` as ``118118``.
    """
    forms = [destination]
    head = _LEADING_DIGITS.match(destination)
    if head is not None and head.group() != destination:
        forms.append(head.group())
    return next((p for p in patterns for form in forms if p.matches(form, loose=True)), None)


def allowed_by(patterns: Iterable[Pattern], destination: str) -> bool:
    return any(p.matches(destination) for p in patterns)
