"""The locked bus, sans-I/O: the permission table, the rendered config, the files,
the connect options, and the reaper leaving what it may not publish."""

from __future__ import annotations

import datetime
import functools
import re
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from proto import subjects
from proto.subjects import Source
from services.common import nats_access, nats_auth
from services.common.fleet.reaper import Publish, Reaper, SendBye
from services.common.nats_access import (
    PERMISSIONS,
    SERVICES,
    USERS,
    may_publish,
    may_subscribe,
    render_authorization,
    subject_matches,
)
from services.common.settings import Settings, SettingsError
from tests.unit.fleet.test_reaper import WALL, Fleet, fleet_of, kill, record

CALL = "AbC_12-x"
WORKER = "host.example-123-w0"


def test_subject_matching_follows_nats_wildcards() -> None:
    assert subject_matches("a.*.c", "a.b.c")
    assert not subject_matches("a.*.c", "a.b.d")
    assert not subject_matches("a.*", "a.b.c")
    assert subject_matches("a.>", "a.b.c")
    assert subject_matches("a.>", "a.b")
    assert not subject_matches("a.>", "a")
    assert not subject_matches("a.b", "a.b.c")
    assert not subject_matches("a.b.c", "a.b")
    assert subject_matches("$KV.bridge_calls.>", "$KV.bridge_calls.c1")


# --- what the code does must be allowed -------------------------------------------------

PUBLISHES: dict[Source, list[str]] = {
    "signaling": [
        subjects.media_work(),
        subjects.media_work_for(WORKER),
        subjects.sipagent_work(),
        subjects.call_events(CALL, "signaling"),
        subjects.heartbeat("signaling"),
    ],
    "sipagent": [subjects.call_events(CALL, "sipagent"), subjects.heartbeat("sipagent")],
    "media": [subjects.call_events(CALL, "media"), subjects.heartbeat("media")],
}
SUBSCRIBES: dict[Source, list[tuple[str, str]]] = {
    "signaling": [
        (subjects.call_events(CALL, "media"), ""),
        (subjects.call_events(CALL, "sipagent"), ""),
    ],
    "sipagent": [
        (subjects.sipagent_work(), subjects.SIPAGENT_QUEUE),
        (subjects.registrations(), ""),
        (subjects.call_events(CALL, "signaling"), ""),
        (subjects.call_events(CALL, "media"), ""),
    ],
    "media": [
        (subjects.media_work(), subjects.MEDIA_QUEUE),
        (subjects.media_work_for(WORKER), ""),
        (subjects.call_events(CALL, "signaling"), ""),
        (subjects.call_events(CALL, "sipagent"), ""),
    ],
}


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_may_do_what_its_code_does(service: Source) -> None:
    for subject in PUBLISHES[service]:
        assert may_publish(service, subject), subject
    for subject, queue in [
        *SUBSCRIBES[service],
        (subjects.heartbeats(), ""),
        (subjects.heartbeat("media"), ""),
        (subjects.ready(service), ""),
        ("_INBOX.abc.def", ""),
    ]:
        assert may_subscribe(service, subject, queue), (subject, queue)
    # The call registry, through its KV API.
    for subject in (
        "$KV.bridge_calls.c1",
        "$JS.API.STREAM.INFO.KV_bridge_calls",
        "$JS.API.STREAM.CREATE.KV_bridge_calls",
        "$JS.API.CONSUMER.CREATE.KV_bridge_calls.watcher.$KV.bridge_calls.>",
    ):
        assert may_publish(service, subject), subject
    assert PERMISSIONS[service].responses  # readiness (and registrations) replies


def test_admin_asks_and_hears_replies_only() -> None:
    assert may_publish("admin", subjects.registrations())
    for service in SERVICES:
        assert may_publish("admin", subjects.ready(service))
    assert may_subscribe("admin", "_INBOX.xyz.1")
    assert PERMISSIONS["admin"].subscribe == ("_INBOX.>",)
    assert not PERMISSIONS["admin"].responses
    for subject in (
        subjects.sipagent_work(),
        subjects.media_work(),
        subjects.call_events(CALL, "signaling"),
        subjects.heartbeat("media"),
        "$KV.bridge_calls.c1",
    ):
        assert not may_publish("admin", subject), subject


