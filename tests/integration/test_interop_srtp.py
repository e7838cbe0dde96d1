"""SRTP toward the trunk (SDES, RFC 4568) against baresip that takes SRTP or nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import SipagentFactory, Stack, start_stack
from tests.integration.sip_peers import Baresip
from tests.integration.test_interop import (
    PHONE_USER,
    assert_phone_heard_the_browser,
    assert_phone_tone,
    call_phone,
    hang_up_and_phone_sees_bye,
)

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from start_stack(tmp_path_factory.mktemp("stack"), SIP_SRTP="required")


@pytest.fixture
def secure_phone(tmp_path: Path) -> Iterator[Baresip]:
    baresip = Baresip(tmp_path, user=PHONE_USER, mediaenc="srtp-mand")
    try:
        yield baresip.start()
    finally:
        baresip.stop()
        print(baresip.logs())


async def test_srtp_required_tone_both_ways_with_a_phone_that_demands_it(
    stack: Stack, sipagent: SipagentFactory, secure_phone: Baresip
) -> None:
    sipagent(secure_phone.port, SIP_SRTP="required")
    client = await call_phone(stack, codec="PCMU")
    try:
        await asyncio.to_thread(secure_phone.wait_event, "CALL_ESTABLISHED", 5)
        await assert_phone_tone(client, stack.logs(), secure_phone.logs())
        await hang_up_and_phone_sees_bye(client, secure_phone)
        assert_phone_heard_the_browser(secure_phone)
    finally:
        await client.close()
    logs = stack.logs()
    assert "SRTP to the trunk keyed (AES_CM_128_HMAC_SHA1_80)" in logs, logs
    # The keys travel only in the SDP: never in a log line (DEBUG included).
    assert "inline:" not in logs
    assert "keys travel in the SDP in clear" in logs  # SRTP over UDP: said once at start


async def test_srtp_required_and_a_phone_without_it_never_connects(
    stack: Stack, sipagent: SipagentFactory, tmp_path: Path
) -> None:
    plain = Baresip(tmp_path, user=PHONE_USER).start()
    try:
        sipagent(plain.port, SIP_SRTP="required")
        from tests.integration.client import BridgeClient

        client = await BridgeClient(stack.base_url).connect()
        try:
            await client.offer(codec="PCMU", destination=PHONE_USER)
            await client.accept_answer()
            ended = await client.expect("ended", timeout=20)
            # The phone refuses RTP/SAVP it cannot do (488), or answers without keys
            # and the bridge ends the call: no audio ever flows in clear.
            assert ended["cause"] in ("rejected", "media_failed"), ended
        finally:
            await client.close()
    finally:
        plain.stop()
        print(plain.logs())
