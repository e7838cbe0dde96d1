"""A call's media after the answer: RFC 4733 DTMF both ways, re-INVITEs that move or hold it.

The trunk is a real UDP socket on loopback; the bus is the in-memory one.
"""

import asyncio
import socket
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from proto import subjects
from proto.events import (
    CallAnswered,
    DtmfReceived,
    DtmfRequested,
    InviteSent,
    MediaPrepared,
    SessionUpdated,
)
from services.media.dtmf import event_payload
from services.media.rtp import RtpPacket
from services.media.sdp import parse_answer
from services.media.trunk_leg import TrunkLeg

from .test_app import browser_offer, make_worker, request, until

__all__ = ["browser_offer"]

EVENT_PT = 101


def answer_sdp(port: int, *, dtmf: bool = True, direction: str = "sendrecv", pt: int = 0) -> str:
    name = {0: "PCMU", 8: "PCMA"}[pt]
    formats = f"{pt} {EVENT_PT}" if dtmf else f"{pt}"
    lines = [
        "v=0",
        "o=- 1 1 IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        f"m=audio {port} RTP/AVP {formats}",
        f"a=rtpmap:{pt} {name}/8000",
        *([f"a=rtpmap:{EVENT_PT} telephone-event/8000"] if dtmf else []),
        f"a={direction}",
    ]
    return "\r\n".join(lines) + "\r\n"