# --- least privilege ------------------------------------------------------------------


@pytest.mark.parametrize("user", USERS)
def test_only_signaling_places_work(user: str) -> None:
    allowed = user == "signaling"
    for subject in (
        subjects.sipagent_work(),
        subjects.media_work(),
        subjects.media_work_for(WORKER),
    ):
        assert may_publish(user, subject) is allowed, subject


@pytest.mark.parametrize("user", USERS)
@pytest.mark.parametrize("source", SERVICES)
def test_each_call_subject_has_one_publisher(user: str, source: Source) -> None:
    assert may_publish(user, subjects.call_events(CALL, source)) is (user == source)


def test_signaling_cannot_publish_as_the_sip_agent_or_media() -> None:
    assert not may_publish("signaling", "bridge.v1.call.x.sipagent")
    assert not may_publish("signaling", "bridge.v1.call.x.media")
    assert not may_publish("sipagent", "bridge.v1.call.x.media")
    assert not may_publish("media", "bridge.v1.call.x.signaling")


def test_heartbeats_and_ready_are_each_services_own() -> None:
    for user in SERVICES:
        for other in SERVICES:
            assert may_publish(user, subjects.heartbeat(other)) is (user == other)
            assert may_subscribe(user, subjects.ready(other)) is (user == other)
            assert not may_publish(user, subjects.ready(other))  # only admin asks


def test_work_queues_only_in_their_queue_group() -> None:
    assert not may_subscribe("sipagent", subjects.sipagent_work())
    assert not may_subscribe("sipagent", subjects.sipagent_work(), "other")
    assert not may_subscribe("media", subjects.media_work())
    assert not may_subscribe("signaling", subjects.sipagent_work(), subjects.SIPAGENT_QUEUE)
    assert not may_subscribe("media", subjects.sipagent_work(), subjects.SIPAGENT_QUEUE)
    assert not may_subscribe("sipagent", subjects.media_work(), subjects.MEDIA_QUEUE)


def test_only_the_sip_agent_answers_registrations() -> None:
    for user in USERS:
        assert may_subscribe(user, subjects.registrations()) is (user == "sipagent")


def test_the_limits_bucket_is_signalings_and_no_bucket_can_be_deleted() -> None:
    for user in USERS:
        allowed = user == "signaling"
        assert may_publish(user, "$KV.bridge-limits.k") is allowed
        assert may_publish(user, "$JS.API.STREAM.INFO.KV_bridge-limits") is allowed
        for stream in ("KV_bridge_calls", "KV_bridge-limits", "OTHER"):
            for verb in ("DELETE", "PURGE", "UPDATE"):
                assert not may_publish(user, f"$JS.API.STREAM.{verb}.{stream}")
        assert not may_publish(user, "$KV.other.k")
        assert not may_publish(user, "$JS.API.STREAM.CREATE.OTHER")
        assert not may_publish(user, "$SYS.REQ.SERVER.PING")
        assert not may_publish(user, "_INBOX.someone.else")  # replies go by allow_responses


def test_nobody_may_subscribe_to_everything() -> None:
    for user in USERS:
        for subject in ("bridge.v1.anything", "$JS.API.STREAM.LIST", "x"):
            assert not may_subscribe(user, subject)
    assert not may_publish("nobody", subjects.media_work())
    assert not may_subscribe("nobody", "_INBOX.x")


# --- the rendered config --------------------------------------------------------------


def _user_blocks(config: str) -> dict[str, str]:
    blocks = re.findall(r'^    \{\n      user: "(\w+)"\n(.*?)\n    \}$', config, re.S | re.M)
    return dict(blocks)


def _allow(block: str, kind: str) -> list[str]:
    match = re.search(rf"{kind}: \{{allow: \[\n(.*?)\n\s*\]\}}", block, re.S)
    assert match, block
    return [line.strip().strip('"') for line in match.group(1).splitlines()]


