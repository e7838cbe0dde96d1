"""``[[inbound]]``, ``inbound_from``, ``inbound_auth``, ``INBOUND_USER``: parsing, matching."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from services.common.inbound_routes import (
    default_user_route,
    in_networks,
    normalize_did,
    route_inbound,
)
from services.common.providers import ProvidersError, Trunk, parse_providers
from services.common.settings import SettingsError, load_settings

DEFAULT = Trunk(name="default", host="sip.example.com")


def providers(inbound: list[dict[str, Any]], **trunk: Any) -> Any:
    data = {
        "fallback": "default",
        "trunks": {"carrier": {"host": "sip.carrier.example", **trunk}},
        "inbound": inbound,
    }
    return parse_providers(data, {"CARRIER_IN": "s3cret"}, DEFAULT, source="providers.toml")


def test_entries_match_in_file_order_first_wins() -> None:
    routes = providers(
        [
            {"number": "+1 555 000 1111", "user": "alice"},
            {"pattern": "+1555*", "users": ["bob", "carol"], "trunk": "carrier"},
            {"pattern": "*", "user": "operator", "ring_timeout": 10, "reject_status": 603},
        ]
    ).inbound
    assert route_inbound(routes, "+15550001111", "carrier") == (routes[0], "carrier")
    assert route_inbound(routes, "+15550002222", "carrier") == (routes[1], "carrier")
    # Only calls from the carrier for the second entry: the default trunk falls through.
    assert route_inbound(routes, "+15550002222", "default") == (routes[2], "default")
    assert routes[1].users == ("bob", "carol") and routes[2].ring_timeout == 10.0
    assert routes[2].reject_status == 603 and routes[0].ring_timeout == 30.0
    assert routes[0].name == "inbound 1"


def test_numbers_match_with_or_without_plus() -> None:
    routes = providers([{"number": "+15550001111", "user": "alice"}]).inbound
    assert normalize_did("15550001111") == "15550001111"  # no country known: digits
    assert route_inbound(routes, normalize_did("15550001111"), "default") is not None
    assert route_inbound(routes, normalize_did("tel:+1-555-000-1111"), "default") is not None
    assert route_inbound(routes, normalize_did("+15550001112"), "default") is None


def test_candidate_trunks_pick_the_entry_that_names_one() -> None:
    routes = providers([{"pattern": "*", "user": "bob", "trunk": "carrier"}]).inbound
    assert route_inbound(routes, "+1", ("default", "carrier")) == (routes[0], "carrier")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"user": "alice"}, "inbound 1: give number"),
        ({"number": "+1", "pattern": "+1*", "user": "a"}, "inbound 1: give number"),
        ({"number": "+1*", "user": "a"}, "use pattern for a prefix"),
        ({"number": "+1"}, 'give user = "alice"'),
        ({"number": "+1", "user": "a", "users": ["b"]}, 'give user = "alice"'),
        ({"number": "+1", "users": []}, "non-empty array"),
        ({"number": "+1", "users": ["a", "a"]}, "names 'a' twice"),
        ({"number": "+1", "user": " a"}, "spaces around it"),
        ({"number": "+1", "user": "a", "trunk": "nope"}, "unknown trunk 'nope'"),
        ({"number": "+1", "user": "a", "ring_timeout": 0}, "ring_timeout must be"),
        ({"number": "+1", "user": "a", "ring_timeout": 9000}, "ring_timeout must be"),
        ({"number": "+1", "user": "a", "reject_status": 404}, "reject_status must be 486 or 603"),
        ({"number": "+1", "user": "a", "color": "red"}, "unknown key 'color'"),
        ({"number": "!!", "user": "a"}, "inbound 1: number"),
    ],
)
def test_bad_entries_name_file_entry_and_key(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ProvidersError, match=r"providers\.toml") as caught:
        providers([entry])
    assert message in str(caught.value)


def test_inbound_from_and_inbound_auth_per_trunk(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-a-file\n")
    trunk = providers(
        [],
        inbound_from=["203.0.113.0/24", "2001:db8::1"],
        inbound_auth={"username": "twilio", "password_file": str(secret)},
    ).trunks["carrier"]
    assert in_networks("203.0.113.9", trunk.inbound_from)
    assert in_networks("::ffff:203.0.113.9", trunk.inbound_from)
    assert in_networks("2001:db8::1", trunk.inbound_from)
    assert not in_networks("198.51.100.1", trunk.inbound_from)
    assert trunk.inbound_auth is not None and trunk.inbound_auth.password == "from-a-file"
    assert "from-a-file" not in repr(trunk)
    assert trunk.inbound_auth.algorithms == ("SHA-256", "MD5")
    md5 = providers([], inbound_auth={"username": "u", "password": "p", "algorithms": ["MD5"]})
    assert md5.trunks["carrier"].inbound_auth.algorithms == ("MD5",)
    env_auth = providers([], inbound_auth={"username": "u", "password_env": "CARRIER_IN"})
    assert env_auth.trunks["carrier"].inbound_auth.password == "s3cret"
    unset = providers([], inbound_auth={"username": "u", "password_env": "UNSET_VAR"})
    assert unset.missing_secrets() == [
        "providers.toml: trunk 'carrier': password_env UNSET_VAR is not set"
    ]


@pytest.mark.parametrize(
    ("trunk", "message"),
    [
        ({"inbound_from": ["203.0.113.0/33"]}, "inbound_from: '203.0.113.0/33' is not"),
        ({"inbound_from": "nope"}, "inbound_from: 'nope' is not"),
        ({"inbound_auth": "x"}, "inbound_auth must be a table"),
        ({"inbound_auth": {"password": "p"}}, "inbound_auth: username is missing"),
        ({"inbound_auth": {"username": "u"}}, "give one of password"),
        ({"inbound_auth": {"username": "u", "password_file": "/nonexistent"}}, "cannot read"),
        (
            {"inbound_auth": {"username": "u", "password": "p", "algorithms": ["SHA-1"]}},
            "algorithms must list",
        ),
        (
            {"inbound_auth": {"username": "u", "password": "p", "algorithms": []}},
            "algorithms must list",
        ),
    ],
)
def test_bad_trunk_inbound_keys(trunk: dict[str, Any], message: str) -> None:
    with pytest.raises(ProvidersError, match="trunk 'carrier'") as caught:
        providers([], **trunk)
    assert message in str(caught.value)


def test_inbound_user_rings_every_number_of_the_env_trunk() -> None:
    settings = load_settings(
        {
            "SIP_TRUNK_HOST": "sip.example.com",
            "INBOUND_USER": "alice",
            "INBOUND_RING_TIMEOUT": "20",
            "SIP_INBOUND_FROM": "203.0.113.0/24, 198.51.100.7",
        },
        dotenv=None,
    )
    routes = settings.inbound_routes
    assert routes == (default_user_route("alice", 20.0, "default"),)
    assert route_inbound(routes, "+15550001111", "default") == (routes[0], "default")
    assert route_inbound(routes, "+15550001111", "carrier") is None
    trunk = settings.providers.trunks["default"]
    assert trunk.inbound_from == (
        ipaddress.ip_network("203.0.113.0/24"),
        ipaddress.ip_network("198.51.100.7/32"),
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"INBOUND_USER": "a\tb"}, "INBOUND_USER"),
        ({"INBOUND_RING_TIMEOUT": "0.5"}, "INBOUND_RING_TIMEOUT"),
        ({"SIP_INBOUND_FROM": "10.0.0.0/40"}, "SIP_INBOUND_FROM: '10.0.0.0/40'"),
        ({"SIP_TLS_CERT": "/nonexistent"}, "SIP_TLS_CERT and SIP_TLS_KEY go together"),
        (
            {"SIP_TLS_CERT": "/nonexistent", "SIP_TLS_KEY": "/nonexistent"},
            "SIP_TLS_CERT /nonexistent is not a readable file",
        ),
    ],
)
def test_bad_inbound_settings(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"SIP_TRUNK_HOST": "sip.example.com", **env}, dotenv=None)
    assert message in str(caught.value)


def test_a_file_of_inbound_entries_alone_takes_calls_and_places_none() -> None:
    data = {
        "trunks": {"carrier": {"host": "127.0.0.1"}},
        "inbound": [{"number": "+15550001111", "user": "alice"}],
    }
    parsed = parse_providers(data, {}, None, source="providers.toml")
    assert parsed.route("+15550002222") is None and len(parsed.inbound) == 1
    with pytest.raises(ProvidersError, match="no \\[\\[routes\\]\\] and no fallback"):
        parse_providers({"trunks": data["trunks"]}, {}, None, source="providers.toml")
