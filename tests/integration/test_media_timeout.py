"""RTP_TIMEOUT: a call whose trunk audio never starts is ended; a call on hold is not."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.integration.client import connected_client
from tests.integration.conftest import SipagentFactory, Stack, TrunkFactory, start_stack

pytestmark = pytest.mark.timeout(90)

RTP_TIMEOUT = 2


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from start_stack(tmp_path_factory.mktemp("stack"), RTP_TIMEOUT=str(RTP_TIMEOUT))


async def test_silent_trunk_gets_bye_and_the_page_media_timeout(
    stack: Stack, sipagent: SipagentFactory, trunk: TrunkFactory
) -> None:
    sipp = trunk("answer_silent_until_bye.xml")
    sipagent(sipp.port)
    client = await connected_client(stack.base_url, "PCMU")
    try:
        ended = await client.expect("ended", timeout=RTP_TIMEOUT + 10)
        assert ended["cause"] == "media_timeout", stack.logs()
        # sipp's scenario ends only once it has the BYE and answered it.
        assert await sipp.wait(10) == 0, f"{sipp.messages()}\n{stack.logs()}"
        assert "no RTP from the trunk" in stack.logs()
    finally:
        await client.close()


async def test_a_call_on_hold_outlives_the_timeout(
    stack: Stack, sipagent: SipagentFactory, trunk: TrunkFactory
) -> None:
    # The trunk holds us: we send it nothing, so its echo sends nothing back.
    sipp = trunk("far_end_hold_until_bye.xml")
    sipagent(sipp.port)
    client = await connected_client(stack.base_url, "PCMU")
    try:
        held = await client.expect("hold_changed")
        assert held["remote"] is True
        await asyncio.sleep(3 * RTP_TIMEOUT)
        await client.send({"type": "hangup"})
        ended = await client.expect("ended")
        assert ended["cause"] == "normal", stack.logs()
        assert await sipp.wait(10) == 0, f"{sipp.messages()}\n{stack.logs()}"
    finally:
        await client.close()
