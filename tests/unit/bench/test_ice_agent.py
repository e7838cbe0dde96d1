"""The lean peer's controlling ICE agent, driven by hand: no sockets."""

from __future__ import annotations

from aioice import stun

from bench.ice_agent import (
    CHECK_TRIES,
    CONSENT_INTERVAL,
    CONSENT_TIMEOUT,
    PRFLX_PRIORITY,
    IceAgent,
    binding_request,
    binding_success,
    is_valid_request,
)

REMOTE_UFRAG, REMOTE_PWD = "rem1", "remotepassword0123456789"
A, B = ("127.0.0.1", 5000), ("192.0.2.2", 5000)


def test_binding_request_attributes_and_integrity() -> None:
    request = binding_request("rem", "loc", "secret", tie_breaker=42, nominate=True)
    parsed = stun.parse_message(bytes(request))  # checks FINGERPRINT
    assert parsed.message_class == stun.Class.REQUEST
    assert parsed.message_method == stun.Method.BINDING
    assert parsed.attributes["USERNAME"] == "rem:loc"
    assert parsed.attributes["PRIORITY"] == PRFLX_PRIORITY
    assert parsed.attributes["ICE-CONTROLLING"] == 42
    assert "USE-CANDIDATE" in parsed.attributes
    assert "FINGERPRINT" in parsed.attributes
    assert parsed.check_message_integrity(b"secret")
    assert not parsed.check_message_integrity(b"other")
    plain = stun.parse_message(bytes(binding_request("rem", "loc", "secret", 42)))
    assert "USE-CANDIDATE" not in plain.attributes


def test_is_valid_request() -> None:
    ok = stun.parse_message(bytes(binding_request("loc", "rem", "mine", 1)))
    assert is_valid_request(ok, "loc", "mine")
    assert not is_valid_request(ok, "loc", "wrong")
    assert not is_valid_request(ok, "other", "mine")
    response = stun.parse_message(bytes(binding_success(ok, A, "mine")))
    assert not is_valid_request(response, "loc", "mine")


def remote_request(agent: IceAgent, pwd: str | None = None) -> bytes:
    """A check from the controlled side (aiortc), to us."""
    message = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    message.attributes["USERNAME"] = f"{agent.local_ufrag}:{REMOTE_UFRAG}"
    message.attributes["PRIORITY"] = 1
    message.attributes["ICE-CONTROLLED"] = 7
    message.add_message_integrity((pwd or agent.local_pwd).encode())
    return bytes(message)


def respond(data: bytes, source: tuple[str, int], pwd: str = REMOTE_PWD) -> bytes:
    request = stun.parse_message(data)
    return bytes(binding_success(request, source, pwd))


def test_answers_the_remote_checks_with_our_password() -> None:
    agent = IceAgent()
    out = agent.receive(remote_request(agent), B, now=0.0)
    assert len(out) == 1
    data, address = out[0]
    assert address == B
    response = stun.parse_message(data)
    assert response.message_class == stun.Class.RESPONSE
    assert response.attributes["XOR-MAPPED-ADDRESS"] == B
    assert response.check_message_integrity(agent.local_pwd.encode())
    assert agent.requests_answered == 1


def test_ignores_checks_with_the_wrong_password_or_garbage() -> None:
    agent = IceAgent()
    assert agent.receive(remote_request(agent, pwd="x" * 24), B, 0.0) == []
    assert agent.receive(b"\x00\x01junk", B, 0.0) == []


def test_checks_every_address_then_nominates_the_first_that_answers() -> None:
    agent = IceAgent()
    out = agent.start(REMOTE_UFRAG, REMOTE_PWD, [A, B], now=0.0)
    assert [address for _, address in out] == [A, B]
    assert agent.state == "checking"
    for data, _ in out:
        request = stun.parse_message(data)
        assert request.attributes["USERNAME"] == f"{REMOTE_UFRAG}:{agent.local_ufrag}"
        assert request.check_message_integrity(REMOTE_PWD.encode())
        assert "USE-CANDIDATE" not in request.attributes
    # B answers: nominate it
    nominate = agent.receive(respond(out[1][0], B), B, now=0.01)
    assert len(nominate) == 1 and nominate[0][1] == B
    assert "USE-CANDIDATE" in stun.parse_message(nominate[0][0]).attributes
    assert agent.state == "checking"
    # A answering late starts no second nomination
    assert agent.receive(respond(out[0][0], A), A, now=0.012) == []
    agent.receive(respond(nominate[0][0], B), B, now=0.02)
    assert agent.state == "connected"
    assert agent.selected == B


def test_a_response_keyed_with_another_password_is_ignored() -> None:
    agent = IceAgent()
    out = agent.start(REMOTE_UFRAG, REMOTE_PWD, [B], now=0.0)
    assert agent.receive(respond(out[0][0], B, pwd="w" * 24), B, 0.01) == []
    assert agent.state == "checking"


def test_a_response_from_elsewhere_fails_the_check() -> None:
    agent = IceAgent()
    out = agent.start(REMOTE_UFRAG, REMOTE_PWD, [B], now=0.0)
    agent.receive(respond(out[0][0], A), A, 0.01)
    assert agent.state == "failed"


def test_retransmits_then_fails() -> None:
    agent = IceAgent()
    first = agent.start(REMOTE_UFRAG, REMOTE_PWD, [B], now=0.0)
    sent = [first[0][0]]
    t = 0.0
    for _ in range(100):
        if agent.state != "checking":
            break
        t = agent.next_timer
        sent += [data for data, _ in agent.poll(t)]
    assert agent.state == "failed"
    assert len(sent) == CHECK_TRIES
    assert len(set(sent)) == 1  # the same transaction each time
    assert "timed out" in agent.failure


def test_no_candidates_fails_at_once() -> None:
    agent = IceAgent()
    assert agent.start(REMOTE_UFRAG, REMOTE_PWD, [], 0.0) == []
    assert agent.state == "failed"


def connected_agent() -> IceAgent:
    agent = IceAgent()
    out = agent.start(REMOTE_UFRAG, REMOTE_PWD, [B], 0.0)
    nominate = agent.receive(respond(out[0][0], B), B, 0.001)
    agent.receive(respond(nominate[0][0], B), B, 0.002)
    assert agent.state == "connected"
    return agent


def test_consent_checks_every_few_seconds() -> None:
    agent = connected_agent()
    assert agent.poll(1.0) == []
    t = agent.next_timer
    assert 0.8 * CONSENT_INTERVAL <= t <= 1.2 * CONSENT_INTERVAL + 0.01
    out = agent.poll(t)
    assert len(out) == 1 and out[0][1] == B
    request = stun.parse_message(out[0][0])
    assert "USE-CANDIDATE" not in request.attributes
    agent.receive(respond(out[0][0], B), B, t + 0.001)
    assert (agent.consent_sent, agent.consent_ok) == (1, 1)
    assert agent.state == "connected"


def test_consent_expires_without_answers() -> None:
    agent = connected_agent()
    t = 0.0
    for _ in range(100):
        if agent.state != "connected":
            break
        t = agent.next_timer
        agent.poll(t)
    assert agent.state == "failed"
    assert "consent" in agent.failure
    assert CONSENT_TIMEOUT <= t <= CONSENT_TIMEOUT + 0.01
