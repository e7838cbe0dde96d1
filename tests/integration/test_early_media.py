"""Early media: a 183 with SDP lets the trunk's audio reach the browser before the answer."""

from __future__ import annotations

import asyncio
import re

import pytest

from tests.integration.client import TONE_HZ, BridgeClient
from tests.integration.conftest import SipagentFactory, Stack, TrunkFactory

pytestmark = pytest.mark.timeout(90)

EARLY_MS = 4000
"How long the trunk plays early media before its final response."


async def assert_tone(client: BridgeClient, stack: Stack, when: str) -> None:
    """The caller's own tone, echoed by sipp, is what the browser hears now."""
    client.clear_audio()
    await asyncio.sleep(1.5)
    peak, level = client.dominant_frequency()
    assert abs(peak - TONE_HZ) < 40, f"no tone {when}: peak {peak} Hz\n{stack.logs()}"
    assert level > 300, f"echoed audio too quiet {when} (rms {level})"


SAME_ANSWER = {
    "answer_version": "2353687637",
    "answer_port": "[media_port]",
    "answer_pt": "0",
    "answer_codec": "PCMU",
}
MOVED_ANSWER = {
    # sipp -rtp_echo echoes on [media_port+2] too: a 200 that moves the media
    # there (and switches codec) is heard only if the trunk leg follows it.
    "answer_version": "2353687638",
    "answer_port": "[media_port+2]",
    "answer_pt": "8",
    "answer_codec": "PCMA",
}


@pytest.mark.parametrize(
    ("codec", "answer"),
    [("opus", SAME_ANSWER), ("PCMU", SAME_ANSWER), ("opus", MOVED_ANSWER)],
    ids=["opus-same-sdp", "pcmu-same-sdp", "opus-moved-sdp"],
)
async def test_early_media_reaches_browser_before_answer(
    stack: Stack,
    sipagent: SipagentFactory,
    trunk: TrunkFactory,
    codec: str,
    answer: dict[str, str],
) -> None:
    sipp = trunk("early_media.xml", early_ms=str(EARLY_MS), **answer)
    sipagent(sipp.port, INVITE_TIMEOUT="30")
    client = await BridgeClient(stack.base_url).connect()
    try:
        await client.offer(codec=codec)
        await client.accept_answer()
        ringing = await client.expect("ringing")
        assert ringing.get("early_media") is True, ringing
        # ICE/DTLS settling and the jitter buffer, then listen during the 183 phase.
        await asyncio.sleep(1.0)
        await assert_tone(client, stack, "during early media")
        assert not any(m["type"] == "connected" for m in client.messages), (
            f"answered too soon to prove early media: {client.messages}"
        )
        await client.expect("connected", 10)
        await asyncio.sleep(0.5)
        await assert_tone(client, stack, "after the answer")
        # The trunk leg followed a 200 that moved the media, and only then.
        moved = re.findall(
            r"media moved: trunk (\S+) at 127\.0\.0\.1:(\d+)$", stack.full_logs(), re.M
        )
        if answer is MOVED_ANSWER:
            assert ("PCMA/8", str(sipp.media_port + 2)) in moved, stack.logs()
        else:
            assert all(port != str(sipp.media_port) for _, port in moved), moved
        await client.hangup()
        ended = await client.expect("ended")
        assert ended["cause"] == "normal", ended
        assert await sipp.wait(10) == 0, f"trunk did not get BYE:\n{sipp.messages()}"
    finally:
        await client.close()


@pytest.mark.parametrize(("code", "phrase"), [(486, "Busy Here"), (480, "Temporarily Unavailable")])
async def test_early_media_then_reject_stops_media(
    stack: Stack, sipagent: SipagentFactory, trunk: TrunkFactory, code: int, phrase: str
) -> None:
    sipp = trunk(
        "early_media_reject.xml",
        early_ms=str(EARLY_MS),
        reject_code=str(code),
        reject_phrase=phrase,
    )
    sipagent(sipp.port, INVITE_TIMEOUT="30")
    client = await BridgeClient(stack.base_url).connect()
    try:
        await client.offer(codec="PCMU")
        await client.accept_answer()
        ringing = await client.expect("ringing")
        assert ringing.get("early_media") is True, ringing
        await asyncio.sleep(1.0)
        await assert_tone(client, stack, "during early media")
        ended = await client.expect("ended", 10)
        assert ended["status"] == code, ended
        assert ended["cause"] == "rejected", ended
        assert not any(m["type"] == "connected" for m in client.messages), client.messages
        # The trunk got its ACK and no BYE (a BYE would fail the scenario).
        assert await sipp.wait(10) == 0, f"trunk scenario failed:\n{sipp.messages()}"
        assert "BYE sip:" not in sipp.messages(), sipp.messages()
        # Media is released: the browser hears nothing more.
        await asyncio.sleep(0.5)
        client.clear_audio()
        await asyncio.sleep(1.0)
        _peak, level = client.dominant_frequency()
        assert level < 50, f"audio still flowing after {code} (rms {level})\n{stack.logs()}"
    finally:
        await client.close()
