from __future__ import annotations

import hashlib

import pytest
from sipmessage import Response

from services.common.sip.auth import (
    AuthError,
    DigestAuthenticator,
    digest_response,
    parse_challenge,
    parse_params,
)


def test_rfc2617_vector() -> None:
    assert (
        digest_response(
            algorithm="MD5",
            username="Mufasa",
            realm="testrealm@host.com",
            password="Circle Of Life",
            method="GET",
            uri="/dir/index.html",
            nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
            qop="auth",
            nc="00000001",
            cnonce="0a4f113b",
        )
        == "6629fae49393a05397450978507c4ef1"
    )


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_vectors(algorithm: str, expected: str) -> None:
    assert (
        digest_response(
            algorithm=algorithm,
            username="Mufasa",
            realm="http-auth@example.org",
            password="Circle of Life",
            method="GET",
            uri="/dir/index.html",
            nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            qop="auth",
            nc="00000001",
            cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        )
        == expected
    )


def test_md5_without_qop_is_rfc2069() -> None:
    ha1 = hashlib.md5(b"alice:realm:pw").hexdigest()
    ha2 = hashlib.md5(b"INVITE:sip:bob@x").hexdigest()
    expected = hashlib.md5(f"{ha1}:n1:{ha2}".encode()).hexdigest()
    got = digest_response(
        algorithm="MD5",
        username="alice",
        realm="realm",
        password="pw",
        method="INVITE",
        uri="sip:bob@x",
        nonce="n1",
    )
    assert got == expected


def test_md5_sess() -> None:
    ha1 = hashlib.md5(b"u:r:p").hexdigest()
    ha1 = hashlib.md5(f"{ha1}:n:c".encode()).hexdigest()
    ha2 = hashlib.md5(b"INVITE:sip:x@y").hexdigest()
    expected = hashlib.md5(f"{ha1}:n:00000001:c:auth:{ha2}".encode()).hexdigest()
    got = digest_response(
        algorithm="MD5-sess",
        username="u",
        realm="r",
        password="p",
        method="INVITE",
        uri="sip:x@y",
        nonce="n",
        qop="auth",
        nc="00000001",
        cnonce="c",
    )
    assert got == expected


def test_parse_challenge_with_quoted_commas() -> None:
    challenge = parse_challenge(
        'Digest realm="a, b", nonce="x\\"y", qop="auth,auth-int", algorithm=sha-256, '
        'opaque="o", stale=TRUE'
    )
    assert challenge.realm == "a, b"
    assert challenge.nonce == 'x"y'
    assert challenge.qop == ("auth", "auth-int")
    assert challenge.algorithm == "SHA-256"
    assert challenge.opaque == "o"
    assert challenge.stale


@pytest.mark.parametrize("value", ["Basic realm=x", "Digest realm=x", 'Digest nonce="x'])
def test_bad_challenges(value: str) -> None:
    with pytest.raises(AuthError):
        parse_challenge(value)


def _challenge(code: int, *values: str) -> Response:
    response = Response(code, "Unauthorized")
    header = "WWW-Authenticate" if code == 401 else "Proxy-Authenticate"
    for value in values:
        response.headers.add(header, value)
    return response


def test_authorize_401_counts_nonce_and_hashes_any_password() -> None:
    password = 'p:a#s@s"w\\'
    auth = DigestAuthenticator("bridge", password, cnonce_factory=lambda: "cn")
    challenge = _challenge(401, 'Digest realm="r", nonce="n1", qop="auth"')
    for count in (1, 2):
        name, value = auth.authorize(challenge, "INVITE", "sip:1@r")
        assert name == "Authorization"
        params = parse_params(value[len("Digest ") :])
        assert params["nc"] == f"{count:08d}"
        assert params["response"] == digest_response(
            algorithm="MD5",
            username="bridge",
            realm="r",
            password=password,
            method="INVITE",
            uri="sip:1@r",
            nonce="n1",
            qop="auth",
            nc=params["nc"],
            cnonce="cn",
        )
    assert password not in value


def test_authorize_407_prefers_first_supported() -> None:
    auth = DigestAuthenticator("u", "p")
    response = _challenge(
        407,
        'Digest realm="r", nonce="a", algorithm=SHA-512-256',
        'Digest realm="r", nonce="b", algorithm=SHA-256',
        'Digest realm="r", nonce="c", algorithm=MD5',
    )
    name, value = auth.authorize(response, "INVITE", "sip:1@r")
    params = parse_params(value[len("Digest ") :])
    assert name == "Proxy-Authorization"
    assert params["algorithm"] == "SHA-256"
    assert params["nonce"] == "b"
    assert "qop" not in params and "cnonce" not in params


def test_no_supported_challenge() -> None:
    with pytest.raises(AuthError):
        DigestAuthenticator("u", "p").authorize(
            _challenge(401, 'Digest realm="r", nonce="a", algorithm=SHA-512-256'), "INVITE", "x"
        )
