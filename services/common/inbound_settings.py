"""The ``.env`` settings of calls from the trunks: who rings, for how long, who may call in. Pure.

``INBOUND_USER`` (the identity every call from the ``.env`` trunk rings),
``INBOUND_RING_TIMEOUT``, ``SIP_INBOUND_FROM`` (networks that trunk calls
from besides its host), ``INBOUND_MAX_RINGING`` (calls one SIP agent lets
ring at once) and ``SIP_NONCE_SECRET`` (signs the digest nonces of
``inbound_auth`` challenges). ``[[inbound]]`` routes are in the providers file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from services.common.inbound_routes import (
    DEFAULT_RING_TIMEOUT,
    RING_TIMEOUT_RANGE,
    Network,
    check_identity,
    parse_inbound_from,
)
from services.common.setting_readers import SettingsError, seconds, secret, whole

MIN_NONCE_SECRET = 16
"Bytes of ``SIP_NONCE_SECRET`` at least."
DEFAULT_MAX_RINGING = 100
"Calls from the trunks one SIP agent lets ring at once unless ``INBOUND_MAX_RINGING`` says."


@dataclass(frozen=True)
class InboundSettings:
    """The inbound settings, checked."""

    user: str = ""
    ring_timeout: float = DEFAULT_RING_TIMEOUT
    inbound_from: tuple[Network, ...] = ()
    max_ringing: int = DEFAULT_MAX_RINGING
    nonce_secret: bytes = field(default=b"", repr=False)


def load_inbound(env: Mapping[str, str]) -> InboundSettings:
    """INBOUND_USER, INBOUND_RING_TIMEOUT, SIP_INBOUND_FROM, SIP_NONCE_SECRET, then
    INBOUND_MAX_RINGING."""
    inbound_user = env.get("INBOUND_USER", "").strip()
    if inbound_user:
        try:
            check_identity(inbound_user)
        except ValueError as exc:
            raise SettingsError(f"INBOUND_USER: {exc}") from None
    ring_timeout = seconds(
        env, "INBOUND_RING_TIMEOUT", DEFAULT_RING_TIMEOUT, hi=RING_TIMEOUT_RANGE[1]
    )
    if ring_timeout < RING_TIMEOUT_RANGE[0]:
        raise SettingsError(f"INBOUND_RING_TIMEOUT must be at least {RING_TIMEOUT_RANGE[0]:g} s")
    sip_inbound_from = parse_inbound_from(
        env.get("SIP_INBOUND_FROM", ""), SettingsError, key="SIP_INBOUND_FROM"
    )
    nonce_secret = secret(env, "SIP_NONCE_SECRET").strip().encode()
    if nonce_secret and len(nonce_secret) < MIN_NONCE_SECRET:
        # The value itself is never quoted.
        raise SettingsError(f"SIP_NONCE_SECRET needs at least {MIN_NONCE_SECRET} bytes")
    return InboundSettings(
        user=inbound_user,
        ring_timeout=ring_timeout,
        inbound_from=sip_inbound_from,
        max_ringing=whole(env, "INBOUND_MAX_RINGING", DEFAULT_MAX_RINGING, 1, 100000),
        nonce_secret=nonce_secret,
    )
