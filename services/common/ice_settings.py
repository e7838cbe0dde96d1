"""What the page gets for ICE: ``ICE_SERVERS``, TURN REST credentials, the transport policy. Pure.

``ICE_SERVERS`` (with ``ICE_USERNAME``/``ICE_CREDENTIAL``) are handed to the
browser as they are; ``TURN_URLS`` with ``TURN_SECRET`` (or
``TURN_SECRET_FILE``) mint short-lived credentials (``TURN_TTL`` seconds),
the scheme coturn implements with ``use-auth-secret``;
``ICE_TRANSPORT_POLICY=relay`` needs a TURN server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from services.common.setting_readers import SettingsError, secret, whole

DEFAULT_TURN_TTL = 3600
"Seconds a minted TURN credential lasts unless ``TURN_TTL`` says otherwise."
DEFAULT_ICE_TRANSPORT_POLICY = "all"


@dataclass(frozen=True)
class IceSettings:
    """The ICE settings, checked."""

    servers: tuple[str, ...] = ()
    username: str = ""
    credential: str = field(default="", repr=False)
    transport_policy: str = DEFAULT_ICE_TRANSPORT_POLICY
    turn_urls: tuple[str, ...] = ()
    turn_secret: str = field(default="", repr=False)
    turn_ttl: int = DEFAULT_TURN_TTL


def load_ice(env: Mapping[str, str]) -> IceSettings:
    """ICE_SERVERS, ICE_USERNAME, ICE_CREDENTIAL, then ``load_turn``'s."""
    ice_servers = tuple(url.strip() for url in env.get("ICE_SERVERS", "").split(",") if url.strip())
    for url in ice_servers:
        if not url.startswith(("stun:", "turn:", "turns:")):
            raise SettingsError(
                f"ICE_SERVERS entries must start with stun:, turn: or turns:, got {url!r}"
            )

    turn_urls, turn_secret, turn_ttl, ice_policy = load_turn(env, ice_servers)
    return IceSettings(
        servers=ice_servers,
        username=env.get("ICE_USERNAME", "").strip(),
        credential=env.get("ICE_CREDENTIAL", ""),
        transport_policy=ice_policy,
        turn_urls=turn_urls,
        turn_secret=turn_secret,
        turn_ttl=turn_ttl,
    )


def load_turn(
    env: Mapping[str, str], ice_servers: tuple[str, ...]
) -> tuple[tuple[str, ...], str, int, str]:
    """TURN_URLS, TURN_SECRET (or TURN_SECRET_FILE), TURN_TTL and ICE_TRANSPORT_POLICY."""
    urls = tuple(url.strip() for url in env.get("TURN_URLS", "").split(",") if url.strip())
    for url in urls:
        if not url.startswith(("turn:", "turns:")):
            raise SettingsError(f"TURN_URLS entries must start with turn: or turns:, got {url!r}")
    turn_secret = secret(env, "TURN_SECRET").strip()
    if urls and not turn_secret:
        raise SettingsError("TURN_URLS needs TURN_SECRET (the TURN server's static-auth-secret)")
    if turn_secret and not urls:
        raise SettingsError("TURN_SECRET needs TURN_URLS (the TURN servers it is for)")
    ttl = whole(env, "TURN_TTL", DEFAULT_TURN_TTL, 60, 86400)
    policy = env.get("ICE_TRANSPORT_POLICY", "").strip().lower() or DEFAULT_ICE_TRANSPORT_POLICY
    if policy not in ("all", "relay"):
        raise SettingsError(f"ICE_TRANSPORT_POLICY must be all or relay, got {policy!r}")
    if policy == "relay" and not urls and not any(u.startswith("turn") for u in ice_servers):
        raise SettingsError(
            "ICE_TRANSPORT_POLICY=relay needs TURN_URLS or a turn: ICE_SERVERS entry"
        )
    return urls, turn_secret, ttl, policy
