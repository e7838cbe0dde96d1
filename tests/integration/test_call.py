"""Calls through the three services to sipp as the trunk, as a user meets them."""

from __future__ import annotations

import asyncio
import hashlib
import re
import socket
from typing import Protocol

import pytest

from tests.integration.client import TONE_HZ, BridgeClient
from tests.integration.conftest import SipagentFactory, Stack, TrunkFactory
from tests.integration.harness import TRUNK_PASSWORD, TRUNK_USER, Sipp, free_udp_port

pytestmark = pytest.mark.timeout(90)

CHALLENGE_401 = {
    "challenge_code": "401",
    "challenge_phrase": "Unauthorized",
    "challenge_header": "WWW-Authenticate",
    "auth_check": '<verifyauth assign_to="authvalid" username="bridge" password="s3cr:t#p@ss" />',
    "auth_gate": '<nop hide="true" test="authvalid" next="authorized" />',
}
CHALLENGE_407 = {
    "challenge_code": "407",
    "challenge_phrase": "Proxy Authentication Required",
    "challenge_header": "Proxy-Authenticate",
    "auth_check": '<ereg regexp="Digest .*" search_in="hdr" header="Proxy-Authorization:"'
    ' check_it="true" assign_to="digest" />',
    "auth_gate": '<Reference variables="digest" /><nop hide="true" next="authorized" />',
}


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def check_digest(header: str, method: str) -> None:
    """Check a qop=auth MD5 digest the way a trunk would, independently of the bridge."""
    fields = {k: a or b for k, a, b in re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]+))', header)}
    assert fields["username"] == TRUNK_USER
    ha1 = md5(f"{TRUNK_USER}:{fields['realm']}:{TRUNK_PASSWORD}")
    ha2 = md5(f"{method}:{fields['uri']}")
    expected = md5(
        f"{ha1}:{fields['nonce']}:{fields['nc']}:{fields['cnonce']}:{fields['qop']}:{ha2}"
    )
    assert fields["response"] == expected, f"wrong digest in {header}"


class HasLogs(Protocol):
    def logs(self) -> str: ...


async def assert_tone_returns(client: BridgeClient, stack: HasLogs) -> None:
    # Let the first packets (ICE/DTLS settling, jitter buffer) pass, then listen.
    await asyncio.sleep(1.0)
    client.clear_audio()
    await asyncio.sleep(2.0)
    peak, level = client.dominant_frequency()
    assert abs(peak - TONE_HZ) < 40, f"tone did not come back: peak {peak} Hz\n{stack.logs()}"
    assert level > 300, f"echoed audio too quiet (rms {level})"


async def connected_call(
    stack: Stack, sipagent: SipagentFactory, sipp: Sipp, codec: str, transport: str = "udp"
) -> BridgeClient:
    sipagent(sipp.port, transport=transport)
    client = await BridgeClient(stack.base_url).connect()
    await client.offer(codec=codec)
    await client.accept_answer()
    await client.expect("ringing")
    await client.expect("connected")
    return client


@pytest.mark.parametrize("codec", ["opus", "PCMU"])
async def test_tone_comes_back_and_hangup_sends_bye(
    stack: Stack, sipagent: SipagentFactory, trunk: TrunkFactory, codec: str
) -> None:
    sipp = trunk("challenge_echo_bye.xml", **CHALLENGE_401)
    client = await connected_call(stack, sipagent, sipp, codec)
    try:
        await assert_tone_returns(client, stack)
        await client.hangup()
        ended = await client.expect("ended")
        assert ended["cause"] == "normal"
        assert await sipp.wait(10) == 0, f"trunk did not get BYE:\n{sipp.messages()}"
        # Every process logs at DEBUG in these tests: the password is in none of it.
        assert TRUNK_PASSWORD not in stack.full_logs()
    finally:
        await client.close()


async def test_proxy_challenge_407_is_answered(
    stack: Stack, sipagent: SipagentFactory, trunk: TrunkFactory
) -> None:
    sipp = trunk("challenge_echo_bye.xml", **CHALLENGE_407)
    client = await connected_call(stack, sipagent, sipp, "PCMU")
    try:
        await assert_tone_returns(client, stack)
        await client.hangup()
        await client.expect("ended")
        assert await sipp.wait(10) == 0, sipp.messages()
        headers = re.findall(r"^Proxy-Authorization: (Digest .*)$", sipp.messages(), re.M)
        assert headers, sipp.messages()
        check_digest(headers[0].strip(), "INVITE")
    finally:
        await client.close()


