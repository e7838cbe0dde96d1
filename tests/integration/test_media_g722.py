"""G.722 toward the trunk: relayed untouched when the browser speaks it too, converted from Opus."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.integration.client import connected_client
from tests.integration.conftest import SipagentFactory, Stack, TrunkFactory, start_stack
from tests.integration.test_media_paths import (
    _assert_ended_cleanly,
    assert_tone,
    media_log,
    media_started,
)

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from start_stack(tmp_path_factory.mktemp("g722-stack"), SIP_CODECS="G722,PCMU")


@pytest.mark.parametrize(("codec", "path"), [("G722", "passthrough"), ("opus", "transcoding")])
async def test_g722_trunk(
    stack: Stack, sipagent: SipagentFactory, trunk: TrunkFactory, codec: str, path: str
) -> None:
    # sipp checks the INVITE offers G722/8000 as 9, first; it answers G.722 and
    # echoes the packets as they came.
    sipp = trunk("answer_g722_echo_bye.xml")
    sipagent(sipp.port)
    since = len(media_log(stack))
    client = await connected_client(stack.base_url, codec)
    try:
        await asyncio.sleep(1.0)
        await assert_tone(client, stack, f"through a G.722 trunk from {codec}")
        started = await media_started(stack, since)
        assert (started[2], started[4], started[5]) == ("G722/9", codec, path), started[0]
        await client.hangup()
        assert (await client.expect("ended"))["cause"] == "normal"
        assert await sipp.wait(10) == 0, f"{sipp.messages()}\n{stack.logs()}"
        await _assert_ended_cleanly(stack, since, started[1], path)
    finally:
        await client.close()
