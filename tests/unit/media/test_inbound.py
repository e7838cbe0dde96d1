"""A call in, through the media worker: the trunk's offer answered with the codec the
browser shares (an aiortc browser offer, real UDP ports)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from proto import errors, subjects
from proto.events import CallAnswered, CallEnded, CallRequested, MediaFailed, MediaPrepared
from services.common import sdp
from services.common.sdp_codecs import RtpMap
from services.media.sdp import first_codec

from .test_app import browser_offer, make_worker, until

__all__ = ["browser_offer"]


def trunk_offer(port: int, formats: str = "8 101", direction: str = "sendrecv") -> str:
    return (
        "v=0\r\no=trunk 5 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP {formats}\r\na=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n"
        f"a=ptime:20\r\na={direction}\r\nm=video {port + 2} RTP/AVP 96\r\n"
    )


def inbound(call_id: str, browser: str, trunk: str) -> CallRequested:
    return CallRequested(
        call_id=call_id,
        offer_sdp=browser,
        destination="+15557654321",
        signaling_id="sig",
        direction="inbound",
        trunk_offer_sdp=trunk,
    )


async def test_inbound_call_answers_the_trunk_with_the_shared_codec(browser_offer: Any) -> None:
    trunk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    trunk.bind(("127.0.0.1", 0))
    trunk.setblocking(False)
    port = trunk.getsockname()[1]
    worker, bus, ports = make_worker()
    try:
        offer = trunk_offer(port)
        await worker.on_work(inbound("in1", await browser_offer(), offer))
        prepared = await bus.next_event(MediaPrepared)
        assert prepared.trunk_offer_sdp == ""
        # The browser offered PCMA too: both legs use it, the audio passes through.
        browser_codec = first_codec(prepared.answer_sdp)
        assert browser_codec is not None and browser_codec.name == "PCMA"
        answer = sdp.parse(prepared.trunk_answer_sdp)
        audio, video = answer.media
        assert (audio.formats, audio.rtpmap(8)) == (("8", "101"), RtpMap(8, "PCMA", 8000))
        assert answer.connection_of(audio) == sdp.Connection("127.0.0.1")
        assert video.port == 0
        assert worker.holds("in1") and ports.in_use == 1

        # The SIP agent's CallAnswered repeats the same offer: nothing changes, no hang-up.
        sipagent = subjects.call_events("in1", "sipagent")
        await bus.deliver(sipagent, CallAnswered(call_id="in1", answer_sdp=offer))
        await asyncio.sleep(0.05)
        assert not any(isinstance(e, MediaFailed) for _, e in bus.published)
        await bus.deliver(sipagent, CallEnded(call_id="in1", cause=errors.NORMAL))
        await until(lambda: worker.active_calls == 0)
        assert ports.in_use == 0
    finally:
        trunk.close()
        await worker.close()


async def test_inbound_offer_without_a_codec_of_ours_fails(browser_offer: Any) -> None:
    worker, bus, ports = make_worker()
    offer = trunk_offer(30000, formats="18").replace("a=rtpmap:8 PCMA/8000\r\n", "")
    await worker.on_work(inbound("in2", await browser_offer(), offer))
    failed = await bus.next_event(MediaFailed)
    assert failed.code == errors.NO_COMMON_CODEC
    await until(lambda: worker.active_calls == 0)
    assert ports.in_use == 0


async def test_inbound_bad_offer_is_bad_sdp(browser_offer: Any) -> None:
    worker, bus, _ = make_worker()
    await worker.on_work(inbound("in3", await browser_offer(), "v=0\r\nm=audio x RTP/AVP 0\r\n"))
    failed = await bus.next_event(MediaFailed)
    assert failed.code == errors.BAD_SDP and "m=" in failed.reason
    await until(lambda: worker.active_calls == 0)
