"""Requests within the confirmed dialog, with sipp as the trunk and the whole stack running."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.client import BridgeClient, connected_client
from tests.integration.conftest import SipagentFactory, Stack, TrunkFactory, start_stack
from tests.integration.harness import Sipp
from tests.integration.peers import RtpPeer

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # A trunk that goes silent here must be found by SIP keep-alives, before
    # its missing RTP (RTP_TIMEOUT, tests/integration/test_media_timeout.py).
    yield from start_stack(tmp_path_factory.mktemp("stack"), RTP_TIMEOUT="300")


async def _connect(stack: Stack) -> BridgeClient:
    return await connected_client(stack.base_url, "PCMU")


async def test_far_end_hold_then_resume(
    stack: Stack, sipagent: SipagentFactory, trunk: TrunkFactory
) -> None:
    sipp = trunk("far_end_hold.xml")
    sipagent(sipp.port)
    client = await _connect(stack)
    try:
        # The page is told the trunk holds it, then that it resumed.
        held = await client.expect("hold_changed")
        assert held == {"type": "hold_changed", "local": False, "remote": True}
        resumed = await client.expect("hold_changed")
        assert resumed == {"type": "hold_changed", "local": False, "remote": False}
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
    client = await _connect(stack)
    try:
        # sipp's INFO reaches the page as the digit pressed.
        digit = await client.expect("dtmf")
        assert digit == {"type": "dtmf", "digit": "5", "method": "info"}
        await client.send({"type": "hold"})
        held = await client.expect("hold_changed")
        assert held == {"type": "hold_changed", "local": True, "remote": False}
        await client.send({"type": "unhold"})
        resumed = await client.expect("hold_changed")
        assert resumed == {"type": "hold_changed", "local": False, "remote": False}
        await client.hangup()
        await client.expect("ended")
        # sipp checked sendonly then sendrecv, and a Route on the ACK, re-INVITE and BYE.
        assert await sipp.wait(10) == 0, f"{sipp.messages()}\n{stack.logs()}"
        assert not [m for m in client.messages if m["type"] == "error"], client.messages
    finally:
        await client.close()


async def test_hold_the_trunk_refuses_is_reported_and_can_be_asked_again(
    stack: Stack, sipagent: SipagentFactory, trunk: TrunkFactory
) -> None:
    sipp = trunk("hold_refused_then_accepted.xml")
    sipagent(sipp.port)
    client = await _connect(stack)
    try:
        await client.send({"type": "hold"})
        refused = await client.expect("error")
        assert refused["code"] == "hold_failed" and "hold" in refused["message"], refused
        # The call goes on, not held; a second click asks again.
        await client.send({"type": "hold"})
        held = await client.expect("hold_changed")
        assert held == {"type": "hold_changed", "local": True, "remote": False}
        await client.hangup()
        ended = await client.expect("ended")
        assert ended["cause"] == "normal"
        assert await sipp.wait(10) == 0, f"{sipp.messages()}\n{stack.logs()}"
        assert [m["type"] for m in client.messages].count("hold_changed") == 1, client.messages
    finally:
        await client.close()


async def test_refer_transfers_the_call_to_a_new_party(
    stack: Stack, sipagent: SipagentFactory, tmp_path: Path
) -> None:
    sipp = Sipp("refer_transfer.xml", tmp_path, calls=2).start()
    try:
        sipagent(sipp.port)
        client = await _connect(stack)
        try:
            moved = await client.expect("transferred", timeout=20)
            assert moved == {"type": "transferred", "target": f"sip:bob@127.0.0.1:{sipp.port}"}
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
    client = await _connect(stack)
    try:
        await client.send({"type": "dtmf", "digits": "7#"})
        await _until(lambda: len(re.findall(r"^INFO ", sipp.messages(), re.M)) >= 2)
        await client.hangup()
        await client.expect("ended")
        # sipp checked the two INFOs, 7 then #, before the BYE.
        assert await sipp.wait(10) == 0, f"{sipp.messages()}\n{stack.logs()}"
        assert not [m for m in client.messages if m["type"] == "error"], client.messages
    finally:
        await client.close()


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    ("scenario", "refresh"),
    [("session_timer_refresh.xml", "UPDATE"), ("session_timer_reinvite.xml", "INVITE")],
)
async def test_bridge_refreshes_the_session_the_trunk_asked_it_to(
    stack: Stack, sipagent: SipagentFactory, trunk: TrunkFactory, scenario: str, refresh: str
) -> None:
    # A short interval keeps the test quick: the 2xx's value binds the UAC (RFC 4028 7.2).
    sipp = trunk(scenario, interval="4")
    sipagent(sipp.port)
    client = await _connect(stack)
    try:
        # The INVITE that set the call up, then two refreshes.
        wanted = 3 if refresh == "INVITE" else 2
        await _until(lambda: len(re.findall(rf"^{refresh} ", sipp.messages(), re.M)) >= wanted)
        await client.hangup()
        ended = await client.expect("ended")
        assert ended["cause"] == "normal", client.messages
        # sipp checked Session-Expires and Supported: timer on the INVITE, and both refreshes.
        assert await sipp.wait(10) == 0, f"{sipp.messages()}\n{stack.logs()}"
        # A refresh changes nothing the person at the page can see.
        assert [m["type"] for m in client.messages if m["type"] in ("hold_changed", "error")] == []
    finally:
        await client.close()


async def test_session_the_trunk_does_not_refresh_ends_the_call(
    stack: Stack, sipagent: SipagentFactory, trunk: TrunkFactory
) -> None:
    sipp = trunk("session_timer_not_refreshed.xml", interval="6")
    sipagent(sipp.port)
    client = await _connect(stack)
    try:
        ended = await client.expect("ended", timeout=20)
        assert ended["cause"] == "dead_dialog", f"{client.messages}\n{stack.logs()}"
        # sipp got the BYE for the dialog it let expire.
        assert await sipp.wait(10) == 0, f"{sipp.messages()}\n{stack.logs()}"
    finally:
        await client.close()


async def test_far_end_reinvite_moves_the_media(
    stack: Stack, sipagent: SipagentFactory, trunk: TrunkFactory
) -> None:
    first, second = RtpPeer(), RtpPeer()
    try:
        sipp = trunk(
            "reinvite_moves_media.xml", first_port=str(first.port), second_port=str(second.port)
        )
        sipagent(sipp.port)
        client = await _connect(stack)
        try:
            voice = await first.receive()
            assert voice.payload_type == 0
            # The re-INVITE names another address and PCMA only: the audio follows it.
            moved = await second.receive(timeout=15)
            assert moved.payload_type == 8 and moved.ssrc == voice.ssrc, stack.logs()
            await client.hangup()
            await client.expect("ended")
            # sipp checked that our 200 answered PCMA.
            assert await sipp.wait(10) == 0, f"{sipp.messages()}\n{stack.logs()}"
        finally:
            await client.close()
    finally:
        first.close()
        second.close()
