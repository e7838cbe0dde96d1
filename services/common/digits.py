"""Numbers read off the wire: ASCII digits only. Pure.

``str.isdigit()`` also accepts digits such as ``²`` that ``int()`` refuses,
so a check with it lets a hostile value through to a ``ValueError``.
"""

from __future__ import annotations

import re

_DIGITS = re.compile(r"[0-9]{1,10}")


def is_number(text: str) -> bool:
    """Whether ``text`` is 1 to 10 ASCII digits."""
    return _DIGITS.fullmatch(text) is not None


def number(text: str) -> int | None:
    """``text`` as an int when it is 1 to 10 ASCII digits; None otherwise."""
    return int(text) if _DIGITS.fullmatch(text) else None
