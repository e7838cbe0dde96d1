"""The ICE servers of /config.json and the TURN REST credentials in them."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

import pytest

from services.common.settings import SettingsError, load_settings
from services.signaling.ice_config import ice_servers, turn_credential, username_identity

SECRET = "north-wind-" + "7" * 24
NOW = 1_800_000_000.4


def test_turn_credential_is_what_coturn_recomputes() -> None:
    minted = turn_credential(SECRET, "alice", NOW, 3600)
    assert minted.username == "1800003600:alice"
    assert minted.expires_at == 1_800_003_600
    # coturn with use-auth-secret: base64(HMAC-SHA1(static-auth-secret, username)).
    expected = hmac.new(SECRET.encode(), b"1800003600:alice", hashlib.sha1).digest()
    assert base64.b64decode(minted.credential) == expected


def test_an_identity_unfit_for_a_username_becomes_a_digest() -> None:
    assert username_identity("alice@example.com") == "alice@example.com"
    odd = username_identity("Zoë: the one with spaces")
    assert odd.startswith("sha256-") and " " not in odd and ":" not in odd
    assert username_identity("x" * 65) != "x" * 65
    assert username_identity("Zoë") != username_identity("Zoe")


def test_no_servers_configured_gives_none() -> None:
    config = ice_servers(load_settings({}, dotenv=None), None, NOW, with_credentials=True)
    assert config == {"ice_servers": [], "ice_transport_policy": "all"}


def test_static_servers_and_minted_turn_credentials() -> None:
    loaded = load_settings(
        {
            "ICE_SERVERS": "stun:stun.example:3478,turn:static.example",
            "ICE_USERNAME": "static-user",
            "ICE_CREDENTIAL": "static-pass",
            "TURN_URLS": "turn:turn.example:3478?transport=udp, turns:turn.example:5349",
            "TURN_SECRET": SECRET,
            "TURN_TTL": "600",
        },
        dotenv=None,
    )
    config = ice_servers(loaded, "bob", NOW, with_credentials=True)
    assert config["ice_servers"][0] == {"urls": ["stun:stun.example:3478"]}
    assert config["ice_servers"][1] == {
        "urls": ["turn:static.example"],
        "username": "static-user",
        "credential": "static-pass",
    }
    minted = config["ice_servers"][2]
    assert minted["urls"] == ["turn:turn.example:3478?transport=udp", "turns:turn.example:5349"]
    assert minted["username"] == "1800000600:bob"
    assert minted == {**minted, "credential": turn_credential(SECRET, "bob", NOW, 600).credential}
    assert config["ice_expires"] == 1_800_000_600


def test_without_entitlement_only_stun_is_handed_out() -> None:
    loaded = load_settings(
        {
            "ICE_SERVERS": "stun:stun.example,turn:static.example",
            "ICE_CREDENTIAL": "static-pass",
            "TURN_URLS": "turn:turn.example",
            "TURN_SECRET": SECRET,
        },
        dotenv=None,
    )
    config = ice_servers(loaded, None, NOW, with_credentials=False)
    assert config == {
        "ice_servers": [{"urls": ["stun:stun.example"]}],
        "ice_transport_policy": "all",
    }
    assert "static-pass" not in repr(config) and SECRET not in repr(config)


def test_anonymous_identity_when_tokens_are_off() -> None:
    loaded = load_settings({"TURN_URLS": "turn:t.example", "TURN_SECRET": SECRET}, dotenv=None)
    config = ice_servers(loaded, None, NOW, with_credentials=True)
    assert config["ice_servers"][0]["username"] == "1800003600:anonymous"


def test_relay_policy_reaches_the_page() -> None:
    loaded = load_settings(
        {"TURN_URLS": "turn:t.example", "TURN_SECRET": SECRET, "ICE_TRANSPORT_POLICY": "Relay"},
        dotenv=None,
    )
    assert ice_servers(loaded, "a", NOW, with_credentials=True)["ice_transport_policy"] == "relay"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"TURN_URLS": "turn:t.example"}, "TURN_URLS needs TURN_SECRET"),
        ({"TURN_SECRET": SECRET}, "TURN_SECRET needs TURN_URLS"),
        ({"TURN_URLS": "stun:t.example", "TURN_SECRET": SECRET}, "TURN_URLS entries"),
        ({"TURN_URLS": "turn:t", "TURN_SECRET": SECRET, "TURN_TTL": "10"}, "TURN_TTL"),
        ({"TURN_URLS": "turn:t", "TURN_SECRET": SECRET, "TURN_TTL": "1h"}, "TURN_TTL"),
        ({"ICE_TRANSPORT_POLICY": "nohost"}, "ICE_TRANSPORT_POLICY must be"),
        ({"ICE_TRANSPORT_POLICY": "relay"}, "ICE_TRANSPORT_POLICY=relay needs"),
    ],
)
def test_bad_settings_name_the_setting_and_never_the_secret(
    env: dict[str, str], named: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(env, dotenv=None)
    assert named in str(caught.value)
    assert SECRET not in str(caught.value)


def test_the_secret_may_come_from_a_file_and_stays_out_of_repr(tmp_path: Path) -> None:
    path = tmp_path / "turn-secret"
    path.write_text(SECRET + "\n")
    loaded = load_settings(
        {"TURN_URLS": "turn:t.example", "TURN_SECRET_FILE": str(path)}, dotenv=None
    )
    assert loaded.turn_secret == SECRET
    assert SECRET not in repr(loaded)
