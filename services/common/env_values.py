"""Values of settings read from the environment: whole numbers, seconds, booleans. Pure.

Each reader takes the error class to raise, so ``settings`` and ``access``
(which ``settings`` imports) share one reading and one wording, and each
message names the setting.
"""

from __future__ import annotations

from collections.abc import Mapping

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def whole(
    env: Mapping[str, str], name: str, default: int, lo: int, hi: int, error: type[ValueError]
) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise error(f"{name} must be a whole number, got {raw!r}") from None
    if not lo <= value <= hi:
        raise error(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def seconds(
    env: Mapping[str, str], name: str, default: float, hi: float, error: type[ValueError]
) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise error(f"{name} must be a number of seconds, got {raw!r}") from None
    if not 0 < value <= hi:
        raise error(f"{name} must be between 0 and {hi:g} seconds, got {raw}")
    return value


def boolean(env: Mapping[str, str], name: str, default: bool, error: type[ValueError]) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _FALSE:
        return False
    if raw in _TRUE:
        return True
    raise error(f"{name} must be true or false, got {raw!r}")
