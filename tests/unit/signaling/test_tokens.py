"""Client tokens: what is accepted, and every way a forged or stale one is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from services.common.access import Access, load_access
from services.signaling.tokens import LEEWAY, TokenError, TokenVerifier, mint

SECRET = "s" * 40
OTHER = "o" * 40
NOW = 1_800_000_000.0
AUD = "webrtc-sip-bridge"


def access(**env: str) -> Access:
    return load_access({"CLIENT_TOKEN_SECRET": SECRET, **env}, "0.0.0.0")


def claims(**extra: object) -> dict[str, object]:
    return {"sub": "alice", "aud": AUD, "exp": NOW + 3600, **extra}


def verify(token: str, acc: Access | None = None, now: float = NOW) -> object:
    return TokenVerifier(acc or access()).verify(token, now)


def refused(token: str, acc: Access | None = None, now: float = NOW) -> str:
    with pytest.raises(TokenError) as info:
        TokenVerifier(acc or access()).verify(token, now)
    message = str(info.value)
    assert SECRET not in message
    assert not token or token not in message
    return message


def test_a_minted_token_carries_its_claims() -> None:
    acc = access()
    token = mint(acc, "alice", 600, dst=["+1*", "support"], max_calls=1, max_duration=60, now=NOW)
    got = TokenVerifier(acc).verify(token, NOW + 10)
    assert got.sub == "alice"
    assert got.dst == ("+1*", "support")
    assert [str(p) for p in got.dst_patterns] == ["+1*", "support"]
    assert got.max_calls == 1
    assert got.max_duration == 60.0


def test_no_token_or_garbage() -> None:
    assert "required" in refused("")
    assert "not a JWT" in refused("hello")
    assert "too large" in refused("a" * 9000)


def test_forged_signature() -> None:
    assert "signature" in refused(jwt.encode(claims(), OTHER, algorithm="HS256"))


def test_alg_none() -> None:
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(json.dumps(claims()).encode()).rstrip(b"=").decode()
    for token in (f"{header}.{body}.", f"{header}.{body}"):
        refused(token)


def test_expiry_with_leeway() -> None:
    token = jwt.encode(claims(exp=NOW - 10), SECRET, algorithm="HS256")
    assert verify(token)  # 10 s late: within the leeway
    assert "expired" in refused(token, now=NOW + LEEWAY)
    assert "exp" in refused(jwt.encode({"sub": "a", "aud": AUD}, SECRET, algorithm="HS256"))


def test_not_before() -> None:
    token = jwt.encode(claims(nbf=NOW + 120), SECRET, algorithm="HS256")
    assert "not valid yet" in refused(token)
    assert verify(token, now=NOW + 100)


def test_audience() -> None:
    assert "audience" in refused(jwt.encode(claims(aud="other"), SECRET, algorithm="HS256"))
    assert "aud" in refused(jwt.encode({"sub": "a", "exp": NOW + 60}, SECRET, algorithm="HS256"))
    custom = access(AUTH_AUDIENCE="acme-phones")
    assert verify(jwt.encode(claims(aud="acme-phones"), SECRET, algorithm="HS256"), custom)


@pytest.mark.parametrize(
    "extra",
    [
        {"sub": 7},
        {"sub": ""},
        {"sub": "x" * 200},
        {"sub": "a\nb"},
        {"dst": {"+1": True}},
        {"dst": [1]},
        {"max_calls": True},
        {"max_calls": 0},
        {"max_calls": 1.5},
        {"max_duration": -1},
        {"exp": "tomorrow"},
    ],
)
def test_malformed_claims(extra: dict[str, object]) -> None:
    refused(jwt.encode(claims(**extra), SECRET, algorithm="HS256"))


def test_two_keys_live_during_rotation() -> None:
    acc = access(CLIENT_TOKEN_SECRET=f"old:{OTHER},new:{SECRET}")
    for kid, key in (("old", OTHER), ("new", SECRET)):
        token = jwt.encode(claims(), key, algorithm="HS256", headers={"kid": kid})
        assert verify(token, acc)
    # The right key under the wrong id, and an id nobody has.
    wrong = jwt.encode(claims(), OTHER, algorithm="HS256", headers={"kid": "new"})
    assert "signature" in refused(wrong, acc)
    unknown = jwt.encode(claims(), SECRET, algorithm="HS256", headers={"kid": "gone"})
    refused(unknown, acc)
    # The first key mints, under its id.
    assert jwt.get_unverified_header(mint(acc, "bob", 60))["kid"] == "old"


def _public_key_file(
    tmp_path: Path, private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
) -> Path:
    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / "client-tokens.pem"
    path.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def test_rs256_and_es256_public_keys(tmp_path: Path) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_file = _public_key_file(tmp_path, rsa_key)
    ec_file = _public_key_file(tmp_path / "ec", ec_key)
    acc = load_access({"CLIENT_TOKEN_PUBLIC_KEY": f"r:{rsa_file},e:{ec_file}"}, "0.0.0.0")
    assert verify(jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "r"}), acc)
    assert verify(jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "e"}), acc)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused(jwt.encode(claims(), other, algorithm="RS256", headers={"kid": "r"}), acc)


def test_algorithm_confusion_is_refused(tmp_path: Path) -> None:
    """An HS256 token whose "secret" is the public key PEM finds no HS256 key."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem_file = _public_key_file(tmp_path, rsa_key)
    acc = load_access({"CLIENT_TOKEN_PUBLIC_KEY": str(pem_file)}, "0.0.0.0")
    pem = pem_file.read_bytes()
    forged_header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps(claims()).encode()).rstrip(b"=")
    signing_input = forged_header + b"." + body
    signature = base64.urlsafe_b64encode(hmac.new(pem, signing_input, hashlib.sha256).digest())
    token = (signing_input + b"." + signature.rstrip(b"=")).decode()
    assert "no key or algorithm" in refused(token, acc)


def test_mint_needs_a_secret() -> None:
    with pytest.raises(TokenError, match="CLIENT_TOKEN_SECRET"):
        mint(load_access({}, "127.0.0.1"), "alice", 60)
