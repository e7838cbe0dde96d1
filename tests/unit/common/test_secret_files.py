"""Passwords in files (mounted Secrets): ``SIP_PASSWORD_FILE``, a trunk's ``password_file``."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.providers import ProvidersError, load_providers
from services.common.settings import SettingsError, load_settings

SECRET = "pa:ss#w@rd"


def secret_file(tmp_path: Path, content: str | bytes, name: str = "secret") -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def trunk_env(**extra: str) -> dict[str, str]:
    return {"SIP_TRUNK_HOST": "sip.example.com", "SIP_USERNAME": "bridge", **extra}


@pytest.mark.parametrize("content", [SECRET, SECRET + "\n", SECRET + "\r\n", SECRET + "\n\n"])
def test_sip_password_file_is_read_without_its_final_newline(tmp_path: Path, content: str) -> None:
    path = secret_file(tmp_path, content)
    settings = load_settings(trunk_env(SIP_PASSWORD_FILE=str(path)), None)
    assert settings.sip_password == SECRET
    assert settings.default_trunk is not None and settings.default_trunk.password == SECRET
    assert SECRET not in repr(settings)


def test_only_line_ends_are_stripped(tmp_path: Path) -> None:
    path = secret_file(tmp_path, " two words \n")
    settings = load_settings(trunk_env(SIP_PASSWORD_FILE=str(path)), None)
    assert settings.sip_password == " two words "


def test_an_empty_file_setting_falls_back_to_the_password(tmp_path: Path) -> None:
    env = trunk_env(SIP_PASSWORD=SECRET, SIP_PASSWORD_FILE="  ")
    assert load_settings(env, None).sip_password == SECRET


@pytest.mark.parametrize(
    "make",
    [
        lambda tmp: tmp / "missing",
        lambda tmp: tmp,  # a directory
        lambda tmp: secret_file(tmp, b"\xff\xfe" + SECRET.encode()),  # not UTF-8
    ],
    ids=["missing", "directory", "not-utf8"],
)
def test_an_unreadable_file_names_the_setting_never_the_content(
    tmp_path: Path, make: object
) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(SettingsError) as caught:
        load_settings(trunk_env(SIP_PASSWORD_FILE=str(path)), None)
    message = str(caught.value)
    assert message.startswith("SIP_PASSWORD_FILE ")
    assert str(path) in message
    assert SECRET not in message


def test_password_and_password_file_together_are_refused(tmp_path: Path) -> None:
    path = secret_file(tmp_path, SECRET)
    env = trunk_env(SIP_PASSWORD="other", SIP_PASSWORD_FILE=str(path))
    with pytest.raises(SettingsError, match="set SIP_PASSWORD or SIP_PASSWORD_FILE, not both"):
        load_settings(env, None)


def test_a_password_from_a_file_still_needs_a_username(tmp_path: Path) -> None:
    path = secret_file(tmp_path, SECRET)
    env = {"SIP_TRUNK_HOST": "sip.example.com", "SIP_PASSWORD_FILE": str(path)}
    with pytest.raises(SettingsError, match="SIP_USERNAME is required") as caught:
        load_settings(env, None)
    assert SECRET not in str(caught.value)


def test_nats_password_file_works_the_same_way(tmp_path: Path) -> None:
    path = secret_file(tmp_path, "nats-secret\n")
    settings = load_settings({"NATS_USER": "bridge", "NATS_PASSWORD_FILE": str(path)}, None)
    assert settings.nats_password == "nats-secret"
    with pytest.raises(SettingsError, match=r"^NATS_PASSWORD_FILE "):
        load_settings({"NATS_USER": "bridge", "NATS_PASSWORD_FILE": str(tmp_path / "no")}, None)


# --- a trunk's password_file ------------------------------------------------------------


def providers_file(tmp_path: Path, trunk: str) -> Path:
    path = tmp_path / "providers.toml"
    path.write_text(f'fallback = "ai"\n\n[trunks.ai]\nhost = "sip.ai.example"\n{trunk}')
    return path


def test_a_trunk_password_file_is_read_without_its_final_newline(tmp_path: Path) -> None:
    secret = secret_file(tmp_path, SECRET + "\n")
    path = providers_file(tmp_path, f'username = "agent"\npassword_file = "{secret}"\n')
    trunk = load_providers(path, {}).trunks["ai"]
    assert trunk.password == SECRET
    assert trunk.password_file == str(secret)
    assert SECRET not in repr(trunk)
    settings = load_settings({"PROVIDERS_FILE": str(path)}, None)
    assert settings.providers.trunks["ai"].password == SECRET
    assert settings.providers.missing_secrets() == []


@pytest.mark.parametrize("unreadable", ["missing", "not-utf8"])
def test_an_unreadable_trunk_password_file_names_the_trunk_never_the_content(
    tmp_path: Path, unreadable: str
) -> None:
    secret = tmp_path / "missing"
    if unreadable == "not-utf8":
        secret = secret_file(tmp_path, b"\xff" + SECRET.encode())
    path = providers_file(tmp_path, f'username = "agent"\npassword_file = "{secret}"\n')
    with pytest.raises(SettingsError) as caught:
        load_settings({"PROVIDERS_FILE": str(path)}, None)
    message = str(caught.value)
    assert "trunk 'ai'" in message and "password_file" in message and str(secret) in message
    assert SECRET not in message


@pytest.mark.parametrize(
    "other", ['password = "inline"', 'password_env = "AI_PASSWORD"'], ids=["password", "env"]
)
def test_password_file_with_another_password_source_is_refused(tmp_path: Path, other: str) -> None:
    secret = secret_file(tmp_path, SECRET)
    path = providers_file(tmp_path, f'username = "agent"\n{other}\npassword_file = "{secret}"\n')
    with pytest.raises(ProvidersError, match="trunk 'ai'") as caught:
        load_providers(path, {"AI_PASSWORD": "from-env"})
    assert SECRET not in str(caught.value) and "inline" not in str(caught.value)


def test_a_trunk_password_file_needs_a_username(tmp_path: Path) -> None:
    secret = secret_file(tmp_path, SECRET)
    path = providers_file(tmp_path, f'password_file = "{secret}"\n')
    with pytest.raises(ProvidersError, match="username is required") as caught:
        load_providers(path, {})
    assert SECRET not in str(caught.value)
