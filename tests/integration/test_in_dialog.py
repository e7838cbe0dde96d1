"""Requests within the confirmed dialog, with sipp as the trunk and the whole stack running."""

from __future__ import annotations

import re

import pytest

from proto.events import DtmfReceived, HoldRequested, SessionUpdated
from tests.integration.client import BridgeClient
from tests.integration.conftest import SipagentFactory, Stack, TrunkFactory
from tests.integration.peers import BusSpy

pytestmark = pytest.mark.timeout(90)


async def _connect(stack: Stack) -> BridgeClient:
    client = await BridgeClient(stack.base_url).connect()
    await client.offer(codec="PCMU")
    await client.accept_answer()
    await client.expect("connected")
    return client


async def test_far_end_hold_then_resume(
    stack: Stack, sipagent: SipagentFactory, trunk: TrunkFactory
) -> None:
    sipp = trunk("far_end_hold.xml")
    sipagent(sipp.port)
    async with BusSpy(stack.nats_url) as bus:
        client = await _connect(stack)
        try:
            held = await bus.wait_for(SessionUpdated, remote_hold=True)
            assert "a=sendonly" in held.remote_sdp and not held.local_hold
            await bus.wait_for(SessionUpdated, remote_hold=False)
            ended = await client.expect("ended")
            assert ended["cause"] == "remote_hangup"
            # sipp checked our answers: recvonly to its hold, sendrecv to its resume.
            assert await sipp.wait(10) == 0, f"{sipp.messages()}\n{stack.logs()}"
        finally:
            await client.close()


async def test_keepalive_finds_a_trunk_that_went_silent(
    stack: Stack, sipagent: SipagentFactory, trunk: TrunkFactory
) -> None:
    sipp = trunk("keepalive_then_silent.xml")
    sipagent(sipp.port, SIP_KEEPALIVE_INTERVAL="1")
    client = await _connect(stack)
    try:
        assert await sipp.wait(20) == 0, sipp.messages()
        # The unanswered OPTIONS times out (64*T1), then the browser is told.
        ended = await client.expect("ended", timeout=45)
        assert ended["cause"] == "dead_dialog", stack.logs()
        assert len(re.findall(r"^OPTIONS ", sipp.messages(), re.M)) >= 3
    finally:
        await client.close()
