"""The server side of digest: our challenges answered by our own client side, and refusals."""

from __future__ import annotations

import logging

import pytest
from sipmessage import Request, Response

from services.common.sip.auth import DigestAuthenticator, hash_a1, parse_challenge
from services.common.sip.challenge import (
    NONCE_LIFETIME,
    DigestChallenger,
    Ha1,
    Verdict,
)
from services.common.sip.message import make_request, parse_message

SECRET = b"0123456789abcdef-shared-by-replicas"
REALM = "bridge.example"
NOW = 1_800_000_000.0
PASSWORD = "s3cret pass,word"


def invite(uri: str = "sip:+15550001111@bridge.example") -> Request:
    return make_request(
        "INVITE",
        uri,
        [
            ("Via", "SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK1"),
            ("From", "<sip:trunk@carrier>;tag=a"),
            ("To", "<sip:+15550001111@bridge.example>"),
            ("Call-ID", "c1"),
            ("CSeq", "1 INVITE"),
        ],
    )


def challenged(challenger: DigestChallenger, now: float = NOW, stale: bool = False) -> Response:
    """The 401/407 a peer receives, as it parses it off the wire."""
    response = Response(challenger.status, "Unauthorized")
    for name, value in challenger.challenge(now, stale=stale):
        response.headers.add(name, value)
    return response


def answered(
    challenge: Response, client: DigestAuthenticator, request: Request | None = None
) -> Request:
    """``request`` sent again with the client's answer to ``challenge``, through the parser."""
    request = request or invite()
    name, value = client.authorize(challenge, request.method, str(request.uri))
    request.headers.add(name, value)
    parsed = parse_message(bytes(request))
    assert isinstance(parsed, Request)
    return parsed


@pytest.fixture
def challenger() -> DigestChallenger:
    return DigestChallenger(REALM, {"trunk": PASSWORD}, SECRET)


def test_our_client_answers_our_challenge(challenger: DigestChallenger) -> None:
    request = answered(challenged(challenger), DigestAuthenticator("trunk", PASSWORD))
    assert challenger.verify(request, NOW + 1) == Verdict(True, "trunk")


def test_sha256_is_offered_first_then_md5(challenger: DigestChallenger) -> None:
    values = [value for _, value in challenger.challenge(NOW)]
    challenges = [parse_challenge(value) for value in values]
    assert [c.algorithm for c in challenges] == ["SHA-256", "MD5"]
    assert all(c.qop == ("auth",) and c.opaque and c.realm == REALM for c in challenges)
    assert challenges[0].nonce == challenges[1].nonce
    # Every challenge has a fresh nonce.
    assert parse_challenge(challenger.challenge(NOW)[0][1]).nonce != challenges[0].nonce


def test_an_md5_only_client_is_accepted(challenger: DigestChallenger) -> None:
    response = challenged(challenger)
    md5_only = Response(401, "Unauthorized")
    md5_only.headers.add("WWW-Authenticate", response.headers.getlist("WWW-Authenticate")[1])
    request = answered(md5_only, DigestAuthenticator("trunk", PASSWORD))
    assert challenger.verify(request, NOW).accepted


def test_a_stored_ha1_instead_of_the_password() -> None:
    ha1 = Ha1(
        md5=hash_a1("MD5", "trunk", REALM, PASSWORD),
        sha256=hash_a1("SHA-256", "trunk", REALM, PASSWORD),
    )
    challenger = DigestChallenger(REALM, {"trunk": ha1}, SECRET)
    request = answered(challenged(challenger), DigestAuthenticator("trunk", PASSWORD))
    assert challenger.verify(request, NOW).accepted
    assert PASSWORD not in repr(ha1) and ha1.md5 not in repr(ha1)


def test_an_empty_ha1_is_no_user() -> None:
    challenger = DigestChallenger(
        REALM, {"trunk": Ha1(md5=hash_a1("MD5", "trunk", REALM, "pw"))}, SECRET
    )
    # SHA-256 is tried first; its HA1 is empty, so nobody can answer it.
    request = answered(challenged(challenger), DigestAuthenticator("trunk", ""))
    assert not challenger.verify(request, NOW).accepted


def test_a_replica_with_the_same_secret_accepts_the_nonce(challenger: DigestChallenger) -> None:
    request = answered(challenged(challenger), DigestAuthenticator("trunk", PASSWORD))
    replica = DigestChallenger(REALM, {"trunk": PASSWORD}, SECRET)
    assert replica.verify(request, NOW + 2).accepted
    other = DigestChallenger(REALM, {"trunk": PASSWORD}, b"another secret of 16+ bytes")
    assert other.verify(request, NOW + 2) == Verdict(
        False, "trunk", reason="nonce not issued by this realm", unknown_nonce=True
    )


def test_a_wrong_password_is_refused(challenger: DigestChallenger) -> None:
    request = answered(challenged(challenger), DigestAuthenticator("trunk", "guess"))
    verdict = challenger.verify(request, NOW)
    assert verdict == Verdict(False, "trunk", reason="wrong username or password")


def test_an_unknown_user_is_refused_like_a_wrong_password(challenger: DigestChallenger) -> None:
    request = answered(challenged(challenger), DigestAuthenticator("mallory", PASSWORD))
    assert challenger.verify(request, NOW) == Verdict(
        False, "mallory", reason="wrong username or password"
    )


