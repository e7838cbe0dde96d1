"""What every settings module shares: ``SettingsError``, ``.env`` parsing, typed readers. Pure.

Each reader names the setting in its error, so the process can print one
line and exit non-zero. A secret may come from a file (``<NAME>_FILE``, a
mounted Secret).
"""

from __future__ import annotations

from collections.abc import Mapping

from services.common import env_values
from services.common.provider_fields import read_secret_file


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names it."""


def parse_dotenv(text: str) -> dict[str, str]:
    """Parse ``KEY=value`` lines; ``#`` comments, ``export`` and quotes allowed."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise SettingsError(f".env line {number}: expected KEY=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        else:
            # An unquoted value ends at an inline comment.
            value = value.split(" #", 1)[0].rstrip()
        values[key] = value
    return values


def whole(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    """A whole number from ``lo`` to ``hi``; ``default`` when unset."""
    return env_values.whole(env, name, default, lo, hi, SettingsError)


def seconds(env: Mapping[str, str], name: str, default: float, hi: float = 3600) -> float:
    """A positive number of seconds up to ``hi``; ``default`` when unset."""
    return env_values.seconds(env, name, default, hi, SettingsError)


def boolean(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    return env_values.boolean(env, name, default, SettingsError)


def host(env: Mapping[str, str], name: str, default: str) -> str:
    """A host name or IP address; ``default`` when unset."""
    value = env.get(name, "").strip() or default
    if any(c.isspace() for c in value) or "/" in value or "@" in value:
        raise SettingsError(f"{name} must be a host name or IP address, got {value!r}")
    return value


def secret(env: Mapping[str, str], name: str) -> str:
    """``name``, or the content of the file ``<name>_FILE`` names (a mounted Secret)."""
    path = env.get(f"{name}_FILE", "").strip()
    if not path:
        return env.get(name, "")
    if env.get(name, ""):
        raise SettingsError(f"set {name} or {name}_FILE, not both")
    try:
        return read_secret_file(path)
    except (OSError, UnicodeDecodeError):
        raise SettingsError(f"{name}_FILE {path} is not a readable text file") from None
