"""The rtpengine driver's pure parts: its config, the ng framing, the call flow."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bench import bencode
from bench.rtpengine import (
    MODES,
    NgClient,
    NgError,
    config_text,
    decode_message,
    encode_message,
    relay_call,
)


def test_config_is_userspace_on_loopback() -> None:
    text = config_text(ng_port=2223, port_min=20000, port_max=20999)
    lines = text.splitlines()
    assert lines[0] == "[rtpengine]"
    assert "table = -1" in lines
    assert "interface = 127.0.0.1" in lines
    assert "listen-ng = 127.0.0.1:2223" in lines
    assert "port-min = 20000" in lines
    assert "port-max = 20999" in lines
    assert "foreground = true" in lines
    assert "log-stderr = true" in lines
    assert "dtls-passive = true" in lines
    assert not any(line.startswith("num-threads") for line in lines)
    assert "num-threads = 2" in config_text(ng_port=1, port_min=2, port_max=3, threads=2)


def test_ng_message_framing() -> None:
    data = encode_message("c1", {"command": "ping"})
    assert data == b"c1 d7:command4:pinge"
    assert decode_message(b"c1 d6:result4:ponge") == ("c1", {"result": "pong"})


@pytest.mark.parametrize("data", [b"nospace", b"c1 i1e", b"c1 d6:result"])
def test_ng_framing_refuses_garbage(data: bytes) -> None:
    with pytest.raises(bencode.BencodeError):
        decode_message(data)


def test_modes_turn_webrtc_into_plain_rtp_and_back() -> None:
    offer, answer = MODES["webrtc"]
    assert offer["ICE"] == "remove"
    assert offer["transport-protocol"] == "RTP/AVP"
    assert offer["rtcp-mux"] == ["demux"]
    assert answer["ICE"] == "force"
    assert answer["transport-protocol"] == "UDP/TLS/RTP/SAVPF"
    assert answer["DTLS"] == "passive"
    plain_offer, plain_answer = MODES["plain"]
    assert "ICE" not in plain_offer and "transport-protocol" not in plain_answer


class FakeNg:
    """Records ng commands and answers them like rtpengine would, minus the media."""

    def __init__(self, fail_answer: bool = False) -> None:
        self.commands: list[tuple[str, dict[str, Any]]] = []
        self.fail_answer = fail_answer

    async def offer(self, call_id: str, from_tag: str, sdp: str, options: Any) -> str:
        self.commands.append(("offer", {"call-id": call_id, "from-tag": from_tag, **options}))
        return "far-offer"

    async def answer(self, call_id: str, from_tag: str, to_tag: str, sdp: str, options: Any) -> str:
        self.commands.append(("answer", {"call-id": call_id, "to-tag": to_tag, "sdp": sdp}))
        if self.fail_answer:
            raise NgError("answer: Unknown call-id")
        return "answer-for-offerer"

    async def delete(self, call_id: str, from_tag: str | None = None) -> dict[str, Any]:
        self.commands.append(("delete", {"call-id": call_id, "from-tag": from_tag}))
        return {"result": "ok", "totals": {"RTP": {"packets": 7}}}


async def test_relay_call_offers_lets_the_far_end_answer_then_answers() -> None:
    ng = FakeNg()
    seen: list[str] = []

    async def far_end(sdp: str) -> str:
        seen.append(sdp)
        return "far-answer"

    call = await relay_call(ng, "webrtc-offer", far_end, "webrtc")  # type: ignore[arg-type]
    assert seen == ["far-offer"]
    assert [c for c, _ in ng.commands] == ["offer", "answer"]
    offer = ng.commands[0][1]
    assert offer["ICE"] == "remove" and offer["call-id"] == call.call_id
    assert ng.commands[1][1]["sdp"] == "far-answer"
    assert call.answer_sdp == "answer-for-offerer"
    assert call.far_offer_sdp == "far-offer"
    await call.hangup()
    assert ng.commands[-1] == ("delete", {"call-id": call.call_id, "from-tag": call.from_tag})
    assert call.totals == {"RTP": {"packets": 7}}


async def test_a_failed_answer_deletes_the_half_made_call() -> None:
    ng = FakeNg(fail_answer=True)

    async def far_end(sdp: str) -> str:
        return "far-answer"

    with pytest.raises(NgError):
        await relay_call(ng, "offer", far_end, "plain")  # type: ignore[arg-type]
    assert [c for c, _ in ng.commands] == ["offer", "answer", "delete"]


async def test_ng_client_matches_replies_by_cookie_and_raises_errors() -> None:
    """Against a tiny UDP responder on loopback that answers like rtpengine."""
    loop = asyncio.get_running_loop()
    received: list[dict[str, Any]] = []

    class Responder(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            cookie, message = decode_message(data)
            received.append(message)
            if message["command"] == "ping":
                reply: dict[str, Any] = {"result": "pong"}
            elif message["command"] == "offer":
                reply = {"result": "ok", "sdp": message["sdp"].upper()}
            else:
                reply = {"result": "error", "error-reason": "Unknown call-id"}
            self.transport.sendto(encode_message(cookie, reply), addr)

    transport, _ = await loop.create_datagram_endpoint(Responder, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    ng = await NgClient.open("127.0.0.1", port)
    try:
        await ng.ping()
        assert await ng.offer("c", "f", "v=0", {"ICE": "remove"}) == "V=0"
        assert received[-1] == {
            "command": "offer",
            "call-id": "c",
            "from-tag": "f",
            "sdp": "v=0",
            "ICE": "remove",
        }
        with pytest.raises(NgError, match="Unknown call-id"):
            await ng.delete("nope")
    finally:
        ng.close()
        transport.close()


async def test_ng_client_gives_up_after_its_attempts() -> None:
    loop = asyncio.get_running_loop()
    silent, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    ng = await NgClient.open("127.0.0.1", silent.get_extra_info("sockname")[1])
    try:
        with pytest.raises(TimeoutError):
            await ng.request("ping", timeout=0.05, attempts=2)
    finally:
        ng.close()
        silent.close()
