"""How a process proves who it is to NATS: ``nats.connect`` keyword arguments from Settings.

Every connection of the bridge (``Bus.connect``, the readiness probe of
``bridge up``, ``bridge registrations``) takes its credentials and TLS from
here, so they all behave alike:

- ``NATS_CREDS``: a credentials file (user JWT and NKey seed, decentralised auth);
- ``NATS_USER`` with ``NATS_PASSWORD`` (or ``NATS_PASSWORD_FILE``);
- ``NATS_TLS_CA``: the CAs that sign the server's certificate (else the system's);
  ``NATS_TLS_CERT``/``NATS_TLS_KEY``: a client certificate (mutual TLS). TLS is
  used when the server asks for it (its ``tls`` block) or the URL is ``tls://``.

Nothing here logs or formats a password; ``describe`` names the identity only.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from nats.errors import AuthorizationError

from services.common import nats_access
from services.common.settings import Settings, SettingsError, nats_urls

EMBEDDED_DIR = "nats-auth"
"Where ``bridge up`` keeps its NATS server's config and passwords, under DATA_DIR."

_LOOPBACK = ("127.0.0.1", "localhost", "::1")

ConnectOptions = Mapping[str, Any]
"Keyword arguments of ``nats.connect``: credentials and TLS."


def refused(exc: BaseException) -> bool:
    """Whether ``exc`` is a server refusing the credentials (or their absence)."""
    return isinstance(exc, AuthorizationError) or "authorization violation" in str(exc).lower()


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """A client TLS context when NATS_TLS_CA or a client certificate is set, else None."""
    if not (settings.nats_tls_ca or settings.nats_tls_cert):
        return None
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=settings.nats_tls_ca or None
        )
    except (OSError, ssl.SSLError):
        raise SettingsError(f"NATS_TLS_CA {settings.nats_tls_ca} holds no usable PEM CA") from None
    if settings.nats_tls_cert:
        try:
            context.load_cert_chain(settings.nats_tls_cert, settings.nats_tls_key)
        except (OSError, ssl.SSLError):
            raise SettingsError(
                f"NATS_TLS_CERT {settings.nats_tls_cert} and NATS_TLS_KEY "
                f"{settings.nats_tls_key} are not a matching PEM certificate and key"
            ) from None
    return context


def connect_options(settings: Settings) -> dict[str, Any]:
    """``nats.connect`` keyword arguments for the credentials and TLS of ``settings``."""
    options: dict[str, Any] = {}
    if settings.nats_creds:
        options["user_credentials"] = settings.nats_creds
    if settings.nats_user:
        options["user"] = settings.nats_user
        options["password"] = settings.nats_password
    context = tls_context(settings)
    if context is not None:
        options["tls"] = context
    return options


def describe(settings: Settings) -> str:
    """Who this process is to NATS, for messages: never a secret."""
    if settings.nats_creds:
        return f"credentials file NATS_CREDS={settings.nats_creds}"
    if settings.nats_user:
        return f"NATS_USER={settings.nats_user}"
    return "no credentials (set NATS_USER and NATS_PASSWORD, or NATS_CREDS)"


def has_credentials(settings: Settings) -> bool:
    return bool(settings.nats_creds or settings.nats_user)


def embedded_admin(settings: Settings) -> dict[str, Any] | None:
    """The ``admin`` user of a ``bridge up`` on this machine, for the operator's commands.

    Only when no credentials are set and every NATS_URL server is on loopback:
    the password ``bridge up`` wrote under DATA_DIR never goes anywhere else.
    """
    if has_credentials(settings):
        return None
    if any(urlsplit(url).hostname not in _LOOPBACK for url in nats_urls(settings.nats_url)):
        return None
    path = nats_access.password_file(Path(settings.data_dir) / EMBEDDED_DIR, nats_access.ADMIN)
    try:
        password = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return {"user": nats_access.ADMIN, "password": password} if password else None
