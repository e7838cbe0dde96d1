"""The paths a call's audio takes through the media service, as the caller hears them.

Payloads relayed untouched when both legs share a codec (PCMU, Opus), converted
when they do not, and a trunk that moves its media mid-call: the browser's
stream carries on with continuous sequence numbers and the caller's own tone
still comes back.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import cast

import pytest

from tests.integration.client import TONE_HZ, BridgeClient, connected_client
from tests.integration.conftest import SipagentFactory, Stack, TrunkFactory, start_stack
from tests.integration.test_call import CHALLENGE_401

pytestmark = pytest.mark.timeout(90)

STARTED = re.compile(
    r"call (\S+) media started: trunk (\S+) at (\S+), browser (\S+), (passthrough|transcoding)$",
    re.M,
)
MAX_LOST = 2
"Packets the browser may count as lost across a move: continuity, give or take a straggler."


# -- helpers local to this module ------------------------------------------------------


def media_log(stack: Stack) -> str:
    """The media service's whole log (``Stack.logs`` keeps only each log's tail)."""
    return next(p for p in stack.processes if p.name == "media").log()


async def until(
    predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition"
) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"{what} not met within {timeout}s") from None


async def media_started(stack: Stack, since: int) -> re.Match[str]:
    """The ``media started`` line of the call set up after offset ``since`` of the media log."""
    await until(
        lambda: STARTED.search(media_log(stack)[since:]) is not None,
        what="a 'media started' line in the media log",
    )
    found = STARTED.search(media_log(stack)[since:])
    assert found is not None
    return found


async def assert_tone(client: BridgeClient, stack: Stack, when: str) -> None:
    """The caller's own tone, echoed by the trunk, is what the browser hears now."""
    client.clear_audio()
    await asyncio.sleep(1.5)
    peak, level = client.dominant_frequency()
    assert abs(peak - TONE_HZ) < 40, f"no tone {when}: peak {peak} Hz\n{stack.logs()}"
    assert level > 300, f"echoed audio too quiet {when} (rms {level})"


async def assert_page_told(
    client: BridgeClient, passthrough: bool, browser: str, trunk: str
) -> None:
    """The page's ``stats`` message (every 5 s in a call) tells the same path and codecs."""
    shown = await client.expect("stats", timeout=12)
    assert shown["passthrough"] is passthrough, shown
    codecs = (shown["browser"]["codec"].lower(), shown["trunk"]["codec"].lower())
    assert codecs == (browser.lower(), trunk.lower()), shown


@dataclass(frozen=True)
class Inbound:
    """The browser's view of the bridge's stream: aiortc's receiver statistics."""

    ssrc: int
    received: int
    lost: int


async def inbound(client: BridgeClient) -> Inbound | None:
    assert client.pc is not None
    receivers = client.pc.getReceivers()
    if not receivers:
        return None
    report = await receivers[0].getStats()
    for stats in report.values():
        if stats.type == "inbound-rtp":
            return Inbound(stats.ssrc, stats.packetsReceived, stats.packetsLost)
    return None


class EchoPeer(asyncio.DatagramProtocol):
    """A trunk's RTP end on loopback that sends every packet back to where it came from.

    ``renumber``: as another media server would, it sends with an SSRC, sequence
    numbers and timestamps of its own (the same offsets for every packet).
    """

    def __init__(self, renumber: bool) -> None:
        self.renumber = renumber
        self.ssrc = secrets.randbits(32)
        self.seq_offset = secrets.randbits(16)
        self.ts_offset = secrets.randbits(32)
        self.transport: asyncio.DatagramTransport | None = None
        self.payload_types: list[int] = []

    @classmethod
    async def open(cls, renumber: bool) -> EchoPeer:
        loop = asyncio.get_running_loop()
        _, peer = await loop.create_datagram_endpoint(
            lambda: cls(renumber), local_addr=("127.0.0.1", 0)
        )
        return peer

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < 12 or data[0] >> 6 != 2 or self.transport is None:
            return
        self.payload_types.append(data[1] & 0x7F)
        if self.renumber:
            first, second, sequence, timestamp, _ssrc = struct.unpack_from("!BBHII", data)
            header = struct.pack(
                "!BBHII",
                first,
                second,
                (sequence + self.seq_offset) & 0xFFFF,
                (timestamp + self.ts_offset) & 0xFFFFFFFF,
                self.ssrc,
            )
            data = header + data[12:]
        self.transport.sendto(data, addr)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


# -- a re-INVITE that moves the trunk's media ------------------------------------------


@pytest.mark.parametrize("renumber", [False, True], ids=["same-source", "new-source"])
async def test_reinvite_moving_the_trunk_media_keeps_the_browser_stream_continuous(
    stack: Stack, sipagent: SipagentFactory, trunk: TrunkFactory, renumber: bool
) -> None:
    # reinvite_moves_media.xml answers PCMU at first_port, then re-INVITEs to
    # second_port with PCMA only. Both ends echo; with ``renumber`` the second
    # is a different source (SSRC, sequence, timestamps), as a new media server is.
    first, second = await EchoPeer.open(renumber), await EchoPeer.open(renumber)
    try:
        sipp = trunk(
            "reinvite_moves_media.xml", first_port=str(first.port), second_port=str(second.port)
        )
        sipagent(sipp.port)
        since = len(media_log(stack))
        client = await connected_client(stack.base_url, "PCMU")
        try:
            await _follow_the_move(stack, client, since, first, second)
            await client.hangup()
            await client.expect("ended")
            # sipp checked that our 200 to its re-INVITE answered PCMA.
            assert await sipp.wait(10) == 0, f"{sipp.messages()}\n{stack.logs()}"
        finally:
            await client.close()
    finally:
        first.close()
        second.close()


