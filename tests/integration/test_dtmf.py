"""DTMF through the three services: RFC 4733 to and from a trunk, and back from the echo peer."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator

import pytest

from services.media.rtp import RtpPacket
from tests.integration.client import BridgeClient, connected_client
from tests.integration.conftest import SipagentFactory, Stack, TrunkFactory
from tests.integration.peers import RtpPeer, demo_peer

__all__ = ["demo_peer"]

pytestmark = pytest.mark.timeout(90)

EVENT_PT = 101
DIGITS = "0123456789*#ABCD"


@pytest.fixture
def rtp_peer() -> Iterator[RtpPeer]:
    peer = RtpPeer()
    yield peer
    peer.close()


async def connected(stack: Stack) -> BridgeClient:
    return await connected_client(stack.base_url, "opus")


async def test_keypad_digits_come_back_from_the_echo_peer(
    stack: Stack, sipagent: SipagentFactory, demo_peer: int
) -> None:
    sipagent(demo_peer)
    client = await connected(stack)
    try:
        await client.send({"type": "dtmf", "digits": "12#"})
        echoed = [await client.expect("dtmf") for _ in range(3)]
        assert [(m["digit"], m["method"]) for m in echoed] == [
            ("1", "rfc4733"),
            ("2", "rfc4733"),
            ("#", "rfc4733"),
        ], stack.logs()
        # Each event was told once, end packets and all.
        await asyncio.sleep(0.5)
        assert [m for m in client.messages if m["type"] == "dtmf"] == echoed
        await client.hangup()
        await client.expect("ended")
    finally:
        await client.close()


async def test_trunk_gets_rfc4733_events_and_its_events_reach_the_browser(
    stack: Stack, sipagent: SipagentFactory, trunk: TrunkFactory, rtp_peer: RtpPeer
) -> None:
    sipp = trunk("answer_rtp_peer_bye.xml", rtp_port=str(rtp_peer.port), event_pt=str(EVENT_PT))
    sipagent(sipp.port)
    client = await connected(stack)
    try:
        voice = await rtp_peer.receive()
        assert voice.payload_type == 0
        await client.send({"type": "dtmf", "digits": "5"})
        packets: list[RtpPacket] = []
        async with asyncio.timeout(10):
            while sum(p.payload_type == EVENT_PT and p.payload[1] >= 0x80 for p in packets) < 3:
                packets.append(await rtp_peer.receive())
        events = [p for p in packets if p.payload_type == EVENT_PT]
        fields = [struct.unpack("!BBH", p.payload) for p in events]
        assert {DIGITS[code] for code, _, _ in fields} == {"5"}
        assert events[0].marker and not any(p.marker for p in events[1:])
        assert len({p.timestamp for p in events}) == 1
        assert [d for _, _, d in fields] == sorted(d for _, _, d in fields)
        assert sum(1 for _, flags, _ in fields if flags & 0x80) == 3
        assert {p.ssrc for p in events} == {voice.ssrc}
        # No voice in the middle of the event.
        first = packets.index(events[0])
        assert all(p.payload_type == EVENT_PT for p in packets[first:])

        # The trunk presses 9: the browser is told once.
        for seq, (end, duration) in enumerate(((False, 160), (True, 320), (True, 320))):
            payload = struct.pack("!BBH", 9, (0x80 if end else 0) | 10, duration)
            rtp_peer.send(RtpPacket(EVENT_PT, 100 + seq, 48000, 0x4242, payload, marker=seq == 0))
        message = await client.expect("dtmf")
        assert (message["digit"], message["method"]) == ("9", "rfc4733")
        await client.hangup()
        await client.expect("ended")
        assert await sipp.wait(10) == 0, sipp.messages()
        assert [m for m in client.messages if m["type"] == "dtmf"] == [message]
    finally:
        await client.close()


async def test_dtmf_before_a_call_is_refused(stack: Stack) -> None:
    client = await BridgeClient(stack.base_url).connect()
    try:
        await client.send({"type": "dtmf", "digits": "1"})
        error = await client.expect("error")
        assert error["code"] == "not_connected"
        await client.send({"type": "dtmf", "digits": "1x"})
        error = await client.expect("error")
        assert error["code"] == "bad_dtmf"
    finally:
        await client.close()
