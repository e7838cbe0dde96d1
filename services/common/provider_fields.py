"""The pieces of a ``PROVIDERS_FILE`` entry every table shares. Pure but for reading a secret file.

``ProvidersError`` (what is wrong, naming the file and the entry), the
``fail`` callback each table's parser is given, and the readers of a string,
an array of SIP tokens, ``allow``/``deny`` destination patterns and a
password file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from services.common.custom_headers import is_token
from services.common.dialplan import Pattern, parse_patterns


class ProvidersError(ValueError):
    """The providers file is invalid; the message names the file, the entry and the problem."""


Fail = Callable[[str], ProvidersError]
"Makes the error of one entry from a problem (the entry named by whoever made it)."


def read_secret_file(path: str) -> str:
    """A secret mounted as a file (a Kubernetes Secret): its text without the final newline.

    ``OSError`` when it cannot be read; the caller names the setting, never the content.
    """
    return Path(path).read_text(encoding="utf-8").rstrip("\r\n")


def read_secret(path: str, fail: Fail) -> str:
    try:
        return read_secret_file(path)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise fail(f"password_file {path}: cannot read: {reason}") from None


def patterns_key(raw: Mapping[str, object], key: str, fail: Fail) -> tuple[Pattern, ...] | None:
    """``allow`` / ``deny``: an array of destinations or ``prefix*`` entries."""
    if key not in raw:
        return None
    value = raw[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise fail(f"{key} must be an array of strings")
    try:
        return parse_patterns(value)
    except ValueError as exc:
        raise fail(f"{key}: {exc}") from None


def str_key(raw: Mapping[str, object], key: str, fail: Fail) -> str:
    value = raw.get(key, "")
    if not isinstance(value, str):
        raise fail(f"{key} must be a string")
    return value.strip()


def tokens_key(raw: Mapping[str, object], key: str, fail: Fail) -> tuple[str, ...] | None:
    if key not in raw:
        return None
    value = raw[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise fail(f"{key} must be an array of strings")
    for name in value:
        if not is_token(name):
            raise fail(f"{key}: {name!r} is not a SIP token")
    return tuple(value)
