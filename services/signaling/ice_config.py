"""The ICE servers a browser gets in ``/config.json``: pure, no I/O, time as a parameter.

STUN entries of ``ICE_SERVERS`` go to anyone. Entries that carry a credential,
the static ``ICE_USERNAME``/``ICE_CREDENTIAL`` pair and the short-lived TURN
credentials of ``TURN_SECRET``, are worth protecting: where client tokens are
required they go only to a request carrying a valid token.

Short-lived credentials follow the TURN REST API scheme that coturn checks with
``use-auth-secret``/``static-auth-secret``: the username is
``<expiry unix time>:<identity>`` and the credential is
base64(HMAC-SHA1(secret, username)). The server recomputes the HMAC, so nothing
is shared with it but the secret, and a credential dies at its expiry.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Any

from services.common.settings import Settings

ANONYMOUS = "anonymous"
"The identity in TURN usernames when client tokens are off."
_PLAIN_IDENTITY = re.compile(r"[A-Za-z0-9._@+=-]{1,64}")
"An identity put in a TURN username as it is; any other is replaced by a digest."


@dataclass(frozen=True)
class TurnCredential:
    username: str
    credential: str
    expires_at: int
    "Unix time after which the TURN server refuses the credential."


def turn_credential(secret: str, identity: str, now: float, ttl: int) -> TurnCredential:
    """A TURN REST credential for ``identity`` valid ``ttl`` seconds from ``now``."""
    expires_at = int(now) + ttl
    username = f"{expires_at}:{username_identity(identity)}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return TurnCredential(username, base64.b64encode(digest).decode("ascii"), expires_at)


def username_identity(identity: str) -> str:
    """``identity`` as it may appear in a STUN USERNAME: kept when short and plain,
    else a digest of it (the TURN server logs usernames; a digest still tells
    one identity's allocations from another's)."""
    if _PLAIN_IDENTITY.fullmatch(identity):
        return identity
    return "sha256-" + hashlib.sha256(identity.encode()).hexdigest()[:24]


def ice_servers(
    settings: Settings, identity: str | None, now: float, *, with_credentials: bool
) -> dict[str, Any]:
    """The ``ice_servers`` (RTCIceServer dictionaries) and ``ice_transport_policy``
    of ``/config.json``, plus ``ice_expires`` when a TURN credential was minted.

    ``with_credentials`` False (tokens required, none valid): STUN only.
    """
    servers: list[dict[str, Any]] = []
    static = list(settings.ice_servers)
    stun = [url for url in static if url.startswith("stun:")]
    turn = [url for url in static if not url.startswith("stun:")]
    if stun:
        servers.append({"urls": stun})
    if turn and with_credentials:
        entry: dict[str, Any] = {"urls": turn}
        if settings.ice_username or settings.ice_credential:
            entry["username"] = settings.ice_username
            entry["credential"] = settings.ice_credential
        servers.append(entry)
    config: dict[str, Any] = {
        "ice_servers": servers,
        "ice_transport_policy": settings.ice_transport_policy,
    }
    if settings.turn_secret and settings.turn_urls and with_credentials:
        minted = turn_credential(
            settings.turn_secret, identity or ANONYMOUS, now, settings.turn_ttl
        )
        servers.append(
            {
                "urls": list(settings.turn_urls),
                "username": minted.username,
                "credential": minted.credential,
            }
        )
        config["ice_expires"] = minted.expires_at
    return config
