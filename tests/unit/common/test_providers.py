"""The providers file: trunks, routes, validation messages, custom headers."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from services.common.custom_headers import MAX_HEADERS, MAX_VALUE_BYTES, HeaderError, parse_headers
from services.common.providers import (
    Providers,
    ProvidersError,
    Trunk,
    load_providers,
    parse_providers,
)
from services.common.settings import SettingsError, load_settings

EXAMPLE = Path(__file__).parents[3] / "providers.example.toml"

FILE = """
fallback = "default"

[trunks.support]
host = "sip.provider1.example"
username = "support_user"
password_env = "SUPPORT_SIP_PASSWORD"
headers = { X-Customer = "acme", X-Tier = 2 }

[trunks.us]
host = "10.0.0.2"
port = 5080
transport = "tcp"
codecs = ["PCMA"]
dtmf = "info"
transfer = "decline"
allow_headers = ["X-Agent-Context"]

[[routes]]
match = "support"
trunk = "support"
user = "1000"

[[routes]]
match = "^\\\\+1"
pattern = true
trunk = "us"

[[routes]]
match = "+15550000000"
trunk = "support"
"""

DEFAULT = Trunk(name="default", host="sip.env.example", username="envuser", password="envpw")


def parse(
    text: str, env: dict[str, str] | None = None, default: Trunk | None = DEFAULT
) -> Providers:
    return parse_providers(tomllib.loads(text), env or {}, default, source="p.toml")


def test_trunks_and_routes() -> None:
    providers = parse(FILE, {"SUPPORT_SIP_PASSWORD": "s3cret"})
    support = providers.trunks["support"]
    assert support.password == "s3cret" and support.password_env == "SUPPORT_SIP_PASSWORD"
    assert "s3cret" not in repr(support)
    assert support.headers == (("X-Customer", "acme"), ("X-Tier", "2"))
    us = providers.trunks["us"]
    assert (us.port, us.transport, us.codecs, us.dtmf) == (5080, "tcp", ("PCMA",), "info")
    assert us.transfer == "decline" and support.transfer == "follow"
    assert providers.trunks["default"] is DEFAULT


def test_route_matching_exact_regex_order_and_fallback() -> None:
    providers = parse(FILE, {"SUPPORT_SIP_PASSWORD": "x"})
    target = providers.route("support")
    assert target is not None and (target.trunk.name, target.user) == ("support", "1000")
    target = providers.route("+15551234567")
    assert target is not None and (target.trunk.name, target.user) == ("us", "+15551234567")
    # Earlier routes win: the regex route comes before the exact one for this number.
    target = providers.route("+15550000000")
    assert target is not None and target.trunk.name == "us"
    # Exact means exact: no prefix match.
    target = providers.route("supportx")
    assert target is not None and target.trunk.name == "default"
    assert target.user == "supportx"


def test_no_fallback_makes_unknown_destinations() -> None:
    providers = parse(FILE.replace('fallback = "default"', ""), {})
    assert providers.route("sales") is None
    assert providers.route("support") is not None


def test_single_trunk_routes_everything() -> None:
    providers = Providers.single(DEFAULT)
    target = providers.route("anything")
    assert target is not None and target.trunk is DEFAULT and target.user == "anything"


def test_missing_secret_is_reported_for_the_sip_agent_only() -> None:
    providers = parse(FILE, {})
    assert providers.trunks["support"].missing_secret == "SUPPORT_SIP_PASSWORD"
    (message,) = providers.missing_secrets()
    assert message == "p.toml: trunk 'support': password_env SUPPORT_SIP_PASSWORD is not set"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[trunks.a]\nport = 5060\n[[routes]]\nmatch="x"\ntrunk="a"', "trunk 'a': host is missing"),
        ('[trunks.a]\nhost="h"\nport = 70000\n', "trunk 'a': port must be a whole number"),
        ('[trunks.a]\nhost="h"\nport = "5060"\n', "trunk 'a': port must be a whole number"),
        (
            '[trunks.a]\nhost="h"\ntransport="sctp"\n',
            "trunk 'a': transport must be udp, tcp or tls",
        ),
        ('[trunks.a]\nhost="h"\ncodecs=["G729"]\n', "trunk 'a': codec 'G729' is not one of"),
        ('[trunks.a]\nhost="h"\ndtmf="inband"\n', "trunk 'a': dtmf must be rfc4733 or info"),
        ('[trunks.a]\nhost="h"\ntransfer="ask"\n', "trunk 'a': transfer must be follow or"),
        ('[trunks.a]\nhost="h"\nhostname="x"\n', "trunk 'a': unknown key 'hostname'"),
        ('[trunks.a]\nhost="h"\npassword="pw"\n', "trunk 'a': username is required"),
        (
            '[trunks.a]\nhost="h"\nusername="u"\npassword="pw"\npassword_env="P"\n',
            "trunk 'a': give password or password_env, not both",
        ),
        ('[trunks.a]\nhost="h"\nheaders={Via="x"}\n', "trunk 'a': header Via is set by"),
        (
            '[trunks.a]\nhost="h"\nheaders={X-A="a\\r\\nVia: evil"}\n',
            "trunk 'a': header X-A holds a control character",
        ),
        ('[[routes]]\nmatch="x"\ntrunk="nope"\n', "route 1: unknown trunk 'nope'"),
        ('[[routes]]\nmatch="("\npattern=true\ntrunk="default"\n', "route 1: bad regex '('"),
        ('[[routes]]\ntrunk="default"\n', "route 1: match is missing"),
        ('[[routes]]\nmatch="x"\ntrunk="default"\nuser="a b"\n', "route 1: user 'a b' is not"),
        ('fallback = "nope"\n', "fallback: unknown trunk 'nope'"),
        ('[trunks.a]\nhost="h"\n', "routes: no [[routes]] and no fallback"),
        ('colour = "red"\n', "top level: unknown key 'colour'"),
    ],
)
def test_validation_names_the_entry_and_the_problem(text: str, message: str) -> None:
    with pytest.raises(ProvidersError) as caught:
        parse(text)
    assert str(caught.value).startswith(f"p.toml: {message}"), str(caught.value)


def test_route_to_default_without_sip_trunk_host() -> None:
    with pytest.raises(ProvidersError, match="trunk 'default' is not defined"):
        parse('[[routes]]\nmatch="x"\ntrunk="default"\n', default=None)


def test_password_never_in_messages() -> None:
    text = '[trunks.a]\nhost="h"\nport=0\nusername="u"\npassword="hunter2"\n'
    with pytest.raises(ProvidersError) as caught:
        parse(text)
    assert "hunter2" not in str(caught.value)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ProvidersError, match=r"^PROVIDERS_FILE .*nope.toml: cannot read"):
        load_providers(tmp_path / "nope.toml", {})
    bad = tmp_path / "bad.toml"
    bad.write_text("[trunks.a\n")
    with pytest.raises(ProvidersError, match=r"bad.toml: not valid TOML"):
        load_providers(bad, {})


def test_settings_load_the_file_with_env_secrets(tmp_path: Path) -> None:
    path = tmp_path / "providers.toml"
    path.write_text(FILE)
    env = {
        "PROVIDERS_FILE": str(path),
        "SIP_TRUNK_HOST": "sip.env.example",
        "SUPPORT_SIP_PASSWORD": "from-env",
    }
    settings = load_settings(env, dotenv=None)
    assert settings.trunk_configured
    providers = settings.providers
    assert providers.trunks["support"].password == "from-env"
    assert providers.trunks["default"].host == "sip.env.example"
    path.write_text('[[routes]]\nmatch="x"\ntrunk="nope"\n')
    with pytest.raises(SettingsError, match=r"providers.toml: route 1: unknown trunk 'nope'"):
        load_settings(env, dotenv=None)


def test_without_a_file_everything_goes_to_the_env_trunk() -> None:
    settings = load_settings({"SIP_TRUNK_HOST": "h", "SIP_TRANSPORT": "tcp"}, dotenv=None)
    target = settings.providers.route("sales")
    assert target is not None
    assert (target.trunk.name, target.trunk.host, target.trunk.transport) == ("default", "h", "tcp")


def test_the_example_file_is_valid() -> None:
    env = {"SIP_TRUNK_HOST": "sip.example.com", "PROVIDERS_FILE": str(EXAMPLE)}
    providers = load_settings(env, dotenv=None).providers
    for destination, trunk in [("support", "support"), ("sales", "sales"), ("ai_assistant", "ai")]:
        target = providers.route(destination)
        assert target is not None and target.trunk.name == trunk


# --- custom headers -----------------------------------------------------------


def test_headers_text_and_json_values() -> None:
    headers = parse_headers(
        {
            "X-Agent-Context": {"user_id": "12345", "language": "en", "n": [1, 2]},
            "X-Note": "  hello  ",
            "X-Count": 3,
            "X-Flag": True,
            "X-Name": {"name": "Zoë"},
        }
    )
    assert headers["X-Agent-Context"] == '{"user_id":"12345","language":"en","n":[1,2]}'
    assert json.loads(headers["X-Agent-Context"])["language"] == "en"
    assert headers["X-Note"] == "hello"
    assert (headers["X-Count"], headers["X-Flag"]) == ("3", "true")
    assert headers["X-Name"] == '{"name":"Zoë"}'


def test_json_strings_with_newlines_are_escaped_not_refused() -> None:
    headers = parse_headers({"X-Ctx": {"text": "line1\r\nVia: evil"}})
    assert "\r" not in headers["X-Ctx"] and "\n" not in headers["X-Ctx"]
    assert headers["X-Ctx"] == '{"text":"line1\\r\\nVia: evil"}'


@pytest.mark.parametrize(
    "raw",
    [
        {"X-A": "ok\r\nVia: SIP/2.0/UDP evil"},
        {"X-A": "ok\nX-B: injected"},
        {"X-A": "ok\rX"},
        {"X-A": "nul\x00byte"},
        {"X-A": "bell\x07"},
        {"X-A": "del\x7f"},
        {"X-A": "tab\there"},
        {"X-A\r\nVia": "x"},
        {"X-A: b": "x"},
        {"X A": "x"},
        {"": "x"},
        {"X-Ä": "x"},
        {"X-" + "a" * 80: "x"},
        {"X-A": None},
        {"X-A": "a" * (MAX_VALUE_BYTES + 1)},
        {"X-A": "é" * (MAX_VALUE_BYTES // 2 + 1)},
        {f"X-H{n}": "v" for n in range(MAX_HEADERS + 1)},
        {f"X-H{n}": "v" * 1000 for n in range(5)},
        {"X-A": "1", "x-a": "2"},
        ["X-A", "x"],
        "X-A: x",
    ],
)
def test_bad_headers_are_refused(raw: object) -> None:
    with pytest.raises(HeaderError) as caught:
        parse_headers(raw)
    # Messages name headers, never values.
    assert "evil" not in str(caught.value) and "injected" not in str(caught.value)


def test_allowed_header_names() -> None:
    providers = parse(FILE, {"SUPPORT_SIP_PASSWORD": "x"})
    support = providers.route("support")
    assert support is not None
    assert support.allows("X-Agent-Context") and support.allows("x-anything")
    assert not support.allows("Subject")
    assert not support.allows("X-Customer"), "a static header is not the browser's to replace"
    us = providers.route("+15551234567")
    assert us is not None
    assert us.allows("x-agent-context") and not us.allows("X-Other")
    with pytest.raises(HeaderError, match="X-Other is not allowed"):
        us.check_headers({"X-Other": "1"})
    assert support.invite_headers({"X-Agent-Context": "{}"}) == [
        ("X-Customer", "acme"),
        ("X-Tier", "2"),
        ("X-Agent-Context", "{}"),
    ]


def test_reserved_headers_are_never_allowed() -> None:
    providers = parse(
        'fallback="default"\n[trunks.a]\nhost="h"\nallow_headers=["Via","Contact","i","X-A"]\n'
    )
    target = providers.route("x")
    assert target is not None
    a = Providers(trunks=providers.trunks, fallback="a")
    target = a.route("x")
    assert target is not None
    assert target.allows("X-A")
    for name in ("Via", "contact", "i", "Call-ID", "Content-Length"):
        assert not target.allows(name)


def test_srtp_and_opus_per_trunk() -> None:
    providers = parse_providers(
        {
            "trunks": {
                "secure": {"host": "sip.example.com", "srtp": "Required", "codecs": ["opus"]},
                "plain": {"host": "pbx.example.com"},
            },
            "fallback": "secure",
        },
        {},
    )
    assert providers.trunks["secure"].srtp == "required"
    assert providers.trunks["secure"].codecs == ("OPUS",)
    assert providers.trunks["plain"].srtp == "off"
    with pytest.raises(ProvidersError, match="srtp must be off, optional or required"):
        parse_providers({"trunks": {"t": {"host": "h", "srtp": "maybe"}}, "fallback": "t"}, {})
