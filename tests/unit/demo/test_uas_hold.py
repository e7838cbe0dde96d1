"""The demo peer answers a hold and a resume re-INVITE and keeps echoing on the same port."""

from __future__ import annotations

from sipmessage import Request, Response

from services.demo.uas import DemoUas

from .test_uas import LOCAL, OFFER, FakePorts, Peer, codes


def test_hold_and_resume_reinvites_are_answered_on_the_same_port() -> None:
    ports = FakePorts()
    peer = Peer(DemoUas(local_addr=LOCAL, rtp_host="127.0.0.1", rtp_ports=ports))
    tag = peer.answered_call()
    port = ports.open_calls["call-1"]

    hold = peer.request(
        "INVITE", cseq=2, body=OFFER + b"a=sendonly\r\n", to_tag=tag, branch="z9hG4bKh"
    )
    [ok] = peer.send(hold)
    assert isinstance(ok, Response) and ok.code == 200
    body = ok.body.decode()
    assert "a=recvonly" in body and f"m=audio {port} " in body
    assert "a=rtpmap:101 telephone-event/8000" in body
    peer.send(peer.request("ACK", cseq=2, to_tag=tag, branch="z9hG4bKack2"))

    resume = peer.request(
        "INVITE", cseq=3, body=OFFER + b"a=sendrecv\r\n", to_tag=tag, branch="z9hG4bKr"
    )
    [ok] = peer.send(resume)
    assert codes([ok]) == [200]
    assert "a=sendrecv" in ok.body.decode() and f"m=audio {port} " in ok.body.decode()
    peer.send(peer.request("ACK", cseq=3, to_tag=tag, branch="z9hG4bKack3"))
    # The echo is still up: nothing was closed, and a BYE ends the call as usual.
    assert ports.closed == []
    assert codes(peer.send(peer.request("BYE", cseq=4, to_tag=tag, branch="z9hG4bKb"))) == [200]


def test_bye_after_a_reinvite_keeps_the_route_set_of_the_first_invite() -> None:
    peer = Peer(DemoUas(local_addr=LOCAL, rtp_host="127.0.0.1", rtp_ports=FakePorts()))
    invite = peer.request("INVITE", body=OFFER)
    invite.headers.add("Record-Route", "<sip:proxy.test;lr>")
    peer.send(invite)
    ok = peer.advance(1.0)[0]
    assert isinstance(ok, Response) and ok.code == 200
    tag = ok.to_address.parameters["tag"]
    peer.send(peer.request("ACK", to_tag=tag, branch="z9hG4bKack"))
    # In-dialog requests carry Route, not Record-Route: the route set must not change.
    hold = peer.request(
        "INVITE", cseq=2, body=OFFER + b"a=sendonly\r\n", to_tag=tag, branch="z9hG4bKh"
    )
    assert codes(peer.send(hold)) == [200]
    peer.send(peer.request("ACK", cseq=2, to_tag=tag, branch="z9hG4bKack2"))

    peer.uas.shutdown(peer.now)
    sent = peer.flush()
    [bye] = [m for m in sent if isinstance(m, Request)]
    assert bye.method == "BYE", sent
    assert bye.headers.getlist("Route") == ["<sip:proxy.test;lr>"]
