"""How a service reaches the bus: ``NATS_URL``, credentials, TLS. Pure.

``NATS_URL`` (one URL, or a cluster's separated by commas), ``NATS_CREDS``
(a credentials file), ``NATS_USER``/``NATS_PASSWORD`` (or
``NATS_PASSWORD_FILE``) and ``NATS_TLS_CA``/``NATS_TLS_CERT``/``NATS_TLS_KEY``;
``redact_url`` keeps a URL's password out of messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.common.setting_readers import SettingsError, secret

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


@dataclass(frozen=True)
class NatsSettings:
    """The NATS settings, checked."""

    url: str = DEFAULT_NATS_URL
    creds: str = ""
    user: str = ""
    password: str = field(default="", repr=False)
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""


def load_nats_url(env: Mapping[str, str]) -> str:
    """NATS_URL, checked."""
    nats_url = env.get("NATS_URL", "").strip() or DEFAULT_NATS_URL
    for url in nats_urls(nats_url):
        if not url.startswith(("nats://", "tls://", "ws://", "wss://")):
            raise SettingsError(f"NATS_URL must be nats:// URLs (comma-separated), got {url!r}")
    return nats_url


def load_nats(env: Mapping[str, str], nats_url: str) -> NatsSettings:
    """The credentials and TLS files of ``NATS_URL`` (``load_nats_url``)."""
    nats_tls = {}
    for name in ("NATS_CREDS", "NATS_TLS_CA", "NATS_TLS_CERT", "NATS_TLS_KEY"):
        path = env.get(name, "").strip()
        if path and not Path(path).is_file():
            raise SettingsError(f"{name} {path} is not a readable file")
        nats_tls[name] = path
    if bool(nats_tls["NATS_TLS_CERT"]) != bool(nats_tls["NATS_TLS_KEY"]):
        raise SettingsError("NATS_TLS_CERT and NATS_TLS_KEY go together: set both or neither")
    nats_user = env.get("NATS_USER", "").strip()
    nats_password = secret(env, "NATS_PASSWORD")
    if nats_password and not nats_user:
        raise SettingsError("NATS_USER is required when NATS_PASSWORD is set")
    return NatsSettings(
        url=nats_url,
        creds=nats_tls["NATS_CREDS"],
        user=nats_user,
        password=nats_password,
        tls_ca=nats_tls["NATS_TLS_CA"],
        tls_cert=nats_tls["NATS_TLS_CERT"],
        tls_key=nats_tls["NATS_TLS_KEY"],
    )


def nats_urls(nats_url: str) -> list[str]:
    """The servers of ``NATS_URL``: one URL, or several separated by commas (a cluster)."""
    return [url.strip() for url in nats_url.split(",") if url.strip()] or [nats_url]


def redact_url(url: str) -> str:
    """``url`` without the user and password it may carry, for messages and logs."""
    if "," in url:
        return ",".join(redact_url(part) for part in url.split(","))
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    return f"{scheme}://***@{rest.split('@', 1)[1]}"