def test_rendered_config_is_the_table_with_variables_for_passwords() -> None:
    config = render_authorization()
    assert config.count("authorization {") == 1
    blocks = _user_blocks(config)
    assert list(blocks) == list(USERS)
    for user, block in blocks.items():
        permissions = PERMISSIONS[user]  # type: ignore[index]
        assert f"password: $NATS_{user.upper()}_PASSWORD\n" in block
        assert _allow(block, "publish") == list(permissions.publish)
        assert _allow(block, "subscribe") == list(permissions.subscribe)
        assert ("allow_responses: true" in block) is permissions.responses


def test_rendered_config_with_passwords_writes_them_quoted() -> None:
    passwords = nats_access.new_passwords()
    config = render_authorization(passwords)
    for user in USERS:
        assert f'password: "{passwords[user]}"' in _user_blocks(config)[user]
    assert "$NATS_" not in config


@pytest.mark.parametrize(
    "bad", ["", "short1", "-leadingDash012345", "1234567890abcdefg", 'a"b' * 8]
)
def test_a_bad_password_is_refused_without_being_echoed(bad: str) -> None:
    passwords = dict(nats_access.new_passwords(), media=bad)
    with pytest.raises(ValueError) as caught:
        render_authorization(passwords)  # type: ignore[arg-type]
    assert "media" in str(caught.value)
    if bad:
        assert bad not in str(caught.value)


def test_new_passwords_differ_and_suit_a_config_and_an_environment() -> None:
    first, second = nats_access.new_passwords(), nats_access.new_passwords()
    assert set(first) == set(USERS)
    assert len(set(first.values()) | set(second.values())) == 2 * len(USERS)
    for password in first.values():
        assert len(password) == nats_access.PASSWORD_LENGTH
        assert nats_access.valid_password(password)
        assert password[0].isalpha() and password.isalnum()


def test_env_lines_name_each_users_variable() -> None:
    passwords = nats_access.new_passwords()
    lines = nats_access.render_env(passwords).splitlines()
    assert lines == [f"NATS_{u.upper()}_PASSWORD={passwords[u]}" for u in USERS]


# --- files ------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_embedded_files_are_private(tmp_path: Path) -> None:
    directory = tmp_path / "data" / "nats-auth"
    directory.mkdir(parents=True, mode=0o755)
    stale = nats_access.password_file(directory, "media")
    stale.write_text("old\n")
    stale.chmod(0o644)
    passwords = nats_access.new_passwords()
    config = nats_access.write_embedded(directory, passwords)
    assert _mode(directory) == 0o700
    assert config == directory / "auth.conf"
    assert _mode(config) == 0o600
    assert config.read_text() == render_authorization(passwords)
    for user in USERS:
        path = nats_access.password_file(directory, user)
        assert _mode(path) == 0o600
        assert path.read_text() == passwords[user] + "\n"


# --- connect options --------------------------------------------------------------------


def _pem_pair(tmp_path: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_no_settings_no_options() -> None:
    assert nats_auth.connect_options(Settings()) == {}
    assert "no credentials" in nats_auth.describe(Settings())


def test_user_and_password_and_creds() -> None:
    settings = Settings(nats_user="signaling", nats_password="Pw0123456789abcdef")
    assert nats_auth.connect_options(settings) == {
        "user": "signaling",
        "password": "Pw0123456789abcdef",
    }
    assert nats_auth.describe(settings) == "NATS_USER=signaling"
    assert "Pw0123456789abcdef" not in repr(settings)
    creds = Settings(nats_creds="/run/secrets/bridge.creds")
    assert nats_auth.connect_options(creds) == {"user_credentials": "/run/secrets/bridge.creds"}
    assert "bridge.creds" in nats_auth.describe(creds)


def test_tls_context_from_ca_and_client_certificate(tmp_path: Path) -> None:
    ca, _ = _pem_pair(tmp_path, "ca")
    cert, key = _pem_pair(tmp_path, "client")
    options = nats_auth.connect_options(
        Settings(nats_tls_ca=str(ca), nats_tls_cert=str(cert), nats_tls_key=str(key))
    )
    context = options["tls"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "ca"),),)]
    assert nats_auth.tls_context(Settings()) is None


