"""Interop rows that need TLS (SIP_TRANSPORT=tls, SIP_TLS_CA) and REGISTER
(SIP_REGISTER=true, ``bridge registrations``): kamailio's TLS listener with a
CA the test makes, baresip's TLS listener, and the bridge's own registration
in kamailio's location table.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.certs import TlsFiles, make_tls
from tests.integration.client import BridgeClient
from tests.integration.conftest import SipagentFactory, Stack
from tests.integration.harness import TRUNK_PASSWORD, TRUNK_USER, service_env
from tests.integration.sip_peers import REALM, Baresip, Kamailio
from tests.integration.test_interop import (
    PHONE_USER,
    assert_phone_tone,
    call_phone,
    hang_up_and_phone_sees_bye,
    phone_registered_at,
    running_registrar,
    via_kamailio,
)
from tests.integration.test_probe import lines, probe

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return make_tls(tmp_path, ["localhost", REALM])


@pytest.fixture
def tls_registrar(tmp_path: Path, tls: TlsFiles) -> Iterator[Kamailio]:
    """kamailio with a TLS listener whose certificate the test's CA signed."""
    with running_registrar(tmp_path, tls) as kamailio:
        yield kamailio


@pytest.fixture
def registered_phone(tmp_path: Path, tls_registrar: Kamailio) -> Iterator[Baresip]:
    with phone_registered_at(tmp_path, tls_registrar) as baresip:
        yield baresip


@pytest.fixture
def registrar(tmp_path: Path) -> Iterator[Kamailio]:
    kamailio = Kamailio(tmp_path, {TRUNK_USER: TRUNK_PASSWORD})
    try:
        yield kamailio.start()
    finally:
        kamailio.stop()
        print(kamailio.logs())


# --- TLS -----------------------------------------------------------------------------


async def test_call_over_tls_through_kamailio(
    stack: Stack,
    sipagent: SipagentFactory,
    tls: TlsFiles,
    tls_registrar: Kamailio,
    registered_phone: Baresip,
) -> None:
    sipagent(
        tls_registrar.tls_port,
        transport="tls",
        SIP_DOMAIN=REALM,
        SIP_TLS_CA=str(tls.ca),
    )
    client = await call_phone(stack)
    try:
        await assert_phone_tone(client, stack.logs(), tls_registrar.logs())
        await hang_up_and_phone_sees_bye(client, registered_phone)
        notices = tls_registrar.notices()
        assert "407 to INVITE from bridge via tls" in notices, notices
        assert f"INVITE authorized as {TRUNK_USER} via tls" in notices, notices
        assert "in-dialog BYE relayed via tls" in notices, notices
        assert TRUNK_PASSWORD not in stack.full_logs()
    finally:
        await client.close()


async def test_tls_with_an_untrusted_certificate_fails_clearly(
    stack: Stack,
    sipagent: SipagentFactory,
    tmp_path: Path,
    tls_registrar: Kamailio,
    registered_phone: Baresip,
) -> None:
    # Another CA than the one that signed kamailio's certificate.
    other = make_tls(tmp_path, ["localhost", REALM], name="other")
    sipagent(
        tls_registrar.tls_port,
        transport="tls",
        SIP_DOMAIN=REALM,
        SIP_TLS_CA=str(other.ca),
    )
    client = await BridgeClient(stack.base_url).connect()
    try:
        await client.offer(codec="PCMU", destination=PHONE_USER)
        ended = await client.expect("ended", 20)
        assert ended["cause"] != "normal", ended
        assert registered_phone.calls_seen() == 0
        assert not any(line.startswith("INVITE") for line in tls_registrar.notices())
        # The operator reads why in the SIP agent's log: the certificate, not a traceback.
        agent_log = stack.full_logs().lower()
        assert "certificate" in agent_log, stack.logs()
        assert "Traceback" not in stack.full_logs()
    finally:
        await client.close()


async def test_baresip_answers_over_tls(
    stack: Stack, sipagent: SipagentFactory, tmp_path: Path, tls: TlsFiles
) -> None:
    phone = Baresip(tmp_path, user=PHONE_USER, tls=tls)
    try:
        phone.start()
        sipagent(phone.tls_port, transport="tls", SIP_TLS_CA=str(tls.ca))
        client = await call_phone(stack)
        try:
            await asyncio.to_thread(phone.wait_event, "CALL_ESTABLISHED", 5)
            await assert_phone_tone(client, stack.logs(), phone.logs())
            await hang_up_and_phone_sees_bye(client, phone)
            assert "via TLS" in phone.logs(), phone.logs()
        finally:
            await client.close()
    finally:
        phone.stop()
        print(phone.logs())


def test_probe_over_tls_against_kamailio(
    tls_registrar: Kamailio, tls: TlsFiles, tmp_path: Path
) -> None:
    result = probe(
        tmp_path,
        tls_registrar.tls_port,
        transport="tls",
        SIP_DOMAIN=REALM,
        SIP_TLS_CA=str(tls.ca),
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{output}\n{tls_registrar.logs()}"
    steps = lines(result)
    assert list(steps) == ["DNS", "connect", "OPTIONS", "credentials"], output
    assert all(line.startswith("✓ ") for line in steps.values()), output
    assert "accepted (200 OK)" in steps["credentials"], output
    assert f"REGISTER authorized as {TRUNK_USER} via tls" in tls_registrar.notices()


# --- the bridge registering ------------------------------------------------------------


def registrations(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """``bridge registrations`` against the stack's bus."""
    return subprocess.run(
        [str(Path(sys.executable).with_name("bridge")), "registrations", *args],
        env=service_env(stack.nats_url),
        cwd=stack.tmp,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_bridge_registers_at_kamailio(
    stack: Stack, sipagent: SipagentFactory, registrar: Kamailio, transport: str
) -> None:
    via_kamailio(sipagent, registrar, transport=transport, SIP_REGISTER="true")
    contacts = await asyncio.to_thread(registrar.wait_registered, TRUNK_USER, 15)
    assert len(contacts) == 1, contacts
    notices = registrar.notices()
    # Challenged first (401), then accepted with the digest.
    assert f"401 to REGISTER of {TRUNK_USER} via {transport}" in notices, notices
    assert f"REGISTER authorized as {TRUNK_USER} via {transport}" in notices, notices
    result = registrations(stack)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "registered" in result.stdout.lower(), result.stdout
    assert TRUNK_PASSWORD not in result.stdout + stack.full_logs()


async def test_bridge_unregisters_at_shutdown(
    stack: Stack, sipagent: SipagentFactory, registrar: Kamailio
) -> None:
    agent = sipagent(registrar.port, SIP_DOMAIN=REALM, SIP_REGISTER="true")
    await asyncio.to_thread(registrar.wait_registered, TRUNK_USER, 15)
    # SIGTERM: the SIP agent drains and removes its binding (Expires: 0).
    agent.stop()
    assert registrar.registered(TRUNK_USER) == [], registrar.rpc("ul.dump")


async def test_bridge_registration_with_a_wrong_password_is_reported(
    stack: Stack, sipagent: SipagentFactory, registrar: Kamailio
) -> None:
    via_kamailio(sipagent, registrar, SIP_REGISTER="true", SIP_PASSWORD="not-the-password")
    await asyncio.sleep(3)
    assert registrar.registered(TRUNK_USER) == []
    result = registrations(stack)
    # The failure is shown with the registrar's answer (a second 401), never the password.
    assert "401" in result.stdout, result.stdout
    assert "not-the-password" not in result.stdout + stack.full_logs()
