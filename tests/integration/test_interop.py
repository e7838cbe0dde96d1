"""The bridge against real SIP software: baresip as the phone that answers,
kamailio as the registrar and authenticating proxy in front of it.

Each row of docs/interop.md that names this file is one test here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.integration.certs import TlsFiles
from tests.integration.client import TONE_HZ, BridgeClient
from tests.integration.conftest import SipagentFactory, Stack
from tests.integration.harness import TRUNK_PASSWORD, TRUNK_USER
from tests.integration.sip_peers import PHONE_TONE_HZ, REALM, Baresip, Kamailio
from tests.integration.test_probe import lines, probe

pytestmark = pytest.mark.timeout(90)

PHONE_USER = "alice"
PHONE_PASSWORD = "al1ce:ph0ne"


@pytest.fixture
def phone(tmp_path: Path) -> Iterator[Baresip]:
    """baresip listening for calls, no registrar: the bridge calls it directly."""
    baresip = Baresip(tmp_path, user=PHONE_USER)
    try:
        yield baresip.start()
    finally:
        baresip.stop()
        # Shown with the test's output when it fails.
        print(baresip.logs())


@contextlib.contextmanager
def running_registrar(tmp: Path, tls: TlsFiles | None = None) -> Iterator[Kamailio]:
    """kamailio knowing the bridge's trunk account and the phone's (TLS listener if ``tls``)."""
    kamailio = Kamailio(tmp, {TRUNK_USER: TRUNK_PASSWORD, PHONE_USER: PHONE_PASSWORD}, tls=tls)
    try:
        yield kamailio.start()
    finally:
        kamailio.stop()
        print(kamailio.logs())


@contextlib.contextmanager
def phone_registered_at(tmp: Path, registrar: Kamailio) -> Iterator[Baresip]:
    """baresip registered at ``registrar`` (401, digest, 200)."""
    baresip = Baresip(
        tmp,
        user=PHONE_USER,
        registrar=f"127.0.0.1:{registrar.port}",
        password=PHONE_PASSWORD,
    )
    try:
        baresip.start()
        registrar.wait_registered(PHONE_USER)
        yield baresip
    finally:
        baresip.stop()
        print(baresip.logs())


@pytest.fixture
def registrar(tmp_path: Path) -> Iterator[Kamailio]:
    with running_registrar(tmp_path) as kamailio:
        yield kamailio


@pytest.fixture
def registered_phone(tmp_path: Path, registrar: Kamailio) -> Iterator[Baresip]:
    with phone_registered_at(tmp_path, registrar) as baresip:
        yield baresip


def via_kamailio(
    sipagent: SipagentFactory, kamailio: Kamailio, transport: str = "udp", **overrides: str
) -> None:
    """A SIP agent whose trunk is kamailio, with the bridge's account there."""
    settings = {"SIP_DOMAIN": REALM, "SIP_USERNAME": TRUNK_USER, "SIP_PASSWORD": TRUNK_PASSWORD}
    settings.update(overrides)
    sipagent(kamailio.port, transport=transport, **settings)


async def call_phone(stack: Stack, codec: str = "PCMU") -> BridgeClient:
    client = await BridgeClient(stack.base_url).connect()
    await client.offer(codec=codec, destination=PHONE_USER)
    await client.accept_answer()
    await client.expect("connected")
    return client


async def assert_phone_tone(client: BridgeClient, *logs: str) -> None:
    """The phone's sine, not the client's own tone, is what the client hears."""
    await asyncio.sleep(1.0)
    client.clear_audio()
    await asyncio.sleep(2.0)
    peak, level = client.dominant_frequency()
    assert abs(peak - PHONE_TONE_HZ) < 40, (
        f"the phone's {PHONE_TONE_HZ} Hz did not arrive: peak {peak} Hz\n" + "\n".join(logs)
    )
    assert level > 300, f"the phone's audio is too quiet (rms {level})"


def assert_phone_heard_the_browser(phone: Baresip) -> None:
    """The client's 1000 Hz tone is what the phone recorded (after the call, file closed)."""
    pcm, rate = phone.heard()
    assert pcm.size > rate, f"the phone recorded {pcm.size} samples\n{phone.logs()}"
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(pcm.size)))
    spectrum[0] = 0
    peak = float(np.argmax(spectrum) * rate / pcm.size)
    assert abs(peak - TONE_HZ) < 40, f"the phone heard {peak} Hz, not the browser's {TONE_HZ}"


async def hang_up_and_phone_sees_bye(client: BridgeClient, phone: Baresip) -> None:
    await client.hangup()
    ended = await client.expect("ended")
    assert ended["cause"] == "normal", ended
    closed = await asyncio.to_thread(phone.wait_event, "CALL_CLOSED", 10)
    # baresip names why the call closed: a BYE from the far end ends it with "Connection reset".
    assert "reset" in str(closed.get("param", "")).lower(), closed


# --- bridge -> baresip directly ----------------------------------------------------


