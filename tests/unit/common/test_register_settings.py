"""Which trunks register: ``SIP_REGISTER*`` settings and the providers file's ``register``."""

from __future__ import annotations

import tomllib

import pytest

from services.common.providers import ProvidersError, Trunk, parse_providers
from services.common.settings import Settings, SettingsError, load_settings
from services.common.trunks import DEFAULT_REGISTER_EXPIRES

TRUNK = {
    "SIP_TRUNK_HOST": "sip.example.com",
    "SIP_USERNAME": "alice",
    "SIP_PASSWORD": "pw-secret",
}


def settings(**env: str) -> Settings:
    return load_settings({**TRUNK, **env}, dotenv=None)


def test_default_trunk_registers_with_sip_register() -> None:
    trunk = settings(SIP_REGISTER="true").providers.trunks["default"]
    assert trunk.register
    assert trunk.register_expires == DEFAULT_REGISTER_EXPIRES == 600


def test_no_registration_unless_asked() -> None:
    assert not settings().providers.trunks["default"].register


def test_register_expires_setting() -> None:
    trunk = settings(SIP_REGISTER="1", SIP_REGISTER_EXPIRES="3600").providers.trunks["default"]
    assert trunk.register_expires == 3600


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SIP_REGISTER": "true", "SIP_USERNAME": ""}, "SIP_USERNAME"),
        ({"SIP_REGISTER": "true", "SIP_TRUNK_HOST": ""}, "SIP_TRUNK_HOST"),
        ({"SIP_REGISTER": "maybe"}, "SIP_REGISTER"),
        ({"SIP_REGISTER_EXPIRES": "5"}, "SIP_REGISTER_EXPIRES"),
        ({"SIP_REGISTER_EXPIRES": "ten"}, "SIP_REGISTER_EXPIRES"),
    ],
)
def test_bad_register_settings_name_the_setting(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named) as caught:
        load_settings({**TRUNK, "SIP_PASSWORD": "", **env}, dotenv=None)
    assert "pw-secret" not in str(caught.value)


def parse(text: str) -> dict[str, Trunk]:
    providers = parse_providers(tomllib.loads(text), {}, None, source="p.toml")
    return dict(providers.trunks)


def test_providers_file_register_fields() -> None:
    trunks = parse(
        """
        fallback = "a"
        [trunks.a]
        host = "a.example"
        username = "u"
        password = "p"
        register = true
        register_expires = 120
        [trunks.b]
        host = "b.example"
        """
    )
    a, b = trunks["a"], trunks["b"]
    assert (a.register, a.register_expires) == (True, 120)
    assert (b.register, b.register_expires) == (False, 600)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ('register = "yes"', "register must be true or false"),
        ("register = true", "register = true needs a username"),
        ('username = "u"\nregister = true\nregister_expires = 10', "register_expires must be"),
    ],
)
def test_bad_register_fields(fields: str, message: str) -> None:
    text = f'fallback = "a"\n[trunks.a]\nhost = "a.example"\n{fields}\n'
    with pytest.raises(ProvidersError, match=message) as caught:
        parse(text)
    assert "trunk 'a'" in str(caught.value)