class Trunk:
    """A trunk's RTP port: a plain non-blocking UDP socket."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]

    async def packets(self, wanted: int, timeout: float = 5.0) -> list[RtpPacket]:
        loop = asyncio.get_running_loop()
        out: list[RtpPacket] = []
        async with asyncio.timeout(timeout):
            while len(out) < wanted:
                out.append(RtpPacket.parse(await loop.sock_recv(self.sock, 2048)))
        return out

    async def quiet(self, seconds: float = 0.3) -> list[RtpPacket]:
        """Whatever arrives within ``seconds`` (a short wait: nothing should)."""
        loop = asyncio.get_running_loop()
        out: list[RtpPacket] = []
        try:
            async with asyncio.timeout(seconds):
                while True:
                    out.append(RtpPacket.parse(await loop.sock_recv(self.sock, 2048)))
        except TimeoutError:
            return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def trunks() -> Iterator[list[Trunk]]:
    made = [Trunk(), Trunk()]
    yield made
    for trunk in made:
        trunk.close()


def event_digits(packets: list[RtpPacket]) -> list[tuple[str, bool]]:
    return [("0123456789*#ABCD"[p.payload[0]], bool(p.payload[1] & 0x80)) for p in packets]


async def answered_call(browser_offer: Any, trunk: Trunk, call_id: str, **answer: Any) -> Any:
    worker, bus, _ = make_worker()
    await worker.on_work(request(call_id, await browser_offer()))
    prepared = await bus.next_event(MediaPrepared)
    media_port = parse_answer(prepared.trunk_offer_sdp).port
    sipagent = subjects.call_events(call_id, "sipagent")
    await bus.deliver(
        sipagent, InviteSent(call_id=call_id, sipagent_id="sip", request_uri="sip:1@t")
    )
    await bus.deliver(
        sipagent, CallAnswered(call_id=call_id, answer_sdp=answer_sdp(trunk.port, **answer))
    )
    return worker, bus, media_port


async def test_dtmf_goes_as_rfc4733_and_follows_a_reinvite(
    browser_offer: Any, trunks: list[Trunk]
) -> None:
    first, second = trunks
    worker, bus, _ = await answered_call(browser_offer, first, "d1")
    signaling = subjects.call_events("d1", "signaling")
    await bus.deliver(signaling, DtmfRequested(call_id="d1", digits="1#", duration_ms=60))
    packets = await first.packets(2 * 5)  # 60 ms: 3 packets, the last of them 3 times
    assert {p.payload_type for p in packets} == {EVENT_PT}
    assert (
        event_digits(packets)
        == [("1", False)] * 2 + [("1", True)] * 3 + [("#", False)] * 2 + [("#", True)] * 3
    )
    assert [p.marker for p in packets].count(True) == 2
    assert len({p.ssrc for p in packets}) == 1
    seqs = [p.sequence_number for p in packets]
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(len(seqs))]

    # The trunk moves its media (a re-INVITE): DTMF follows to the new port.
    sipagent = subjects.call_events("d1", "sipagent")
    await bus.deliver(sipagent, SessionUpdated(call_id="d1", remote_sdp=answer_sdp(second.port)))
    await bus.deliver(signaling, DtmfRequested(call_id="d1", digits="7", duration_ms=40))
    moved = await second.packets(4)
    assert event_digits(moved) == [("7", False)] + [("7", True)] * 3
    assert moved[0].sequence_number == (seqs[-1] + 1) & 0xFFFF
    assert await first.quiet(0.1) == []
    await worker.close()


async def test_no_rfc4733_when_info_or_no_telephone_event(
    browser_offer: Any, trunks: list[Trunk]
) -> None:
    first, second = trunks
    worker, bus, _ = await answered_call(browser_offer, first, "d2", dtmf=False)
    signaling = subjects.call_events("d2", "signaling")
    await bus.deliver(signaling, DtmfRequested(call_id="d2", digits="1"))
    assert await first.quiet() == []

    worker2, bus2, _ = make_worker()
    await worker2.on_work(request("d3", await browser_offer()))
    await bus2.next_event(MediaPrepared)
    sipagent = subjects.call_events("d3", "sipagent")
    await bus2.deliver(
        sipagent,
        InviteSent(call_id="d3", sipagent_id="sip", request_uri="sip:1@t", dtmf="info"),
    )
    await bus2.deliver(sipagent, CallAnswered(call_id="d3", answer_sdp=answer_sdp(second.port)))
    await bus2.deliver(
        subjects.call_events("d3", "signaling"), DtmfRequested(call_id="d3", digits="1")
    )
    assert await second.quiet() == []
    await worker.close()
    await worker2.close()


async def test_trunk_events_become_one_dtmf_received_each(
    browser_offer: Any, trunks: list[Trunk]
) -> None:
    trunk = trunks[0]
    worker, bus, media_port = await answered_call(browser_offer, trunk, "d4")
    target = ("127.0.0.1", media_port)
    seq = 10
    for timestamp, code in ((1600, 5), (3200, 11)):
        for end, duration in ((False, 160), (False, 320), (True, 480), (True, 480), (True, 480)):
            packet = RtpPacket(EVENT_PT, seq, timestamp, 0x77, event_payload(code, end, duration))
            trunk.sock.sendto(bytes(packet), target)
            seq += 1
    await until(lambda: sum(isinstance(e, DtmfReceived) for _, e in bus.published) >= 2)
    await asyncio.sleep(0.1)
    received = [(s, e) for s, e in bus.published if isinstance(e, DtmfReceived)]
    assert [(e.digit, e.method) for _, e in received] == [("5", "rfc4733"), ("#", "rfc4733")]
    assert {s for s, _ in received} == {subjects.call_events("d4", "media")}
    await worker.close()


async def test_hold_from_a_reinvite_stops_dtmf_and_resume_allows_it(
    browser_offer: Any, trunks: list[Trunk]
) -> None:
    trunk = trunks[0]
    worker, bus, _ = await answered_call(browser_offer, trunk, "d5")
    sipagent = subjects.call_events("d5", "sipagent")
    signaling = subjects.call_events("d5", "signaling")
    held = answer_sdp(trunk.port, direction="sendonly")
    await bus.deliver(sipagent, SessionUpdated(call_id="d5", remote_sdp=held, remote_hold=True))
    await bus.deliver(signaling, DtmfRequested(call_id="d5", digits="3", duration_ms=40))
    assert await trunk.quiet() == []
    await bus.deliver(sipagent, SessionUpdated(call_id="d5", remote_sdp=answer_sdp(trunk.port)))
    await bus.deliver(signaling, DtmfRequested(call_id="d5", digits="3", duration_ms=40))
    assert event_digits(await trunk.packets(4))[0] == ("3", False)
    await worker.close()


# --- the leg itself: voice while held, during DTMF, after a codec change ---------------------


async def leg_with_trunk(trunk: Trunk) -> tuple[TrunkLeg, list[np.ndarray], int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    played: list[np.ndarray] = []
    leg = await TrunkLeg.open(sock, lambda pcm: played.append(pcm.copy()))
    port: int = sock.getsockname()[1]
    media = parse_answer(answer_sdp(trunk.port))
    leg.start(("127.0.0.1", trunk.port), media.codec, media.dtmf_pt)
    return leg, played, port


FRAME = np.zeros(160, dtype=np.int16)


async def test_held_leg_sends_nothing_but_still_plays(trunks: list[Trunk]) -> None:
    trunk = trunks[0]
    leg, played, port = await leg_with_trunk(trunk)
    leg.send_pcm(FRAME)
    (before,) = await trunk.packets(1)
    leg.set_hold(True)
    leg.send_pcm(FRAME)
    assert not leg.send_dtmf("1", 40)
    assert await trunk.quiet(0.1) == []
    # Music on hold from the trunk still reaches the browser.
    moh = RtpPacket(0, 1, 160, 0x55, b"\x80" * 160)
    trunk.sock.sendto(bytes(moh), ("127.0.0.1", port))
    await until(lambda: bool(played))
    leg.set_hold(False)
    leg.send_pcm(FRAME)
    (after,) = await trunk.packets(1)
    assert after.sequence_number == (before.sequence_number + 1) & 0xFFFF
    assert after.marker  # a new talkspurt after hold
    # The media clock ran on through the held frame (RFC 3550 5.1).
    assert after.timestamp == (before.timestamp + 2 * len(FRAME)) & 0xFFFFFFFF
    leg.close()


async def test_voice_is_suppressed_during_an_event(trunks: list[Trunk]) -> None:
    trunk = trunks[0]
    leg, _, _ = await leg_with_trunk(trunk)
    assert leg.send_dtmf("8", 100)
    packets: list[RtpPacket] = []
    # Voice offered all along the event: none of it may go out while the event plays.
    async with asyncio.timeout(5):
        while sum(p.payload_type == EVENT_PT for p in packets) < 7:
            leg.send_pcm(FRAME)
            packets += await trunk.quiet(0.01)
    events = [i for i, p in enumerate(packets) if p.payload_type == EVENT_PT]
    assert len(events) == 7 and events == list(range(events[0], events[0] + 7))
    ends = [p for p in packets if p.payload_type == EVENT_PT and p.payload[1] & 0x80]
    assert len(ends) == 3
    leg.close()


async def test_codec_change_in_an_update_is_followed(trunks: list[Trunk]) -> None:
    trunk = trunks[0]
    leg, _, _ = await leg_with_trunk(trunk)
    media = parse_answer(answer_sdp(trunk.port, pt=8))
    assert leg.start(("127.0.0.1", trunk.port), media.codec, media.dtmf_pt)
    leg.send_pcm(FRAME)
    (packet,) = await trunk.packets(1)
    assert packet.payload_type == 8
    assert packet.payload == b"\xd5" * 160  # A-law silence
    leg.close()


def test_event_payload_layout() -> None:
    assert struct.unpack("!BBH", event_payload(11, True, 800)) == (11, 0x80 | 10, 800)


async def test_codec_change_keeps_a_latched_source(trunks: list[Trunk]) -> None:
    sdp_socket, nat_socket = trunks
    leg, played, port = await leg_with_trunk(sdp_socket)
    # The trunk sends from another port than its SDP names (a NAT): latched there.
    nat_socket.sock.sendto(bytes(RtpPacket(0, 1, 160, 0x55, b"\x80" * 160)), ("127.0.0.1", port))
    await until(lambda: len(played) == 1)
    media = parse_answer(answer_sdp(sdp_socket.port, pt=8))
    assert leg.start(("127.0.0.1", sdp_socket.port), media.codec, media.dtmf_pt)
    nat_socket.sock.sendto(bytes(RtpPacket(8, 2, 320, 0x55, b"\xd5" * 160)), ("127.0.0.1", port))
    await until(lambda: len(played) == 2, timeout=1.0)
    leg.send_pcm(FRAME)
    (packet,) = await nat_socket.packets(1)
    assert packet.payload_type == 8
    leg.close()
