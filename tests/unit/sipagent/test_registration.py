"""REGISTER toward a trunk: the sans-I/O core against an in-memory registrar, fake clock."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pytest
from sipmessage import Request

from services.common.sip.auth import digest_response
from services.sipagent.registration import (
    BACKOFF_MAX,
    BACKOFF_MIN,
    UNREGISTER_TIMEOUT,
    Registration,
    RegistrationState,
    backoff_delay,
    refresh_delay,
)
from tests.unit.sipagent.trunk import PASSWORD, USERNAME, auth_params, respond, wire

CONTACT = f"<sip:{USERNAME}@192.0.2.1:5070;transport=udp>"
CHALLENGE = 'Digest realm="trunk.test", nonce="n1", algorithm=MD5, qop="auth"'


def make_registration(**overrides: object) -> Registration:
    params: dict[str, object] = {
        "trunk": "default",
        "registrar": "198.51.100.7:5060",
        "domain": "trunk.test",
        "username": USERNAME,
        "password": PASSWORD,
        "contact": CONTACT,
        "sent_by": "192.0.2.1:5070",
        "expires": 600,
        "rng": lambda: 0.0,
    }
    params.update(overrides)
    return Registration(**params)  # type: ignore[arg-type]


@dataclass
class Registrar:
    """A registration, a fake clock and the REGISTERs it sent, through the wire."""

    registration: Registration = field(default_factory=make_registration)
    now: float = 0.0
    sent: list[Request] = field(default_factory=list)

    def pump(self) -> list[Request]:
        out: list[Request] = []
        for message in wire(self.registration.messages_to_send()):
            assert isinstance(message, Request)
            out.append(message)
        self.sent += out
        return out

    def start(self) -> Request:
        self.registration.start(self.now)
        (request,) = self.pump()
        return request

    def answer(self, request: Request, code: int, phrase: str = "", **kw: object) -> list[Request]:
        response = respond(request, code, phrase, **kw)  # type: ignore[arg-type]
        self.registration.receive(wire([response])[0], self.now)  # type: ignore[arg-type]
        return self.pump()

    def challenge(self, request: Request, value: str = CHALLENGE, code: int = 401) -> Request:
        header = "WWW-Authenticate" if code == 401 else "Proxy-Authenticate"
        (again,) = self.answer(request, code, "Unauthorized", headers=[(header, value)])
        return again

    def ok(self, request: Request, headers: list[tuple[str, str]] | None = None) -> None:
        assert self.answer(request, 200, headers=headers) == []

    def advance(self, to: float) -> list[Request]:
        """Fire every timer up to ``to``; what was sent meanwhile."""
        out: list[Request] = []
        while (timer := self.registration.get_timer()) is not None and timer <= to:
            self.now = timer
            self.registration.handle_timer(timer)
            out += self.pump()
        self.now = to
        return out

    def next_register(self) -> Request:
        """Run the clock to the next REGISTER that is not a retransmission."""
        known = {request.headers["CSeq"] for request in self.sent}
        while True:
            timer = self.registration.get_timer()
            assert timer is not None, "no REGISTER is coming"
            for request in self.advance(timer):
                if request.headers["CSeq"] not in known:
                    return request

    def state(self) -> RegistrationState:
        return self.registration.state


def cseq(request: Request) -> int:
    return request.cseq.sequence


def registered(reg: Registrar, granted: str = "") -> Request:
    first = reg.start()
    second = reg.challenge(first)
    headers = [("Contact", f"{CONTACT};expires={granted}")] if granted else None
    reg.ok(second, headers)
    return second


def test_register_401_then_authorized_register_then_200() -> None:
    reg = Registrar()
    first = reg.start()
    assert reg.state() is RegistrationState.REGISTERING
    assert str(first.uri) == "sip:trunk.test"
    assert first.headers["To"] == f"<sip:{USERNAME}@trunk.test>"
    assert first.headers["From"].startswith(f"<sip:{USERNAME}@trunk.test>;tag=")
    assert first.headers["Contact"] == CONTACT
    assert first.headers["Expires"] == "600"
    assert first.headers.get("Authorization") is None

    second = reg.challenge(first)
    assert second.call_id == first.call_id
    assert cseq(second) == cseq(first) + 1
    assert second.headers["From"] == first.headers["From"]
    params = auth_params(second)
    assert params["uri"] == "sip:trunk.test"
    assert params["username"] == USERNAME
    expected = digest_response(
        algorithm="MD5",
        username=USERNAME,
        realm="trunk.test",
        password=PASSWORD,
        method="REGISTER",
        uri="sip:trunk.test",
        nonce="n1",
        qop="auth",
        nc=params["nc"],
        cnonce=params["cnonce"],
    )
    assert params["response"] == expected

    reg.ok(second, [("Contact", f"{CONTACT};expires=120")])
    assert reg.state() is RegistrationState.REGISTERED
    status = reg.registration.status(reg.now)
    assert status.expires_at == 120.0  # what the registrar granted, not the 600 asked
    assert status.status_code == 200
    assert status.next_attempt_at == 90.0


def test_proxy_challenge_answered_with_proxy_authorization() -> None:
    reg = Registrar()
    second = reg.challenge(reg.start(), code=407)
    assert second.headers.get("Proxy-Authorization") is not None
    reg.ok(second)
    assert reg.state() is RegistrationState.REGISTERED


def test_expires_header_used_when_contact_has_none() -> None:
    reg = Registrar()
    second = reg.challenge(reg.start())
    reg.ok(second, [("Expires", "300")])
    assert reg.registration.status(reg.now).expires_at == 300.0


def test_only_our_contact_counts() -> None:
    reg = Registrar()
    second = reg.challenge(reg.start())
    other = "<sip:someone@203.0.113.9:5060>;expires=30"
    reg.ok(second, [("Contact", other), ("Contact", f"{CONTACT};expires=200")])
    assert reg.registration.status(reg.now).expires_at == 200.0


@pytest.mark.parametrize(
    ("granted", "refresh"), [(2, 1.0), (60, 30.0), (120, 90.0), (600, 570.0), (3600, 3570.0)]
)
def test_refresh_delay(granted: int, refresh: float) -> None:
    assert refresh_delay(granted) == refresh


def test_refresh_keeps_call_id_and_grows_cseq() -> None:
    reg = Registrar()
    second = registered(reg, granted="2")
    refresh = reg.next_register()
    assert reg.now == pytest.approx(1.0)  # half of a short expiry
    assert refresh.call_id == second.call_id
    assert cseq(refresh) == cseq(second) + 1
    assert reg.state() is RegistrationState.REGISTERED  # still bound while refreshing
    again = reg.challenge(refresh)
    reg.ok(again, [("Contact", f"{CONTACT};expires=2")])
    assert reg.registration.status(reg.now).expires_at == pytest.approx(3.0)
    assert cseq(reg.next_register()) == cseq(again) + 1


def test_interval_too_brief_retried_with_min_expires() -> None:
    reg = Registrar(make_registration(expires=60))
    first = reg.start()
    (second,) = reg.answer(first, 423, "Interval Too Brief", headers=[("Min-Expires", "1800")])
    assert second.headers["Expires"] == "1800"
    assert cseq(second) == cseq(first) + 1
    third = reg.challenge(second)
    assert third.headers["Expires"] == "1800"
    reg.ok(third)
    assert reg.registration.status(reg.now).expires_at == 1800.0
    # Refreshes ask for what the registrar wanted.
    assert reg.next_register().headers["Expires"] == "1800"


def test_interval_too_brief_without_min_expires_fails() -> None:
    reg = Registrar()
    assert reg.answer(reg.start(), 423, "Interval Too Brief") == []
    assert reg.state() is RegistrationState.FAILED


def test_backoff_grows_and_is_capped() -> None:
    reg = Registrar(make_registration(rng=lambda: 0.0))
    request = reg.start()
    delays = []
    for _ in range(8):
        assert reg.answer(request, 503, "Service Unavailable") == []
        assert reg.state() is RegistrationState.FAILED
        sent_at = reg.now
        request = reg.next_register()
        delays.append(reg.now - sent_at)
        assert reg.state() is RegistrationState.REGISTERING
    assert delays == [30, 60, 120, 240, 480, 900, 900, 900]
    # Success resets it.
    reg.ok(reg.challenge(request), [("Contact", f"{CONTACT};expires=60")])
    assert fail_until_lapsed(reg) == BACKOFF_MIN


def test_backoff_jitter_from_the_rng() -> None:
    assert backoff_delay(1, lambda: 0.0) == BACKOFF_MIN
    assert backoff_delay(1, lambda: 0.999) < BACKOFF_MIN
    assert backoff_delay(1, lambda: 0.999) > BACKOFF_MIN / 2
    assert backoff_delay(20, lambda: 0.0) == BACKOFF_MAX


def test_timeout_is_a_failure_with_backoff() -> None:
    reg = Registrar()
    reg.start()
    retransmitted = reg.advance(40.0)
    assert retransmitted  # Timer E resent it over UDP
    status = reg.registration.status(reg.now)
    assert status.state is RegistrationState.FAILED
    assert status.status_code == 408
    assert status.next_attempt_at is not None


def test_forbidden_fails_and_retries_later() -> None:
    reg = Registrar()
    assert reg.answer(reg.start(), 403, "Forbidden") == []
    status = reg.registration.status(reg.now)
    assert status.state is RegistrationState.FAILED
    assert (status.status_code, status.reason) == (403, "Forbidden")
    assert status.next_attempt_at == pytest.approx(BACKOFF_MIN)


def test_retry_after_honoured() -> None:
    reg = Registrar()
    first = reg.start()
    reg.answer(first, 503, "Service Unavailable", headers=[("Retry-After", "120 (maintenance)")])
    assert reg.registration.status(reg.now).next_attempt_at == 120.0
    reg.next_register()
    assert reg.now == 120.0


def test_stale_second_challenge_accepted_once() -> None:
    reg = Registrar()
    second = reg.challenge(reg.start())
    stale = 'Digest realm="trunk.test", nonce="n2", algorithm=MD5, qop="auth", stale=true'
    third = reg.challenge(second, stale)
    assert auth_params(third)["nonce"] == "n2"
    reg.ok(third)
    assert reg.state() is RegistrationState.REGISTERED


def test_stale_challenge_not_followed_in_a_loop() -> None:
    reg = Registrar()
    stale = 'Digest realm="trunk.test", nonce="n2", algorithm=MD5, stale=true'
    third = reg.challenge(reg.challenge(reg.start()), stale)
    assert reg.answer(third, 401, "Unauthorized", headers=[("WWW-Authenticate", stale)]) == []
    assert reg.state() is RegistrationState.FAILED


def test_non_stale_second_challenge_fails() -> None:
    reg = Registrar()
    second = reg.challenge(reg.start())
    assert reg.answer(second, 401, "Unauthorized", headers=[("WWW-Authenticate", CHALLENGE)]) == []
    status = reg.registration.status(reg.now)
    assert status.state is RegistrationState.FAILED
    assert status.status_code == 401
    assert "credentials refused" in status.reason


def test_unregister_sends_expires_0_and_finishes_on_200() -> None:
    reg = Registrar()
    second = registered(reg)
    reg.registration.unregister(reg.now)
    (bye,) = reg.pump()
    assert reg.state() is RegistrationState.UNREGISTERING
    assert bye.headers["Expires"] == "0"
    assert bye.headers["Contact"] == CONTACT
    assert bye.call_id == second.call_id
    assert cseq(bye) == cseq(second) + 1
    authorized = reg.challenge(bye)
    assert authorized.headers["Expires"] == "0"
    reg.ok(authorized)
    assert reg.registration.finished
    assert reg.state() is RegistrationState.UNREGISTERED
    assert reg.registration.get_timer() is None


def test_unregister_finishes_on_its_timer_without_answer() -> None:
    reg = Registrar()
    registered(reg)
    reg.registration.unregister(reg.now)
    reg.pump()
    started = reg.now
    reg.advance(started + UNREGISTER_TIMEOUT)
    assert reg.registration.finished
    assert reg.registration.get_timer() is None


def test_unregister_before_any_binding_sends_nothing() -> None:
    reg = Registrar()
    reg.start()
    reg.answer(reg.sent[0], 403, "Forbidden")
    reg.registration.unregister(reg.now)
    assert reg.pump() == []
    assert reg.registration.finished


def test_unregister_while_a_register_is_pending_removes_it() -> None:
    reg = Registrar()
    reg.start()
    reg.registration.unregister(reg.now)
    (bye,) = reg.pump()
    assert bye.headers["Expires"] == "0"


def test_no_password_in_status_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    reg = Registrar()
    second = reg.challenge(reg.start())
    reg.answer(second, 401, "Unauthorized", headers=[("WWW-Authenticate", CHALLENGE)])
    reg.next_register()
    reg.registration.unregister(reg.now)
    reg.pump()
    status = reg.registration.status(reg.now)
    assert PASSWORD not in f"{status!r} {reg.registration!r}"
    assert PASSWORD not in caplog.text


def test_failed_refresh_retried_before_the_binding_lapses() -> None:
    reg = Registrar()
    registered(reg)  # 600 s asked and granted: refresh at 570 s
    refresh = reg.next_register()
    assert reg.now == 570.0
    assert reg.answer(refresh, 503, "Service Unavailable") == []
    status = reg.registration.status(reg.now)
    assert status.state is RegistrationState.FAILED
    assert status.expires_at == 600.0  # the binding still holds
    assert status.next_attempt_at == 585.0  # half of the 30 s left
    again = reg.next_register()
    reg.ok(reg.challenge(again))
    assert reg.state() is RegistrationState.REGISTERED
    # Retries while bound do not count: once it lapsed, the backoff starts at its start.
    assert fail_until_lapsed(reg) == BACKOFF_MIN


def fail_until_lapsed(reg: Registrar) -> float:
    """Answer 503 to every REGISTER until the binding lapsed; the delay then."""
    while True:
        reg.answer(reg.next_register(), 503, "Service Unavailable")
        status = reg.registration.status(reg.now)
        assert status.state is RegistrationState.FAILED and status.next_attempt_at is not None
        if status.expires_at is None:
            return status.next_attempt_at - reg.now