async def test_call_over_tcp(stack: Stack, sipagent: SipagentFactory, trunk: TrunkFactory) -> None:
    sipp = trunk("challenge_echo_bye.xml", transport="t1", **CHALLENGE_401)
    client = await connected_call(stack, sipagent, sipp, "PCMU", transport="tcp")
    try:
        await assert_tone_returns(client, stack)
        await client.hangup()
        await client.expect("ended")
        assert await sipp.wait(10) == 0, sipp.messages()
        assert "SIP/2.0/TCP" in sipp.messages()
    finally:
        await client.close()


async def test_busy_trunk_ends_call_with_486(
    stack: Stack, sipagent: SipagentFactory, trunk: TrunkFactory
) -> None:
    sipp = trunk("busy.xml")
    sipagent(sipp.port)
    client = await BridgeClient(stack.base_url).connect()
    try:
        await client.offer()
        ended = await client.expect("ended", 15)
        assert ended["status"] == 486, ended
        assert ended["cause"] == "rejected"
        assert await sipp.wait(10) == 0, f"trunk did not get the ACK:\n{sipp.messages()}"
    finally:
        await client.close()


async def test_silent_trunk_ends_after_invite_timeout(
    stack: Stack, sipagent: SipagentFactory
) -> None:
    port = free_udp_port()
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", port))
    silent.setblocking(False)
    sipagent(port, INVITE_TIMEOUT="2")
    client = await BridgeClient(stack.base_url).connect()
    try:
        await client.offer()
        ended = await client.expect("ended", 15)
        assert ended["cause"] == "timeout", ended
        invites = 0
        while True:
            try:
                data = silent.recv(65535)
            except BlockingIOError:
                break
            invites += data.startswith(b"INVITE ")
        # UDP with no answer: the INVITE was retransmitted (Timer A).
        assert invites >= 2, f"INVITE sent {invites} times"
    finally:
        silent.close()
        await client.close()


async def test_socket_dropped_mid_call_sends_bye(
    stack: Stack, sipagent: SipagentFactory, trunk: TrunkFactory
) -> None:
    sipp = trunk("challenge_echo_bye.xml", **CHALLENGE_401)
    client = await connected_call(stack, sipagent, sipp, "opus")
    try:
        await client.drop_socket()
        # The product promise: a lost browser ends the call within 2 s.
        assert await sipp.wait(2.0) == 0, f"no BYE after the socket closed:\n{sipp.messages()}"
    finally:
        await client.close()


async def test_far_end_bye_ends_the_call(
    stack: Stack, sipagent: SipagentFactory, trunk: TrunkFactory
) -> None:
    sipp = trunk("answer_then_hang_up.xml")
    sipagent(sipp.port)
    client = await BridgeClient(stack.base_url).connect()
    try:
        await client.offer(codec="PCMU")
        await client.accept_answer()
        await client.expect("connected")
        ended = await client.expect("ended", 10)
        assert ended["cause"] == "remote_hangup", ended
        assert await sipp.wait(5) == 0, f"trunk's BYE got no 200:\n{sipp.messages()}"
    finally:
        await client.close()


async def test_hangup_while_ringing_sends_cancel(
    stack: Stack, sipagent: SipagentFactory, trunk: TrunkFactory
) -> None:
    sipp = trunk("ring_until_cancel.xml")
    sipagent(sipp.port, INVITE_TIMEOUT="30")
    client = await BridgeClient(stack.base_url).connect()
    try:
        await client.offer()
        await client.accept_answer()
        await client.expect("ringing")
        await client.hangup()
        ended = await client.expect("ended", 10)
        assert ended["cause"] == "cancelled", ended
        assert ended["status"] == 487, ended
        assert await sipp.wait(10) == 0, f"trunk did not get CANCEL/ACK:\n{sipp.messages()}"
    finally:
        await client.close()


async def test_bad_websocket_input_gets_errors(stack: Stack) -> None:
    client = await BridgeClient(stack.base_url).connect()
    try:
        await client.send("{not json")
        assert (await client.expect("error"))["code"] == "bad_json"
        await client.send({"type": "dance"})
        assert (await client.expect("error"))["code"] == "unknown_type"
        await client.send({"type": "offer"})
        assert (await client.expect("error"))["code"] == "bad_message"
        await client.send({"type": "offer", "sdp": "v=0\r\n" + "a=x\r\n" * 20000})
        assert (await client.expect("error"))["code"] == "too_large"
        # The socket still works after all that.
        await client.send("[]")
        assert (await client.expect("error"))["code"] == "bad_message"
    finally:
        await client.close()
