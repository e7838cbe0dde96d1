from pathlib import Path

import pytest

from services.common.settings import (
    SettingsError,
    load_settings,
    nats_urls,
    parse_dotenv,
    redact_url,
)


def test_defaults_are_safe() -> None:
    settings = load_settings({}, None)
    assert settings.http_host == "127.0.0.1"  # not open to the world by default
    assert settings.http_port == 8080
    assert settings.ice_servers == ()  # no STUN unless asked
    assert not settings.trunk_configured


def test_seed_env_names_are_read(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# Replace with YOUR provider's details\n"
        "SIP_TRUNK_HOST=sip.your-provider.com\n"
        "SIP_TRUNK_PORT=5060\n"
        "SIP_USERNAME=your_username\n"
        "SIP_PASSWORD='pa:ss#w@rd'\n"
        "SIP_DOMAIN=your-provider.com\n"
        "PUBLIC_IP=203.0.113.7\n"
    )
    settings = load_settings({"SIP_TRUNK_PORT": "5080"}, dotenv)
    assert settings.sip_trunk_host == "sip.your-provider.com"
    assert settings.sip_trunk_port == 5080  # the environment wins over .env
    assert settings.sip_password == "pa:ss#w@rd"
    assert settings.sip_realm_domain == "your-provider.com"
    assert settings.public_ip == "203.0.113.7"


def test_fleet_settings() -> None:
    defaults = load_settings({}, None)
    assert (defaults.heartbeat_interval, defaults.lease_timeout, defaults.kv_replicas) == (1, 3, 1)
    env = {
        "HEARTBEAT_INTERVAL": "0.5",
        "LEASE_TIMEOUT": "2",
        "KV_REPLICAS": "3",
        "NATS_URL": "nats://a:4222, nats://b:4222",
    }
    settings = load_settings(env, None)
    assert (settings.heartbeat_interval, settings.lease_timeout, settings.kv_replicas) == (
        0.5,
        2,
        3,
    )
    assert nats_urls(settings.nats_url) == ["nats://a:4222", "nats://b:4222"]
    assert redact_url("nats://u:p@a:1,nats://b:2") == "nats://***@a:1,nats://b:2"


def test_password_never_in_repr() -> None:
    settings = load_settings({"SIP_PASSWORD": "hunter2", "SIP_USERNAME": "u"}, None)
    assert "hunter2" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SIP_TRUNK_PORT": "abc"}, "SIP_TRUNK_PORT"),
        ({"SIP_TRUNK_PORT": "70000"}, "SIP_TRUNK_PORT"),
        ({"SIP_TRANSPORT": "sctp"}, "SIP_TRANSPORT"),
        ({"PUBLIC_IP": "my.host"}, "PUBLIC_IP"),
        ({"INVITE_TIMEOUT": "-1"}, "INVITE_TIMEOUT"),
        ({"RTP_PORT_MIN": "20000", "RTP_PORT_MAX": "10000"}, "RTP_PORT_MAX"),
        ({"ICE_SERVERS": "stun.example.com"}, "ICE_SERVERS"),
        ({"NATS_URL": "http://x"}, "NATS_URL"),
        ({"SIP_TRUNK_HOST": "h", "SIP_PASSWORD": "p"}, "SIP_USERNAME"),
        ({"NATS_URL": "nats://a:4222,http://b"}, "NATS_URL"),
        ({"HEARTBEAT_INTERVAL": "0"}, "HEARTBEAT_INTERVAL"),
        ({"LEASE_TIMEOUT": "x"}, "LEASE_TIMEOUT"),
        ({"HEARTBEAT_INTERVAL": "2", "LEASE_TIMEOUT": "3"}, "LEASE_TIMEOUT"),
        ({"KV_REPLICAS": "7"}, "KV_REPLICAS"),
    ],
)
def test_bad_settings_name_the_setting(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        load_settings(env, None)


def test_bad_setting_error_never_echoes_password() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({"SIP_TRUNK_HOST": "h", "SIP_PASSWORD": "hunter2"}, None)
    assert "hunter2" not in str(info.value)


def test_dotenv_syntax() -> None:
    values = parse_dotenv('export A=1\nB="two words"\nC=x # comment\n\n# note\n')
    assert values == {"A": "1", "B": "two words", "C": "x"}
    with pytest.raises(SettingsError, match="line 1"):
        parse_dotenv("not a setting\n")


def test_in_dialog_settings() -> None:
    defaults = load_settings({}, None)
    assert defaults.sip_keepalive_interval == 30.0 and defaults.sip_transfer == "follow"
    settings = load_settings(
        {"SIP_KEEPALIVE_INTERVAL": "0", "SIP_TRANSFER": "Decline", "SIP_TRUNK_HOST": "h"}, None
    )
    assert settings.sip_keepalive_interval == 0.0
    assert settings.default_trunk is not None and settings.default_trunk.transfer == "decline"
    for env, named in (
        ({"SIP_KEEPALIVE_INTERVAL": "-1"}, "SIP_KEEPALIVE_INTERVAL"),
        ({"SIP_KEEPALIVE_INTERVAL": "often"}, "SIP_KEEPALIVE_INTERVAL"),
        ({"SIP_TRANSFER": "ask"}, "SIP_TRANSFER"),
    ):
        with pytest.raises(SettingsError, match=named):
            load_settings(env, None)
