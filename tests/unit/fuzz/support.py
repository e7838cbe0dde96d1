"""Shared pieces of the fuzz tests: settings, hostile characters and text mutations.

Every fuzz test is deterministic (``derandomize``: the same examples on every
run, no example database) and bounded by ``max_examples``, so the folder runs
in plain ``pytest`` in a few seconds. Pure random input rarely gets past a
parser's first check, so most strategies here take a *valid* input and
break it a little: a line dropped, duplicated or truncated, a field
replaced, a hostile character injected, a piece blown up.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    max_examples=200,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
    ],
)
"Parent of every fuzz test's settings (through ``fuzz()``)."

SCALE = float(os.environ.get("FUZZ_SCALE", "1"))
"Multiplies every test's examples: ``FUZZ_SCALE=50`` for a long hunt (not in ``make test``)."
RANDOM = os.environ.get("FUZZ_RANDOM", "") == "1"
"``FUZZ_RANDOM=1``: new random examples on each run instead of the same ones."


def fuzz(max_examples: int) -> settings:
    """The settings of one fuzz test: ``max_examples`` (times ``FUZZ_SCALE``), deterministic
    unless ``FUZZ_RANDOM=1``."""
    return settings(FUZZ, max_examples=max(1, round(max_examples * SCALE)), derandomize=not RANDOM)


SURROGATES = ("\ud800", "\udbff", "\udc00", "\udfff")
"Lone UTF-16 surrogates: a Python str may hold them (JSON ``\\ud800``), UTF-8 may not."

HOSTILE = (
    "\x00",
    "\r",
    "\n",
    "\r\n",
    "\t",
    "\x0b",
    "\x0c",
    "\x1c",
    "\x7f",
    "\x85",
    "\u2028",
    "\u2029",
    "\u200b",
    "\u200e",
    "\ufeff",
    "\ufffd",
    "\uffff",
    "é",
    "ß",
    "İ",
    "²",
    "٣",
    "𝟘",
    "１",
    "＋",
    "😀",
    "%00",
    "%0d%0a",
    "%2B",
    "\\",
    '"',
    "'",
    "<",
    ">",
    ",",
    ";",
    ":",
    "=",
    "/",
    "*",
    "#",
    " ",
    "  ",
    "-1",
    "0",
    "4294967296",
    "99999999999999999999999",
    "1e999",
    "NaN",
    *SURROGATES,
)
"Characters and snippets that break careless parsers: controls, line breaks, look-alikes."


def any_text(max_size: int = 200) -> st.SearchStrategy[str]:
    """Random text of every code point, lone surrogates and hostile snippets included."""
    piece = st.one_of(
        st.text(max_size=20),
        st.sampled_from(HOSTILE),
        st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=2),
        st.text(st.characters(max_codepoint=0x7F), max_size=20),
    )
    return st.lists(piece, max_size=max(1, max_size // 10)).map("".join)


def any_bytes(max_size: int = 400) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=max_size),
        any_text(max_size).map(lambda s: s.encode("utf-8", "surrogatepass")),
    )


_Mutation = Callable[[st.DataObject, list[str]], list[str]]


def _drop(data: st.DataObject, parts: list[str]) -> list[str]:
    if not parts:
        return parts
    i = data.draw(st.integers(0, len(parts) - 1))
    return parts[:i] + parts[i + 1 :]


def _duplicate(data: st.DataObject, parts: list[str]) -> list[str]:
    if not parts:
        return parts
    i = data.draw(st.integers(0, len(parts) - 1))
    j = data.draw(st.integers(0, len(parts)))
    return [*parts[:j], parts[i], *parts[j:]]


def _swap(data: st.DataObject, parts: list[str]) -> list[str]:
    if len(parts) < 2:
        return parts
    i = data.draw(st.integers(0, len(parts) - 1))
    j = data.draw(st.integers(0, len(parts) - 1))
    parts = list(parts)
    parts[i], parts[j] = parts[j], parts[i]
    return parts


def _truncate_part(data: st.DataObject, parts: list[str]) -> list[str]:
    if not parts:
        return parts
    i = data.draw(st.integers(0, len(parts) - 1))
    cut = data.draw(st.integers(0, len(parts[i])))
    return [*parts[:i], parts[i][:cut], *parts[i + 1 :]]


def _inject(data: st.DataObject, parts: list[str]) -> list[str]:
    if not parts:
        return [data.draw(st.sampled_from(HOSTILE))]
    i = data.draw(st.integers(0, len(parts) - 1))
    at = data.draw(st.integers(0, len(parts[i])))
    what = data.draw(st.one_of(st.sampled_from(HOSTILE), any_text(20)))
    part = parts[i]
    return [*parts[:i], part[:at] + what + part[at:], *parts[i + 1 :]]


def _replace_char(data: st.DataObject, parts: list[str]) -> list[str]:
    nonempty = [i for i, part in enumerate(parts) if part]
    if not nonempty:
        return parts
    i = data.draw(st.sampled_from(nonempty))
    at = data.draw(st.integers(0, len(parts[i]) - 1))
    what = data.draw(st.one_of(st.sampled_from(HOSTILE), st.characters()))
    part = parts[i]
    return [*parts[:i], part[:at] + what + part[at + 1 :], *parts[i + 1 :]]


MAX_BLOWUP = 80_000
"Characters an oversized part grows to at most (past every limit under test, but bounded)."


def _oversize(data: st.DataObject, parts: list[str]) -> list[str]:
    if not parts:
        return parts
    i = data.draw(st.integers(0, len(parts) - 1))
    part = parts[i] or "x"
    times = data.draw(st.sampled_from((2, 10, 100, 1000)))
    times = max(1, min(times, MAX_BLOWUP // len(part)))
    return [*parts[:i], part * times, *parts[i + 1 :]]


def _insert_garbage(data: st.DataObject, parts: list[str]) -> list[str]:
    at = data.draw(st.integers(0, len(parts)))
    return [*parts[:at], data.draw(any_text(60)), *parts[at:]]


MUTATIONS: tuple[_Mutation, ...] = (
    _drop,
    _duplicate,
    _swap,
    _truncate_part,
    _inject,
    _replace_char,
    _oversize,
    _insert_garbage,
)


def mutate_parts(data: st.DataObject, parts: Sequence[str], max_mutations: int = 3) -> list[str]:
    """``parts`` (lines, fields, segments) after 1 to ``max_mutations`` random mutations."""
    out = list(parts)
    for _ in range(data.draw(st.integers(1, max_mutations))):
        mutation = data.draw(st.sampled_from(MUTATIONS))
        out = mutation(data, out)
    return out


def mutate_lines(data: st.DataObject, text: str, max_mutations: int = 3) -> str:
    """``text`` with its lines mutated, then joined by CRLF, LF or a mix."""
    lines = text.replace("\r\n", "\n").split("\n")
    mutated = mutate_parts(data, lines, max_mutations)
    newline = data.draw(st.sampled_from(("\r\n", "\n", "\r", "mixed")))
    if newline != "mixed":
        return newline.join(mutated)
    ends = data.draw(st.lists(st.sampled_from(("\r\n", "\n")), min_size=len(mutated)))
    return "".join(line + end for line, end in zip(mutated, ends, strict=False))


def mutate_text(data: st.DataObject, text: str, max_mutations: int = 3) -> str:
    """``text`` with a few characters mutated (a single string, not line based)."""
    return "".join(mutate_parts(data, [text], max_mutations))


def contains_surrogate(text: str) -> bool:
    return any("\ud800" <= char <= "\udfff" for char in text)