async def test_baresip_answers_and_its_tone_reaches_the_browser(
    stack: Stack, sipagent: SipagentFactory, phone: Baresip
) -> None:
    sipagent(phone.port)
    client = await call_phone(stack, codec="opus")
    try:
        await asyncio.to_thread(phone.wait_event, "CALL_ESTABLISHED", 5)
        await assert_phone_tone(client, stack.logs(), phone.logs())
        await hang_up_and_phone_sees_bye(client, phone)
        assert_phone_heard_the_browser(phone)
    finally:
        await client.close()


async def test_baresip_hangs_up_and_the_browser_sees_ended(
    stack: Stack, sipagent: SipagentFactory, phone: Baresip
) -> None:
    sipagent(phone.port)
    client = await call_phone(stack)
    try:
        await asyncio.to_thread(phone.wait_event, "CALL_ESTABLISHED", 5)
        phone.hangup()
        ended = await client.expect("ended", 10)
        assert ended["cause"] == "remote_hangup", ended
        await asyncio.to_thread(phone.wait_event, "CALL_CLOSED", 5)
    finally:
        await client.close()


# --- bridge -> kamailio -> baresip -------------------------------------------------


async def test_call_through_kamailio_answers_407_and_reaches_the_registered_phone(
    stack: Stack, sipagent: SipagentFactory, registrar: Kamailio, registered_phone: Baresip
) -> None:
    via_kamailio(sipagent, registrar)
    client = await call_phone(stack)
    try:
        await assert_phone_tone(client, stack.logs(), registrar.logs())
        await hang_up_and_phone_sees_bye(client, registered_phone)
        assert_phone_heard_the_browser(registered_phone)
        notices = registrar.notices()
        assert f"407 to INVITE from {TRUNK_USER} via udp" in notices, notices
        assert f"INVITE authorized as {TRUNK_USER} via udp" in notices, notices
        # The BYE took the record-routed path, through the proxy.
        assert "in-dialog BYE relayed via udp" in notices, notices
        assert TRUNK_PASSWORD not in stack.full_logs()
    finally:
        await client.close()


async def test_wrong_password_at_kamailio_ends_the_call_and_the_phone_never_rings(
    stack: Stack, sipagent: SipagentFactory, registrar: Kamailio, registered_phone: Baresip
) -> None:
    via_kamailio(sipagent, registrar, SIP_PASSWORD="not-the-password")
    client = await BridgeClient(stack.base_url).connect()
    try:
        await client.offer(codec="PCMU", destination=PHONE_USER)
        ended = await client.expect("ended", 15)
        assert ended["cause"] == "rejected", ended
        assert ended["status"] == 407, ended
        notices = registrar.notices()
        assert not any(line.startswith("INVITE authorized") for line in notices), notices
        assert not any(line.startswith("INVITE relayed") for line in notices), notices
        assert registered_phone.calls_seen() == 0
    finally:
        await client.close()


async def test_call_over_tcp_through_kamailio(
    stack: Stack, sipagent: SipagentFactory, registrar: Kamailio, registered_phone: Baresip
) -> None:
    via_kamailio(sipagent, registrar, transport="tcp")
    client = await call_phone(stack)
    try:
        await assert_phone_tone(client, stack.logs(), registrar.logs())
        await hang_up_and_phone_sees_bye(client, registered_phone)
        notices = registrar.notices()
        assert f"INVITE authorized as {TRUNK_USER} via tcp" in notices, notices
        assert "in-dialog BYE relayed via tcp" in notices, notices
    finally:
        await client.close()


# --- bridge probe -> kamailio ------------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_probe_reports_each_step_against_kamailio(
    registrar: Kamailio, tmp_path: Path, transport: str
) -> None:
    result = probe(tmp_path, registrar.port, transport=transport, SIP_DOMAIN=REALM)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{output}\n{registrar.logs()}"
    steps = lines(result)
    assert list(steps) == ["DNS", "connect", "OPTIONS", "credentials"], output
    assert all(line.startswith("✓ ") for line in steps.values()), output
    assert "200 OK" in steps["OPTIONS"]
    assert "Server: kamailio" in steps["OPTIONS"], output
    assert "accepted (200 OK)" in steps["credentials"], output
    assert TRUNK_PASSWORD not in output
    notices = registrar.notices()
    assert f"REGISTER authorized as {TRUNK_USER} via {transport}" in notices, notices
    # Expires: 0 leaves no binding behind.
    assert registrar.registered(TRUNK_USER) == []


def test_probe_wrong_password_against_kamailio(registrar: Kamailio, tmp_path: Path) -> None:
    result = probe(tmp_path, registrar.port, SIP_DOMAIN=REALM, SIP_PASSWORD="not-the-password")
    output = result.stdout + result.stderr
    assert result.returncode == 1, f"{output}\n{registrar.logs()}"
    steps = lines(result)
    assert steps["OPTIONS"].startswith("✓ "), output
    assert steps["credentials"].startswith("✗ credentials: refused (401 Unauthorized)"), output
    assert "not-the-password" not in output
