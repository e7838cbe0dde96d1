"""The ``.env`` trunk (``SIP_TRUNK_*``): a provider guide's five values, REGISTER, SRTP, REFER.

``SIP_TRUNK_HOST``/``SIP_TRUNK_PORT``, ``SIP_USERNAME``, ``SIP_PASSWORD`` (or
``SIP_PASSWORD_FILE``), ``SIP_DOMAIN``, ``SIP_REGISTER``/``SIP_REGISTER_EXPIRES``,
``SIP_SRTP`` and ``SIP_TRANSFER``. ``Settings.default_trunk`` makes them the
trunk named ``default``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from services.common.setting_readers import SettingsError, boolean, host, secret, whole
from services.common.trunks import (
    DEFAULT_REGISTER_EXPIRES,
    REGISTER_EXPIRES_RANGE,
    SRTP_MODES,
    TRANSFER_MODES,
)

DEFAULT_SRTP = "off"
DEFAULT_TRANSFER = "follow"


@dataclass(frozen=True)
class EnvTrunkSettings:
    """The ``SIP_TRUNK_*`` settings, checked (``host`` empty: no ``.env`` trunk)."""

    host: str = ""
    port: int = 0
    username: str = ""
    password: str = field(default="", repr=False)
    domain: str = ""
    register: bool = False
    register_expires: int = DEFAULT_REGISTER_EXPIRES
    srtp: str = DEFAULT_SRTP
    transfer: str = DEFAULT_TRANSFER


def load_env_trunk(env: Mapping[str, str]) -> EnvTrunkSettings:
    """Every ``SIP_TRUNK_*`` setting of ``env``; ``SettingsError`` names a wrong one."""
    sip_srtp = env.get("SIP_SRTP", "").strip().lower() or DEFAULT_SRTP
    if sip_srtp not in SRTP_MODES:
        raise SettingsError(f"SIP_SRTP must be off, optional or required, got {sip_srtp!r}")
    sip_transfer = env.get("SIP_TRANSFER", "").strip().lower() or DEFAULT_TRANSFER
    if sip_transfer not in TRANSFER_MODES:
        raise SettingsError(f"SIP_TRANSFER must be follow or decline, got {sip_transfer!r}")

    trunk_host = host(env, "SIP_TRUNK_HOST", "")
    username = env.get("SIP_USERNAME", "").strip()
    password = secret(env, "SIP_PASSWORD")
    if trunk_host and password and not username:
        raise SettingsError("SIP_USERNAME is required when SIP_PASSWORD is set")
    register = boolean(env, "SIP_REGISTER")
    if register and not trunk_host:
        raise SettingsError("SIP_REGISTER=true needs SIP_TRUNK_HOST (the registrar)")
    if register and not username:
        raise SettingsError("SIP_REGISTER=true needs SIP_USERNAME")
    register_expires = whole(
        env, "SIP_REGISTER_EXPIRES", DEFAULT_REGISTER_EXPIRES, *REGISTER_EXPIRES_RANGE
    )
    return EnvTrunkSettings(
        host=trunk_host,
        port=whole(env, "SIP_TRUNK_PORT", 0, 1, 65535),
        username=username,
        password=password,
        domain=host(env, "SIP_DOMAIN", ""),
        register=register,
        register_expires=register_expires,
        srtp=sip_srtp,
        transfer=sip_transfer,
    )
