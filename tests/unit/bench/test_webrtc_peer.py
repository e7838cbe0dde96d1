"""A LeanPeer against a hand-driven remote (ICE responder, DTLS, SRTP): no sockets, no loop."""

from __future__ import annotations

import struct

import pytest
from aioice import stun

from bench.dtls_srtp import DtlsSession, local_identity
from bench.ice_agent import binding_success
from bench.webrtc_peer import LeanPeer, srtp_transforms
from bench.webrtc_sdp import PCMU

HERE = ("127.0.0.1", 40000)
THERE = ("127.0.0.1", 5000)
UFRAG, PWD = "remo", "remote-password-0123456789"


def answer(setup: str) -> str:
    return "\r\n".join(
        [
            "v=0",
            "o=- 1 1 IN IP4 0.0.0.0",
            "s=-",
            "t=0 0",
            "m=audio 5000 UDP/TLS/RTP/SAVPF 0",
            "c=IN IP4 127.0.0.1",
            "a=rtcp-mux",
            "a=rtpmap:0 PCMU/8000",
            "a=ssrc:424242 cname:x",
            "a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host",
            f"a=ice-ufrag:{UFRAG}",
            f"a=ice-pwd:{PWD}",
            f"a=fingerprint:sha-256 {local_identity().fingerprint}",
            f"a=setup:{setup}",
            "",
        ]
    )


class Wire:
    """What the peer sends, as (data, address)."""

    def __init__(self) -> None:
        self.out: list[tuple[bytes, tuple[str, int]]] = []

    def send(self, data: bytes, address: tuple[str, int]) -> None:
        self.out.append((bytes(data), address))

    def take(self) -> list[bytes]:
        assert all(address == THERE for _, address in self.out)
        data = [d for d, _ in self.out]
        self.out.clear()
        return data


def connect(setup: str) -> tuple[LeanPeer, Wire, DtlsSession]:
    """Run ICE and DTLS to media; the remote DTLS session is returned."""
    wire = Wire()
    peer = LeanPeer(PCMU, *HERE, send=wire.send, peer_id=3)
    assert f"m=audio {HERE[1]} UDP/TLS/RTP/SAVPF 0" in peer.offer()
    peer.accept_answer(answer(setup), 0.0)
    assert peer.state == "checking"
    t = 0.0
    for _ in range(4):  # check, then the nomination
        for data in wire.take():
            request = stun.parse_message(data)
            assert request.check_message_integrity(PWD.encode())
            t += 0.001
            peer.datagram_received(bytes(binding_success(request, HERE, PWD)), THERE, t)
        if peer.state != "checking":
            break
    assert peer.state == "securing"
    remote = DtlsSession("client" if setup == "active" else "server", peer.remote.fingerprints)
    to_peer = remote.start(t)
    for _ in range(10):
        for data in to_peer:
            peer.datagram_received(data, THERE, t)
        to_peer = [d for data in wire.take() for d in remote.receive(data, t)]
        if not to_peer and peer.state == "media":
            break
    assert remote.state == "connected"
    assert peer.state == "media", peer.failure
    return peer, wire, remote


@pytest.mark.parametrize(("setup", "role"), [("active", "server"), ("passive", "client")])
def test_ice_dtls_then_srtp_both_ways(setup: str, role: str) -> None:
    peer, wire, remote = connect(setup)
    assert peer.dtls is not None and peer.dtls.role == role
    assert set(peer.times) == {"checking", "securing", "media"}
    protect, unprotect = srtp_transforms(remote.keys)  # the remote's (send, receive)
    peer.stream.open_window()
    peer.tick(1.0)
    (sent,) = wire.take()
    assert 127 < sent[0] < 192
    clear = bytes(unprotect.unprotect(sent))
    _, pt, _, _, ssrc = struct.unpack_from("!BBHII", clear)
    assert (pt & 0x7F, ssrc) == (0, peer.ssrc)
    assert clear[12:14] == b"LG"
    # the remote echoes the payload in its own stream
    back = struct.pack("!BBHII", 0x80, 0, 7, 0, 424242) + clear[12:]
    peer.datagram_received(bytes(protect.protect(back)), THERE, 1.004)
    assert peer.stream.packets == 1
    assert peer.stream.window_counts().echoed == 1
    assert abs(peer.stream.rtts[0] - 0.004) < 1e-9
    # a forged packet is refused and counted
    peer.datagram_received(bytes(sent[:-1]) + b"\x00", THERE, 1.01)
    assert peer.srtp_errors == 1


def test_the_peer_answers_consent_checks_after_connecting() -> None:
    peer, wire, _ = connect("active")
    request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    request.attributes["USERNAME"] = f"{peer.ice.local_ufrag}:{UFRAG}"
    request.attributes["ICE-CONTROLLED"] = 1
    request.add_message_integrity(peer.ice.local_pwd.encode())
    peer.datagram_received(bytes(request), THERE, 2.0)
    (data,) = wire.take()
    response = stun.parse_message(data)
    assert response.message_class == stun.Class.RESPONSE
    assert response.transaction_id == request.transaction_id


def test_a_bad_answer_fails_the_peer() -> None:
    wire = Wire()
    peer = LeanPeer(PCMU, *HERE, send=wire.send)
    peer.accept_answer("v=0\r\ns=-\r\n", 0.0)
    assert peer.state == "failed"
    assert "bad answer" in peer.failure
    assert wire.out == []


def test_no_rtp_before_keys_and_close_says_goodbye() -> None:
    wire = Wire()
    peer = LeanPeer(PCMU, *HERE, send=wire.send)
    peer.tick(0.0)
    assert wire.out == []
    peer, wire, remote = connect("active")
    peer.close()
    assert peer.state == "closed"
    for data in wire.take():  # the close_notify
        remote.receive(data, 3.0)
    assert remote.state == "closed"
    peer.tick(3.1)
    assert wire.out == []
