"""Requests within the confirmed dialog, with sipp as the trunk and the whole stack running."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from proto.events import DtmfReceived, DtmfRequested, HoldRequested, SessionUpdated
from tests.integration.bus_spy import BusSpy
from tests.integration.client import BridgeClient
from tests.integration.conftest import SipagentFactory, Stack, TrunkFactory
from tests.integration.harness import Sipp

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


async def test_info_digit_in_and_hold_from_the_browser_along_the_route_set(
    stack: Stack, sipagent: SipagentFactory, trunk: TrunkFactory
) -> None:
    sipp = trunk("bridge_hold_info.xml")
    sipagent(sipp.port)
    async with BusSpy(stack.nats_url) as bus:
        client = await _connect(stack)
        try:
            digit = await bus.wait_for(DtmfReceived)
            assert (digit.digit, digit.method) == ("5", "info")
            call_id = await bus.call_id()
            await bus.publish(HoldRequested(call_id=call_id, held=True))
            held = await bus.wait_for(SessionUpdated, local_hold=True)
            assert "a=recvonly" in held.remote_sdp
            await bus.publish(HoldRequested(call_id=call_id, held=False))
            await bus.wait_for(SessionUpdated, local_hold=False)
            await client.hangup()
            await client.expect("ended")
            # sipp checked sendonly then sendrecv, and a Route on the ACK, re-INVITE and BYE.
            assert await sipp.wait(10) == 0, f"{sipp.messages()}\n{stack.logs()}"
        finally:
            await client.close()


async def test_refer_transfers_the_call_to_a_new_party(
    stack: Stack, sipagent: SipagentFactory, tmp_path: Path
) -> None:
    sipp = Sipp("refer_transfer.xml", tmp_path, calls=2).start()
    try:
        sipagent(sipp.port)
        async with BusSpy(stack.nats_url) as bus:
            client = await _connect(stack)
            try:
                moved = await bus.wait_for(SessionUpdated, timeout=20)
                assert moved.transferred_to == f"sip:bob@127.0.0.1:{sipp.port}"
                await client.hangup()
                ended = await client.expect("ended")
                assert ended["cause"] == "normal"
                # Both calls complete: the referrer got its BYE, bob got ours.
                assert await sipp.wait(10) == 0, f"{sipp.messages()}\n{stack.logs()}"
                messages = sipp.messages()
                invites = re.findall(r"^INVITE (sip:\S+) SIP/2.0", messages, re.M)
                assert invites[-1] == f"sip:bob@127.0.0.1:{sipp.port}"
                states = re.findall(r"^Subscription-State: (\w+)", messages, re.M)
                assert states == ["active", "terminated"]
            finally:
                await client.close()
    finally:
        sipp.stop()


async def test_digits_go_by_info_when_the_trunk_has_no_telephone_event(
    stack: Stack, sipagent: SipagentFactory, trunk: TrunkFactory
) -> None:
    sipp = trunk("info_dtmf_out.xml")
    sipagent(sipp.port)
    async with BusSpy(stack.nats_url) as bus:
        client = await _connect(stack)
        try:
            call_id = await bus.call_id()
            await bus.publish(DtmfRequested(call_id=call_id, digits="7#"))
            await _until(lambda: len(re.findall(r"^INFO ", sipp.messages(), re.M)) >= 2)
            await client.hangup()
            await client.expect("ended")
            # sipp checked the two INFOs, 7 then #, before the BYE.
            assert await sipp.wait(10) == 0, f"{sipp.messages()}\n{stack.logs()}"
        finally:
            await client.close()


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)