def test_no_credentials_or_another_realm(challenger: DigestChallenger) -> None:
    assert challenger.verify(invite(), NOW).reason == "no Authorization for realm 'bridge.example'"
    other = DigestChallenger("elsewhere", {"trunk": PASSWORD}, SECRET)
    request = answered(challenged(other), DigestAuthenticator("trunk", PASSWORD))
    assert not challenger.verify(request, NOW).accepted


def test_a_correct_answer_on_an_expired_nonce_is_stale(challenger: DigestChallenger) -> None:
    client = DigestAuthenticator("trunk", PASSWORD)
    request = answered(challenged(challenger), client)
    later = NOW + NONCE_LIFETIME + 1
    verdict = challenger.verify(request, later)
    assert verdict == Verdict(False, "trunk", reason="nonce expired", stale=True)
    # The new challenge says stale=true; the client answers it without a new password.
    again = challenged(challenger, later, stale=verdict.stale)
    assert client.choose(again).stale
    assert challenger.verify(answered(again, client), later).accepted


def test_a_wrong_answer_on_an_expired_nonce_is_not_stale(challenger: DigestChallenger) -> None:
    request = answered(challenged(challenger), DigestAuthenticator("trunk", "guess"))
    assert not challenger.verify(request, NOW + NONCE_LIFETIME + 1).stale


def test_a_replayed_nonce_count_is_refused(challenger: DigestChallenger) -> None:
    client = DigestAuthenticator("trunk", PASSWORD)
    challenge = challenged(challenger)
    first = answered(challenge, client)
    assert challenger.verify(first, NOW).accepted
    assert challenger.verify(first, NOW + 1) == Verdict(
        False, "trunk", reason="nonce count replayed"
    )
    # The next request on the same nonce counts up and passes.
    assert challenger.verify(answered(challenge, client), NOW + 2).accepted


def test_a_tampered_uri_is_refused(challenger: DigestChallenger) -> None:
    request = answered(challenged(challenger), DigestAuthenticator("trunk", PASSWORD))
    moved = bytes(request).replace(
        b"INVITE sip:+15550001111@bridge.example", b"INVITE sip:+15559999999@bridge.example", 1
    )
    tampered = parse_message(moved)
    assert isinstance(tampered, Request)
    assert challenger.verify(tampered, NOW).reason == "uri is not the Request-URI"
    # The same uri in the credentials and the Request-URI, but not the one hashed.
    swapped = parse_message(moved.replace(b'uri="sip:+15550001111', b'uri="sip:+15559999999'))
    assert isinstance(swapped, Request)
    assert challenger.verify(swapped, NOW).reason == "wrong username or password"


def test_a_forged_nonce_is_refused(challenger: DigestChallenger) -> None:
    challenge = challenged(challenger)
    nonce = parse_challenge(challenge.headers.getlist("WWW-Authenticate")[0]).nonce
    forged = nonce[:-2] + ("AA" if not nonce.endswith("AA") else "BB")
    response = Response(401, "Unauthorized")
    response.headers.add(
        "WWW-Authenticate", challenge.headers.getlist("WWW-Authenticate")[0].replace(nonce, forged)
    )
    request = answered(response, DigestAuthenticator("trunk", PASSWORD))
    assert challenger.verify(request, NOW).reason == "nonce not issued by this realm"


def test_an_answer_without_qop_is_refused(challenger: DigestChallenger) -> None:
    challenge = challenged(challenger)
    value = challenge.headers.getlist("WWW-Authenticate")[0].replace(', qop="auth"', "")
    legacy = Response(401, "Unauthorized")
    legacy.headers.add("WWW-Authenticate", value)
    request = answered(legacy, DigestAuthenticator("trunk", PASSWORD))
    assert challenger.verify(request, NOW).reason == "qop=auth with nc and cnonce required"


def test_a_proxy_challenger_uses_407_headers() -> None:
    challenger = DigestChallenger(REALM, {"trunk": PASSWORD}, SECRET, proxy=True)
    challenge = challenged(challenger)
    assert challenge.code == 407
    request = answered(challenge, DigestAuthenticator("trunk", PASSWORD))
    assert request.headers.get("Proxy-Authorization")
    assert challenger.verify(request, NOW).accepted


@pytest.mark.parametrize(
    "credentials",
    [
        'Digest realm="bridge.example", username="trunk", nonce="x", uri="sip:x", response="1"',
        'Digest realm="bridge.example", nonce=',
        'Digest realm="bridge.example", uri="<<<", nonce="x"',
        "Basic dHJ1bms6cw==",
    ],
)
def test_garbage_credentials_are_refused_without_raising(
    challenger: DigestChallenger, credentials: str
) -> None:
    request = invite()
    request.headers.add("Authorization", credentials)
    assert not challenger.verify(request, NOW).accepted


def test_no_secret_in_verdicts_reprs_or_logs(
    challenger: DigestChallenger, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = DigestAuthenticator("trunk", PASSWORD)
    request = answered(challenged(challenger), client)
    digest = request.headers["Authorization"].split('response="', 1)[1].split('"', 1)[0]
    verdicts = [
        challenger.verify(request, NOW),
        challenger.verify(request, NOW),
        challenger.verify(answered(challenged(challenger), DigestAuthenticator("trunk", "x")), NOW),
    ]
    text = repr(verdicts) + repr(challenger) + caplog.text
    assert PASSWORD not in text and digest not in text and SECRET.decode() not in text


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        DigestChallenger(REALM, {}, b"short")
