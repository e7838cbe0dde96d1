"""The access settings: defaults by address, refusals that name the setting, never a secret."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from services.common.access import AccessError, load_access, serving_problem
from services.common.rates import Rate
from services.common.settings import SettingsError, load_settings
from services.signaling.caller import source_address

SECRET = "k" * 40


def test_auth_follows_the_address() -> None:
    assert load_access({}, "127.0.0.1").auth == "off"
    assert load_access({}, "::1").auth == "off"
    assert load_access({}, "0.0.0.0").auth == "required"
    assert load_access({}, "192.0.2.10").auth == "required"
    assert load_access({"AUTH": "off"}, "0.0.0.0").auth == "off"


def test_serving_problems() -> None:
    assert serving_problem(load_access({}, "127.0.0.1"), "127.0.0.1") is None
    no_key = serving_problem(load_access({}, "0.0.0.0"), "0.0.0.0")
    assert no_key is not None and "CLIENT_TOKEN_SECRET" in no_key
    open_bridge = serving_problem(load_access({"AUTH": "off"}, "0.0.0.0"), "0.0.0.0")
    assert open_bridge is not None and "ALLOW_UNAUTHENTICATED" in open_bridge
    allowed = load_access({"AUTH": "off", "ALLOW_UNAUTHENTICATED": "true"}, "0.0.0.0")
    assert serving_problem(allowed, "0.0.0.0") is None
    keyed = load_access({"CLIENT_TOKEN_SECRET": SECRET}, "0.0.0.0")
    assert serving_problem(keyed, "0.0.0.0") is None


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"AUTH": "maybe"}, "AUTH"),
        ({"CLIENT_TOKEN_SECRET": "hunter2"}, "CLIENT_TOKEN_SECRET"),
        ({"CLIENT_TOKEN_SECRET": f"a:{SECRET},a:{SECRET}x"}, "given twice"),
        ({"CLIENT_TOKEN_PUBLIC_KEY": "/nonexistent.pem"}, "CLIENT_TOKEN_PUBLIC_KEY"),
        ({"CALL_RATE": "ten a minute"}, "CALL_RATE"),
        ({"WS_MESSAGE_RATE": "5/fortnight"}, "WS_MESSAGE_RATE"),
        ({"MAX_CALLS_PER_USER": "0"}, "MAX_CALLS_PER_USER"),
        ({"MAX_CALL_DURATION": "-5"}, "MAX_CALL_DURATION"),
        ({"TRUSTED_PROXIES": "proxy.local"}, "TRUSTED_PROXIES"),
        ({"ALLOWED_ORIGINS": "calls.example.com"}, "ALLOWED_ORIGINS"),
        ({"DIAL_DENY": "+1 900 x"}, "DIAL_DENY"),
        ({"ALLOW_UNAUTHENTICATED": "perhaps"}, "ALLOW_UNAUTHENTICATED"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], named: str) -> None:
    with pytest.raises(AccessError) as info:
        load_access(env, "0.0.0.0")
    assert named in str(info.value)
    assert "hunter2" not in str(info.value)
    # Through load_settings: one SettingsError, the message unchanged.
    with pytest.raises(SettingsError, match=named):
        load_settings(env, None)


def test_values() -> None:
    access = load_access(
        {
            "CALL_RATE": "3/min",
            "SOURCE_CALL_RATE": "off",
            "WS_MESSAGE_RATE": "20/s",
            "MAX_CALLS_PER_USER": "5",
            "MAX_CALL_DURATION": "600",
            "TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1",
            "ALLOWED_ORIGINS": "https://Calls.Example.com, http://localhost:8080",
            "DIAL_DENY": "+1900, 00 882",
        },
        "127.0.0.1",
    )
    assert access.call_rate == Rate(3, 60.0)
    assert access.source_call_rate is None
    assert access.ws_message_rate == Rate(20, 1.0)
    assert (access.max_calls_per_user, access.max_call_duration) == (5, 600.0)
    assert ipaddress.ip_address("10.1.2.3") in access.trusted_proxies[0]
    assert access.allowed_origins == ("https://calls.example.com", "http://localhost:8080")
    assert [str(p) for p in access.dial_deny] == ["+1900*", "+882*"]


def test_public_key_entries(tmp_path: Path) -> None:
    pem = tmp_path / "k.pem"
    pem.write_text("not read until signaling starts")
    access = load_access({"CLIENT_TOKEN_PUBLIC_KEY": f"2026:{pem}"}, "0.0.0.0")
    assert [(k.kid, k.public_key_file) for k in access.public_keys] == [("2026", str(pem))]


TRUSTED = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"))


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("203.0.113.9", "198.51.100.7", "203.0.113.9"),  # not a trusted proxy: ignored
        ("127.0.0.1", None, "127.0.0.1"),
        ("127.0.0.1", "198.51.100.7", "198.51.100.7"),
        ("127.0.0.1", "6.6.6.6, 198.51.100.7, 10.1.1.1", "198.51.100.7"),  # skips our proxies
        ("127.0.0.1", "10.1.1.1, 10.2.2.2", "10.1.1.1"),  # all trusted: the left-most
        ("127.0.0.1", "junk, 198.51.100.7", "198.51.100.7"),
        ("127.0.0.1", "198.51.100.7, junk", "127.0.0.1"),  # a malformed hop: only the peer
    ],
)
def test_source_address(peer: str, forwarded: str | None, expected: str) -> None:
    assert source_address(peer, forwarded, TRUSTED) == expected
