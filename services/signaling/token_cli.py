"""``bridge token``: mint a client token from ``CLIENT_TOKEN_SECRET``, for tests and small set-ups.

A backend that serves many users mints its own (``docs/security.md`` shows
how); this prints one token on stdout and nothing else, so it can be piped.
"""

from __future__ import annotations

import re
import sys

from services.common.settings import SettingsError, load_settings
from services.signaling.tokens import TokenError, mint

_TTL = re.compile(r"^(\d+)\s*([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> int:
    """``90``, ``90s``, ``15m``, ``1h``, ``7d`` as seconds; ``ValueError`` otherwise."""
    match = _TTL.match(text.strip().lower())
    if match is None or int(match.group(1)) == 0:
        raise ValueError(
            f"--ttl must be a positive duration such as 90s, 15m, 1h or 7d, got {text!r}"
        )
    return int(match.group(1)) * _UNITS[match.group(2)]


def main(
    sub: str,
    ttl: str,
    dst: list[str] | None,
    max_calls: int | None,
    max_duration: float | None,
) -> int:
    try:
        settings = load_settings()
        seconds = parse_ttl(ttl)
        token = mint(
            settings.access,
            sub,
            seconds,
            dst=dst,
            max_calls=max_calls,
            max_duration=max_duration,
        )
    except (SettingsError, ValueError, TokenError) as exc:
        print(f"bridge token: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0