def test_bad_tls_files_name_the_setting_not_the_content(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate SECRET-LOOKING-TEXT")
    with pytest.raises(SettingsError, match="NATS_TLS_CA") as caught:
        nats_auth.tls_context(Settings(nats_tls_ca=str(junk)))
    assert "SECRET-LOOKING-TEXT" not in str(caught.value)
    cert, _ = _pem_pair(tmp_path, "client")
    _, other_key = _pem_pair(tmp_path, "other")
    with pytest.raises(SettingsError, match="NATS_TLS_CERT"):
        nats_auth.tls_context(Settings(nats_tls_cert=str(cert), nats_tls_key=str(other_key)))


def test_embedded_admin_only_for_a_local_bridge_up(tmp_path: Path) -> None:
    directory = tmp_path / nats_auth.EMBEDDED_DIR
    passwords = nats_access.new_passwords()
    nats_access.write_embedded(directory, passwords)
    local = Settings(data_dir=str(tmp_path), nats_url="nats://127.0.0.1:4222")
    assert nats_auth.embedded_admin(local) == {"user": "admin", "password": passwords["admin"]}
    remote = Settings(data_dir=str(tmp_path), nats_url="nats://127.0.0.1:4222,nats://nats:4222")
    assert nats_auth.embedded_admin(remote) is None
    own = Settings(data_dir=str(tmp_path), nats_user="ops", nats_password="x")
    assert nats_auth.embedded_admin(own) is None
    assert nats_auth.embedded_admin(Settings(data_dir=str(tmp_path / "none"))) is None


# --- the reaper on a locked bus ------------------------------------------------------


def _reaper(me: tuple[Source, str]) -> tuple[Fleet, Reaper]:
    fleet = fleet_of(me)
    reaper = fleet.reaper(may_publish=functools.partial(may_publish, me[0]))
    return fleet, reaper


@pytest.mark.parametrize("survivor", [("signaling", "g2"), ("sipagent", "s2")])
def test_a_dead_media_workers_call_is_left_to_media(survivor: tuple[Source, str]) -> None:
    fleet, reaper = _reaper(survivor)
    kill(fleet, "media", "m1")
    fleet.advance(4)
    assert reaper.plan(record(), fleet.now, WALL) is None


def test_a_surviving_media_worker_ends_a_dead_ones_call() -> None:
    fleet, reaper = _reaper(("media", "m2"))
    kill(fleet, "media", "m1")
    fleet.advance(4)
    plan = reaper.plan(record(), fleet.now, WALL)
    assert plan is not None
    (action,) = plan.actions
    assert isinstance(action, Publish) and action.subject == subjects.call_events("c1", "media")


def test_a_dead_sip_agents_call_is_a_sip_agents_even_after_the_orphan_grace() -> None:
    fleet, reaper = _reaper(("media", "m2"))
    kill(fleet, "sipagent", "s1")
    fleet.advance(60)
    assert reaper.plan(record(), fleet.now, WALL) is None
    fleet, reaper = _reaper(("sipagent", "s2"))
    kill(fleet, "sipagent", "s1")
    fleet.advance(4)
    plan = reaper.plan(record(), fleet.now, WALL)
    assert plan is not None and isinstance(plan.actions[0], SendBye)


# --- bridge nats-config -------------------------------------------------------------------


def test_bridge_nats_config_prints_fresh_passwords_or_the_server_block(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from services.cli import main

    assert main(["nats-config"]) == 0
    first = capsys.readouterr().out
    assert main(["nats-config"]) == 0
    second = capsys.readouterr().out
    for output in (first, second):
        lines = dict(line.split("=", 1) for line in output.splitlines())
        assert list(lines) == [nats_access.password_env(u) for u in USERS]
        assert all(nats_access.valid_password(p) for p in lines.values())
    assert first != second
    assert main(["nats-config", "--server"]) == 0
    assert capsys.readouterr().out == render_authorization()