async def _follow_the_move(
    stack: Stack, client: BridgeClient, since: int, first: EchoPeer, second: EchoPeer
) -> None:
    """Watch the browser's inbound stream through the move; assert it never jumped."""
    samples: list[Inbound] = []

    async def sample() -> None:
        while True:
            stats = await inbound(client)
            if stats is not None:
                samples.append(stats)
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    try:
        started = await media_started(stack, since)
        assert started[2] == "PCMU/0" and started[5] == "passthrough", started[0]
        moved = rf"call {re.escape(started[1])} media moved: trunk PCMA/8 at 127\.0\.0\.1:"
        await until(
            lambda: re.search(moved + str(second.port), media_log(stack)[since:]),
            timeout=15,
            what="the media moving to the re-INVITE's address",
        )
        assert samples and samples[-1].received > 0, (
            f"no audio reached the browser: {samples[-1:]}\n{stack.logs()}"
        )
        at_move = samples[-1]
        # The caller still hears their own tone, now PCMA from the trunk.
        await asyncio.sleep(0.5)
        await assert_tone(client, stack, "after the move")
        await asyncio.sleep(0.5)
        after = samples[-1]
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
    # The trunk leg followed the re-INVITE: PCMU to the first, PCMA to the second.
    assert len(first.payload_types) > 20, f"little audio before the move: {first.payload_types}"
    assert set(first.payload_types) == {0}, first.payload_types
    assert second.payload_types, "nothing reached the re-INVITE's address"
    assert set(second.payload_types) == {8}, sorted(set(second.payload_types))
    # One stream to the browser, numbered on without a jump: aiortc counts a
    # sequence jump forward as loss, one backward as negative loss.
    assert {s.ssrc for s in samples} == {at_move.ssrc}, {s.ssrc for s in samples}
    worst = max(samples, key=lambda s: abs(s.lost))
    assert abs(worst.lost) <= MAX_LOST, (
        f"the browser's stream jumped: {worst} (at the move {at_move}, after {after})"
        f"\n{stack.logs()}"
    )
    # 2.5 s at 50 packets/s after the move; most of them arrived.
    assert after.received - at_move.received > 90, (at_move, after)


# -- G.711 both sides: passthrough; Opus to the browser, G.711 to the trunk: transcoding --


@pytest.mark.parametrize(
    ("codec", "path"), [("PCMU", "passthrough"), ("opus", "transcoding")], ids=["pcmu", "opus"]
)
async def test_g711_trunk_relays_or_converts_by_the_browser_codec(
    stack: Stack, sipagent: SipagentFactory, trunk: TrunkFactory, codec: str, path: str
) -> None:
    sipp = trunk("challenge_echo_bye.xml", **CHALLENGE_401)
    sipagent(sipp.port)
    since = len(media_log(stack))
    client = await connected_client(stack.base_url, codec)
    try:
        await asyncio.sleep(1.0)  # ICE/DTLS settling and the first packets
        await assert_tone(client, stack, f"with a {codec} browser")
        started = await media_started(stack, since)
        assert (started[2], started[4], started[5]) == ("PCMU/0", codec, path), started[0]
        await assert_page_told(client, path == "passthrough", codec, "PCMU")
        await client.hangup()
        assert (await client.expect("ended"))["cause"] == "normal"
        assert await sipp.wait(10) == 0, f"trunk did not get BYE:\n{sipp.messages()}"
        await _assert_ended_cleanly(stack, since, started[1], path)
    finally:
        await client.close()


async def _assert_ended_cleanly(stack: Stack, since: int, call_id: str, path: str) -> None:
    """The call's end-of-media line: the same path, RTP both ways, no conversion error."""
    ended = re.compile(
        rf"call {re.escape(call_id)} media ended: .*, {path}; "
        r".*trunk rtp in (\d+) out (\d+) .*conversion errors (\d+)\)$",
        re.M,
    )
    await until(
        lambda: ended.search(media_log(stack)[since:]) is not None,
        what=f"the 'media ended' line of call {call_id}",
    )
    found = ended.search(media_log(stack)[since:])
    assert found is not None
    assert int(found[1]) > 50 and int(found[2]) > 50, found[0]
    assert found[3] == "0", found[0]


# -- Opus both sides: passthrough --------------------------------------------------------


class TestOpusTrunk:
    """A stack whose trunk offer lists Opus first (``SIP_CODECS=opus,PCMU``)."""

    @pytest.fixture(scope="class")
    @classmethod
    def stack(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
        yield from start_stack(tmp_path_factory.mktemp("opus-stack"), SIP_CODECS="opus,PCMU")

    async def test_opus_end_to_end_is_relayed_untouched(
        self, stack: Stack, sipagent: SipagentFactory, trunk: TrunkFactory
    ) -> None:
        # sipp checks the INVITE offers opus/48000/2 as 111, first; it answers
        # Opus and echoes the packets as they came.
        sipp = trunk("answer_opus_echo_bye.xml")
        sipagent(sipp.port)
        since = len(media_log(stack))
        client = await connected_client(stack.base_url, "opus")
        try:
            await asyncio.sleep(1.0)
            await assert_tone(client, stack, "through an Opus trunk")
            started = await media_started(stack, since)
            assert (started[2], started[4], started[5]) == ("opus/111", "opus", "passthrough"), (
                started[0]
            )
            await assert_page_told(client, True, "opus", "opus")
            await client.hangup()
            assert (await client.expect("ended"))["cause"] == "normal"
            assert await sipp.wait(10) == 0, f"{sipp.messages()}\n{stack.logs()}"
            await _assert_ended_cleanly(stack, since, started[1], "passthrough")
        finally:
            await client.close()
