"""An INVITE arrives: who may call, what it rings, what the trunk hears when refused."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any, cast

import pytest
from sipmessage import Request, Response

from proto import errors, subjects
from proto.events import (
    AcceptRequested,
    AnswerRequested,
    CallAnswered,
    CallArrived,
    CallClaimed,
    CallEnded,
    RingingStarted,
)
from services.common.dialplan import parse_pattern
from services.common.inbound_routes import InboundAuth, InboundRoute, default_user_route
from services.common.metrics import Metrics
from services.common.nats_access import may_publish, may_subscribe
from services.common.providers import Trunk
from services.common.settings import Settings, SettingsError, load_settings
from services.common.sip.auth import DigestAuthenticator
from services.common.sip.message import parse_message
from services.sipagent.agent import AgentConfig, SipAgent
from services.sipagent.app import SipAgentService, inbound_door
from services.sipagent.hosted import SipCall
from services.sipagent.inbound import Arrival, InboundDoor, inbound_calls
from services.sipagent.inbound_call import InboundCall
from services.sipagent.trunk_auth import DigestTrunks
from tests.unit.sipagent.test_agent import TRUNK, FakeBus, FakeTransport, until

TRUNK_IP = "198.51.100.10"
SDP = (
    "v=0\r\no=trunk 1 1 IN IP4 198.51.100.10\r\ns=-\r\nc=IN IP4 198.51.100.10\r\n"
    "t=0 0\r\nm=audio 4000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
)


def invite(
    did: str = "+15550001111",
    *,
    uri_user: str | None = None,
    sdp: str | None = SDP,
    authorization: str = "",
    caller: str = '"Ann \\"A\\" Caller" <sip:+15557654321@198.51.100.10>',
) -> Request:
    body = (sdp or "").encode()
    lines = [
        f"INVITE sip:{uri_user if uri_user is not None else did}@192.0.2.1 SIP/2.0",
        "Via: SIP/2.0/UDP 198.51.100.10:5060;branch=z9hG4bK-1",
        f"From: {caller};tag=abc",
        f"To: <sip:{did}@192.0.2.1>",
        "Call-ID: sip-call-1",
        "CSeq: 1 INVITE",
        "Contact: <sip:trunk@198.51.100.10:5060>",
        "Max-Forwards: 70",
    ]
    if authorization:
        lines.append(f"Authorization: {authorization}")
    if sdp is not None:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    assert isinstance(message, Request)
    return message


class FakeCall:
    def __init__(self, call_id: str, sip_call_id: str) -> None:
        self.call_id = call_id
        self.sip_call_id = sip_call_id


class Door:
    """An ``InboundDoor`` with fakes around it, and what it did."""

    def __init__(
        self,
        routes: tuple[InboundRoute, ...] | None = None,
        *,
        options: dict[str, Any] | None = None,
        **trunk: Any,
    ) -> None:
        self.built: list[tuple[str, tuple[str, int], str, str]] = []
        self.refusals: list[tuple[str, int]] = []
        self.limits: list[float] = []
        self.drop = False
        trunks = {
            "default": Trunk(name="default", host=TRUNK_IP),
            "carrier": Trunk(name="carrier", host="sip.carrier.example", **trunk),
        }
        if routes is None:
            routes = (
                InboundRoute(
                    match=parse_pattern("+1555000*"), users=("bob", "carol"), trunk="carrier"
                ),
                default_user_route("alice", 30.0, "default"),
            )
        self.clock = 1_000_000.0
        auth = DigestTrunks(trunks.values(), clock=lambda: self.clock)
        self.door = InboundDoor(
            trunks,
            routes,
            self._new_call,
            trunks_at=lambda host: ("default",) if host == TRUNK_IP else (),
            auth=auth if auth else None,
            refused=self._refused,
            **{"call_ids": lambda: "in-1", **(options or {})},
        )

    def _new_call(
        self,
        request: Request,
        call_id: str,
        source: tuple[str, int],
        transport: str,
        trunk: Trunk,
        max_unanswered: float,
    ) -> SipCall:
        self.limits.append(max_unanswered)
        self.built.append((call_id, source, transport, trunk.name))
        return cast(SipCall, FakeCall(call_id, request.call_id))

    def _refused(self, source: tuple[str, int], now: float) -> bool:
        self.refusals.append(source)
        return not self.drop

    def offer(self, request: Request, host: str = TRUNK_IP) -> object:
        return self.door.on_invite(request, (host, 5060), "udp", 10.0)


def status(result: object) -> int:
    assert isinstance(result, Response), result
    return result.code


def test_an_invite_from_the_env_trunk_rings_inbound_user() -> None:
    door = Door()
    call = door.offer(invite())
    assert isinstance(call, FakeCall) and call.call_id == "in-1"
    assert door.built == [("in-1", (TRUNK_IP, 5060), "udp", "default")]
    arrival = door.door.next_arrival()
    assert isinstance(arrival, Arrival)
    assert (arrival.trunk, arrival.called, arrival.caller) == (
        "default",
        "+15550001111",
        "+15557654321",
    )
    assert arrival.caller_name == 'Ann "A" Caller'
    assert arrival.offer_sdp == SDP and arrival.sip_call_id == "sip-call-1"
    event = arrival.event("agent-1")
    assert event.users == ("alice",) and event.ring_timeout == 30.0
    assert event.sipagent_id == "agent-1" and event.trunk == "default"
    assert door.door.next_arrival() is None


def test_a_source_that_is_no_trunk_gets_403_and_rings_nobody() -> None:
    door = Door()
    assert status(door.offer(invite(), host="203.0.113.99")) == 403
    assert door.refusals == [("203.0.113.99", 5060)]
    assert door.built == [] and door.door.next_arrival() is None
    door.drop = True  # SIP_UNKNOWN_SOURCES=drop
    assert door.offer(invite(), host="203.0.113.99") is None


def test_inbound_from_networks_name_the_trunk() -> None:
    door = Door(inbound_from=(ipaddress.ip_network("203.0.113.0/24"),))
    call = door.offer(invite("+15550002222"), host="203.0.113.7")
    assert isinstance(call, FakeCall)
    arrival = door.door.next_arrival()
    assert arrival is not None and arrival.trunk == "carrier"
    assert arrival.route.users == ("bob", "carol")


def answer(challenge: object, username: str, password: str, did: str = "+15550001111") -> str:
    """What the trunk sends back: ``Authorization`` for the retried INVITE."""
    assert isinstance(challenge, Response)
    request = invite(did)
    _, value = DigestAuthenticator(username, password).authorize(
        challenge, "INVITE", str(request.uri)
    )
    return value


def test_digest_trunks_are_challenged_then_admitted() -> None:
    door = Door(inbound_auth=InboundAuth(username="twilio", password="pw"))
    first = door.offer(invite("+15550002222"), host="203.0.113.7")
    assert status(first) == 401
    assert isinstance(first, Response) and first.headers.get("WWW-Authenticate")
    assert door.refusals == []  # a challenge is no refusal
    retry = invite("+15550002222", authorization=answer(first, "twilio", "pw", "+15550002222"))
    call = door.offer(retry, host="203.0.113.7")
    assert isinstance(call, FakeCall)
    arrival = door.door.next_arrival()
    assert arrival is not None and arrival.trunk == "carrier"


def test_a_wrong_digest_answer_or_user_gets_403() -> None:
    door = Door(inbound_auth=InboundAuth(username="twilio", password="pw"))
    first = door.offer(invite(), host="203.0.113.7")
    wrong = invite(authorization=answer(first, "twilio", "guess"))
    assert status(door.offer(wrong, host="203.0.113.7")) == 403
    stranger = invite(authorization=answer(first, "mallory", "pw"))
    assert status(door.offer(stranger, host="203.0.113.7")) == 403
    assert len(door.refusals) == 2 and door.built == []


def test_an_expired_nonce_gets_a_stale_challenge() -> None:
    door = Door(inbound_auth=InboundAuth(username="twilio", password="pw"))
    first = door.offer(invite(), host="203.0.113.7")
    door.clock += 3600
    again = door.offer(invite(authorization=answer(first, "twilio", "pw")), host="203.0.113.7")
    assert status(again) == 401
    assert isinstance(again, Response)
    assert "stale=true" in (again.headers.get("WWW-Authenticate") or "")
    assert door.refusals == []


def test_no_sdp_offer_gets_488() -> None:
    door = Door()
    assert status(door.offer(invite(sdp=None))) == 488
    assert door.built == []


def test_a_number_no_entry_takes_gets_404() -> None:
    door = Door(routes=())
    assert status(door.offer(invite())) == 404
    assert door.refusals == [] and door.built == []


def test_the_to_user_is_the_did_when_a_registrar_rewrote_the_request_uri() -> None:
    routes = (InboundRoute(match=parse_pattern("+15550001111"), users=("alice",)),)
    door = Door(routes=routes)
    call = door.offer(invite("+15550001111", uri_user="bridge-contact"))
    assert isinstance(call, FakeCall)
    arrival = door.door.next_arrival()
    assert arrival is not None and arrival.called == "+15550001111"


def test_draining_answers_503() -> None:
    door = Door()
    door.door.open = False
    result = door.offer(invite())
    assert status(result) == 503
    assert isinstance(result, Response) and result.headers.get("Retry-After") == "5"


def test_the_agent_builds_an_inbound_call_that_says_100_at_once() -> None:
    trunks = {"default": Trunk(name="default", host=TRUNK_IP, username="acct")}
    door = InboundDoor(
        trunks,
        (default_user_route("alice", 30.0, "default"),),
        inbound_calls(lambda addr, transport: "192.0.2.1:5070"),
        trunks_at=lambda host: ("default",),
    )
    call = door.on_invite(invite(), (TRUNK_IP, 5060), "udp", 10.0)
    assert isinstance(call, InboundCall)
    assert call.call_id == door.next_arrival().call_id  # type: ignore[union-attr]
    call.start(10.0)
    sent = call.messages_to_send()
    assert [message.code for message in sent if isinstance(message, Response)] == [100]


def test_an_invite_the_bridge_cannot_answer_gets_the_call_s_refusal() -> None:
    door = Door()
    request = invite()
    request.headers.add("Require", "100rel")
    result = door.offer(request)
    assert status(result) == 420
    assert isinstance(result, Response) and result.headers.get("Unsupported") == "100rel"
    assert door.built == []


# --- the service: an INVITE through the agent, the ring over the bus ----------------------


async def ringing_service(
    metrics: Metrics | None = None, **overrides: Any
) -> tuple[SipAgent, FakeTransport, FakeBus, SipAgentService]:
    """An agent on a fake transport, its service on a fake bus, wired as ``main`` wires them:
    the ``.env`` trunk at ``TRUNK``, ``INBOUND_USER=alice``, ``SIP_INBOUND_FROM`` a range."""
    transport = FakeTransport()
    config = AgentConfig(trunk_host=TRUNK[0], trunk_port=TRUNK[1], public_ip="192.0.2.1")
    agent = SipAgent(config, transport, metrics=metrics)
    await agent.start()
    agent.know_trunks([agent.default_trunk()])
    settings = Settings(
        sip_trunk_host=TRUNK[0],
        sip_trunk_port=TRUNK[1],
        inbound_user="alice",
        sip_inbound_from=(ipaddress.ip_network("198.51.100.0/24"),),
        **overrides,
    )
    door = inbound_door(agent, settings, metrics)
    bus = FakeBus()
    service = SipAgentService(bus, agent, "sa1", door=door)  # type: ignore[arg-type]
    agent.on_call = service.on_inbound_call
    agent.on_invite = door.on_invite
    return agent, transport, bus, service


def responses(transport: FakeTransport) -> list[int]:
    return [message.code for message, _ in transport.sent if isinstance(message, Response)]


def in_dialog(method: str, invite: Request, final: Response, cseq: int, branch: str) -> bytes:
    """A request of the trunk in the dialog its INVITE made (ACK, BYE) or about it (CANCEL)."""
    to = final.headers["To"] if method != "CANCEL" else invite.headers["To"]
    number = 1 if method in ("ACK", "CANCEL") else cseq
    lines = [
        f"{method} {invite.uri} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch={branch}",
        f"From: {invite.headers['From']}",
        f"To: {to}",
        f"Call-ID: {invite.call_id}",
        f"CSeq: {number} {method}",
        "Max-Forwards: 70",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_an_inbound_call_rings_is_claimed_answered_and_hung_up() -> None:
    agent, transport, bus, service = await ringing_service()
    request = invite()
    agent.receive(bytes(request), TRUNK)
    assert responses(transport) == [100]
    await until(lambda: bool(bus.published))
    subject, arrived = bus.published[0]
    assert subject == subjects.inbound_calls("alice") and isinstance(arrived, CallArrived)
    call_id = arrived.call_id
    assert arrived.users == ("alice",) and arrived.called == "+15550001111"
    on_signaling = bus.handlers[subjects.call_events(call_id, "signaling")]

    await on_signaling(RingingStarted(call_id=call_id, signaling_id="s1", listeners=1))
    await until(lambda: 180 in responses(transport))
    await on_signaling(AcceptRequested(call_id=call_id, signaling_id="s1", identity="alice"))
    await until(lambda: any(isinstance(e, CallClaimed) for e in bus.events()))
    await on_signaling(AnswerRequested(call_id=call_id, media_id="m1", answer_sdp=SDP))
    await until(lambda: 200 in responses(transport))
    ok = next(m for m, _ in transport.sent if isinstance(m, Response) and m.code == 200)
    assert ok.body.decode() == SDP

    agent.receive(in_dialog("ACK", request, ok, 1, "z9hG4bK-ack"), TRUNK)
    await until(lambda: any(isinstance(e, CallAnswered) for e in bus.events()))
    answered = next(e for e in bus.events() if isinstance(e, CallAnswered))
    assert answered.answer_sdp == SDP  # the trunk's offer: its side of the session
    assert service.holds(call_id)

    agent.receive(in_dialog("BYE", request, ok, 2, "z9hG4bK-bye"), TRUNK)
    await until(lambda: any(isinstance(e, CallEnded) for e in bus.events()))
    ended = next(e for e in bus.events() if isinstance(e, CallEnded))
    assert ended.cause == errors.REMOTE_HANGUP
    await until(lambda: not service.holds(call_id))
    await service.shutdown(grace=0.1)
    await agent.close()


async def test_cancel_while_ringing_ends_the_call_cancelled() -> None:
    agent, transport, bus, service = await ringing_service()
    request = invite()
    agent.receive(bytes(request), TRUNK)
    await until(lambda: bool(bus.published))
    call_id = bus.published[0][1].call_id
    on_signaling = bus.handlers[subjects.call_events(call_id, "signaling")]
    await on_signaling(RingingStarted(call_id=call_id, signaling_id="s1", listeners=2))
    await until(lambda: 180 in responses(transport))
    ringing = next(m for m, _ in transport.sent if isinstance(m, Response) and m.code == 180)

    agent.receive(in_dialog("CANCEL", request, ringing, 1, "z9hG4bK-1"), TRUNK)
    await until(lambda: any(isinstance(e, CallEnded) for e in bus.events()))
    ended = next(e for e in bus.events() if isinstance(e, CallEnded))
    assert ended.cause == errors.CANCELLED
    assert 487 in responses(transport)
    assert all(not isinstance(e, CallClaimed) for e in bus.events())
    await service.shutdown(grace=0.1)
    await agent.close()


async def test_a_stranger_s_invite_gets_403_and_nothing_is_announced() -> None:
    metrics = Metrics()
    agent, transport, bus, service = await ringing_service(metrics)
    agent.receive(bytes(invite()), ("203.0.113.50", 5060))
    await until(lambda: bool(transport.sent))
    assert responses(transport) == [403]
    await asyncio.sleep(0.01)
    assert bus.published == [] and service.active_calls == 0
    refused = metrics.registry.get_sample_value(
        "bridge_sip_refused_total", {"reason": "unknown_source"}
    )
    assert refused == 1
    await agent.close()


async def test_an_invite_from_the_inbound_from_range_rings() -> None:
    agent, transport, bus, service = await ringing_service()
    agent.receive(bytes(invite()), ("198.51.100.77", 5060))
    assert responses(transport) == [100]
    await until(lambda: bool(bus.published))
    subject, arrived = bus.published[0]
    assert isinstance(arrived, CallArrived) and arrived.trunk == "default"
    # The locked bus lets the SIP agent say it, and signaling hear it.
    assert may_publish("sipagent", subject) and may_subscribe("signaling", subject)
    assert not may_publish("signaling", subject) and not may_subscribe("media", subject)
    await service.shutdown(grace=0.1)
    await agent.close()


# --- what a review found ------------------------------------------------------------------


def test_the_nonce_key_is_a_random_secret_not_the_trunks_passwords() -> None:
    trunks = [Trunk(name="carrier", host="x", inbound_auth=InboundAuth("twilio", "pw"))]
    secret = b"a shared secret of 16+ bytes"
    # The opaque (an HMAC under the nonce key) is the same for any password with one
    # secret, and differs between two processes with the same passwords and no secret.
    one = DigestTrunks(trunks, secret=secret).check(invite())
    other_password = [
        Trunk(name="carrier", host="x", inbound_auth=InboundAuth("twilio", "another"))
    ]
    two = DigestTrunks(other_password, secret=secret).check(invite())
    assert isinstance(one, Response) and isinstance(two, Response)
    assert _opaque(one) == _opaque(two)
    assert _opaque(DigestTrunks(trunks).check(invite())) != _opaque(
        DigestTrunks(trunks).check(invite())
    )


def _opaque(challenge: object) -> str:
    assert isinstance(challenge, Response)
    value = challenge.headers.get("WWW-Authenticate") or ""
    return value.split('opaque="', 1)[1].split('"', 1)[0]


def test_replicas_sharing_sip_nonce_secret_accept_each_other_s_nonces() -> None:
    trunks = [Trunk(name="carrier", host="x", inbound_auth=InboundAuth("twilio", "pw"))]
    secret = b"the replicas' shared secret"
    first, second = (DigestTrunks(trunks, secret=secret, clock=lambda: 1e6) for _ in "12")
    challenge = first.check(invite())
    retry = invite(authorization=answer(challenge, "twilio", "pw"))
    assert second.check(retry) == "carrier"


def test_without_a_shared_secret_a_retry_at_another_replica_gets_a_fresh_401() -> None:
    auth = InboundAuth(username="twilio", password="pw")
    first_door, second_door = Door(inbound_auth=auth), Door(inbound_auth=auth)
    first = first_door.offer(invite(), host="203.0.113.7")
    retry = invite(authorization=answer(first, "twilio", "pw"))
    again = second_door.offer(retry, host="203.0.113.7")
    assert status(again) == 401
    assert isinstance(again, Response)
    assert "stale" not in (again.headers.get("WWW-Authenticate") or "")
    assert second_door.refusals == [] and second_door.built == []


KEY = "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"
"An SDES key (a test value)."


def _sdp(media: str, extra: str = "") -> str:
    return (
        "v=0\r\no=trunk 1 1 IN IP4 198.51.100.10\r\ns=-\r\nc=IN IP4 198.51.100.10\r\n"
        f"t=0 0\r\n{media}\r\n{extra}"
    )


def test_an_offer_media_cannot_take_gets_488_with_a_warning_and_rings_nobody() -> None:
    cannot = {
        "garbage": "this is not SDP",
        "no audio": _sdp("m=video 4000 RTP/AVP 96", "a=rtpmap:96 H264/90000\r\n"),
        "port 0": _sdp("m=audio 0 RTP/AVP 0"),
        "no codec": _sdp("m=audio 4000 RTP/AVP 18", "a=rtpmap:18 G729/8000\r\n"),
        "not rtp": _sdp("m=audio 4000 udp 0"),
        "srtp off": _sdp(
            "m=audio 4000 RTP/SAVP 0", f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 {KEY}\r\n"
        ),
        "bad port": _sdp("m=audio 99999 RTP/AVP 0"),
    }
    for why, body in cannot.items():
        door = Door()
        result = door.offer(invite(sdp=body))
        assert status(result) == 488, why
        assert isinstance(result, Response)
        assert (result.headers.get("Warning") or "").startswith('399 - "'), why
        assert door.built == [] and door.door.next_arrival() is None, why


def test_offers_media_can_take_ring() -> None:
    crypto = f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 {KEY}\r\n"
    fine = {
        "opus": (_sdp("m=audio 4000 RTP/AVP 96", "a=rtpmap:96 opus/48000/2\r\n"), "off"),
        "g722 static": (_sdp("m=audio 4000 RTP/AVP 9"), "off"),
        "pcma after g729": (_sdp("m=audio 4000 RTP/AVP 18 8"), "off"),
        "srtp optional": (_sdp("m=audio 4000 RTP/SAVP 0", crypto), "optional"),
    }
    carrier = (ipaddress.ip_network("203.0.113.0/24"),)
    for why, (body, srtp) in fine.items():
        door = Door(srtp=srtp, inbound_from=carrier)
        call = door.offer(invite("+15550002222", sdp=body), host="203.0.113.7")
        assert isinstance(call, FakeCall), why


def test_beyond_max_ringing_the_door_answers_486_and_counts_it() -> None:
    ringing: set[str] = set()
    busy: list[int] = []
    calls = iter(f"in-{n}" for n in range(10))
    door = Door(
        options={
            "max_ringing": 2,
            "busy": lambda: busy.append(1),
            "is_unanswered": lambda call: call.call_id in ringing,
            "call_ids": lambda: next(calls),
        }
    )
    for _ in range(2):
        call = door.offer(invite())
        assert isinstance(call, FakeCall)
        ringing.add(call.call_id)
    assert status(door.offer(invite())) == 486
    assert busy == [1] and len(door.built) == 2
    ringing.discard("in-0")  # answered (or ended): it no longer counts
    assert isinstance(door.offer(invite()), FakeCall)


def test_the_door_gives_each_call_a_backstop_past_its_ring_and_answer_wait() -> None:
    door = Door(options={"answer_wait": 45.0})
    door.offer(invite())
    arrival = door.door.next_arrival()
    assert arrival is not None and arrival.answer_wait == 45.0
    assert door.limits == [30.0 + 45.0 + 10.0]


async def test_without_on_call_an_admitted_invite_gets_503_not_a_call_that_waits() -> None:
    agent, transport, _, service = await ringing_service()
    agent.on_call = None
    agent.receive(bytes(invite()), TRUNK)
    await until(lambda: 503 in responses(transport))
    assert responses(transport) == [100, 503]
    await service.shutdown(grace=0.1)
    await agent.close()


async def test_inbound_max_ringing_refuses_486_in_the_refusal_metric() -> None:
    metrics = Metrics()
    agent, transport, bus, service = await ringing_service(metrics, inbound_max_ringing=1)
    agent.receive(bytes(invite()), TRUNK)
    await until(lambda: bool(bus.published))
    second = invite()
    second.headers.set("Call-ID", "second@198.51.100.10")
    agent.receive(bytes(second), TRUNK)
    await until(lambda: 486 in responses(transport))
    refused = metrics.registry.get_sample_value(
        "bridge_sip_refused_total", {"reason": "too_many_ringing"}
    )
    assert refused == 1 and len(bus.published) == 1
    await service.shutdown(grace=0.1)
    await agent.close()


async def _rung(
    service_parts: tuple[SipAgent, FakeTransport, FakeBus, SipAgentService],
) -> tuple[str, Request]:
    agent, transport, bus, _ = service_parts
    request = invite()
    agent.receive(bytes(request), TRUNK)
    await until(lambda: bool(bus.published))
    call_id = bus.published[0][1].call_id
    on_signaling = bus.handlers[subjects.call_events(call_id, "signaling")]
    await on_signaling(RingingStarted(call_id=call_id, signaling_id="s1", listeners=1))
    await until(lambda: 180 in responses(transport))
    return call_id, request


async def test_a_late_ring_after_the_answer_is_told_the_claim_again() -> None:
    parts = await ringing_service()
    agent, transport, bus, service = parts
    call_id, _ = await _rung(parts)
    on_signaling = bus.handlers[subjects.call_events(call_id, "signaling")]
    await on_signaling(AcceptRequested(call_id=call_id, signaling_id="s1", identity="alice"))
    await on_signaling(AnswerRequested(call_id=call_id, media_id="m1", answer_sdp=SDP))
    await until(lambda: 200 in responses(transport))
    await asyncio.sleep(0.01)  # the ring is handed over
    await on_signaling(RingingStarted(call_id=call_id, signaling_id="s2", listeners=1))
    claims = [e for e in bus.events() if isinstance(e, CallClaimed)]
    assert claims[-1] == CallClaimed(call_id=call_id, signaling_id="s1") and len(claims) == 2
    await service.shutdown(grace=0.1)
    await agent.close()


async def test_an_operator_hangs_up_a_ringing_call_480_and_cause_operator() -> None:
    parts = await ringing_service()
    agent, transport, bus, service = parts
    call_id, _ = await _rung(parts)
    assert service.end_ringing(call_id, errors.OPERATOR)
    await until(lambda: any(isinstance(e, CallEnded) for e in bus.events()))
    ended = next(e for e in bus.events() if isinstance(e, CallEnded))
    assert ended.cause == errors.OPERATOR and ended.status == 480
    assert 480 in responses(transport) and 487 not in responses(transport)
    assert not service.end_ringing("in-unknown", errors.OPERATOR)
    await until(lambda: not service.holds(call_id))
    await service.shutdown(grace=0.1)
    await agent.close()


async def test_a_ringing_call_at_shutdown_gets_503_with_retry_after_not_487() -> None:
    parts = await ringing_service()
    agent, transport, _, service = parts
    await _rung(parts)
    await service.shutdown(grace=0.5)
    final = next(m for m, _ in transport.sent if isinstance(m, Response) and m.code >= 300)
    assert final.code == 503 and final.headers.get("Retry-After") == "5"
    await agent.close()


def test_sip_nonce_secret_is_checked_and_never_shown() -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({"SIP_NONCE_SECRET": "too-short"}, dotenv=None)
    assert "too-short" not in str(raised.value)
    secret = "a-secret-of-more-than-16-bytes"
    settings = load_settings({"SIP_NONCE_SECRET": secret, "INBOUND_MAX_RINGING": "7"}, dotenv=None)
    assert secret not in repr(settings)
    with pytest.raises(SettingsError):
        load_settings({"INBOUND_MAX_RINGING": "0"}, dotenv=None)
