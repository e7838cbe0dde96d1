"""Fuzz of client tokens (``services.signaling.tokens``).

``TokenVerifier.verify`` is the first thing a WebSocket's token meets.
Properties: any string gives ``Claims`` or ``TokenError``, nothing else; a
valid token mutated in any way (a character flipped, parts swapped, the
header re-encoded with another ``alg``, the signature dropped, dots added,
segments blown up or made non-base64) is refused unless it still decodes
to the very same claims (base64 has spellings that decode alike); a token
signed with another secret, or HS256 with the public key as the secret, is
always refused; claims of the wrong type are refused, and accepted claims
have the types ``Claims`` promises.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import event as note_event
from hypothesis import example, given
from hypothesis import strategies as st

from services.common.access import load_access
from services.signaling.tokens import (
    MAX_SUBJECT,
    Claims,
    TokenError,
    TokenVerifier,
    mint,
)
from tests.unit.fuzz.support import HOSTILE, any_text, contains_surrogate, fuzz, mutate_text

T0 = 1_700_000_000.0
SECRET = "s3cret-" + "x" * 32
OTHER_SECRET = "0th3r-" + "y" * 32
AUDIENCE = "webrtc-sip-bridge"

_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PUBLIC_PEM = _RSA.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)
_KEY_DIR = tempfile.TemporaryDirectory()
PUBLIC_FILE = Path(_KEY_DIR.name) / "client.pem"
PUBLIC_FILE.write_bytes(PUBLIC_PEM)

ACCESS = load_access({"CLIENT_TOKEN_SECRET": f"k1:{SECRET}"}, "0.0.0.0")
ACCESS_NO_KID = load_access({"CLIENT_TOKEN_SECRET": SECRET}, "0.0.0.0")
ACCESS_RSA = load_access(
    {"CLIENT_TOKEN_SECRET": f"k1:{SECRET}", "CLIENT_TOKEN_PUBLIC_KEY": f"r1:{PUBLIC_FILE}"},
    "0.0.0.0",
)
VERIFIERS = {
    "kid": TokenVerifier(ACCESS),
    "no-kid": TokenVerifier(ACCESS_NO_KID),
    "rsa": TokenVerifier(ACCESS_RSA),
}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


VALID_TOKENS = (
    mint(ACCESS, "alice", 600, now=T0),
    mint(ACCESS, "bob@example.com", 600, dst=["+1555*", "support"], max_calls=2, now=T0),
    mint(ACCESS, "carol", 3600, dst=["+44*"], max_duration=120.5, now=T0),
    mint(ACCESS_NO_KID, "dave", 600, max_calls=1, max_duration=60, now=T0),
)
VALID_CLAIMS = {
    token: VERIFIERS["rsa" if i % 2 else "kid"].verify(token, T0)
    for i, token in enumerate(VALID_TOKENS)
}


# --- the checks ---------------------------------------------------------------------------


def verify(verifier: TokenVerifier, token: str, now: float = T0) -> Claims | TokenError | None:
    """The claims, or the ``TokenError``; None when a known bug fired instead."""
    try:
        claims = verifier.verify(token, now)
    except TokenError as exc:
        assert str(exc)
        assert token not in str(exc) or len(token) < 8  # messages never hold the token
        return exc
    check_claims(claims)
    return claims


def check_claims(claims: Claims) -> None:
    """The types ``Claims`` promises to the session and the limits."""
    assert isinstance(claims.sub, str) and 0 < len(claims.sub) <= MAX_SUBJECT
    assert claims.sub.isprintable()
    assert type(claims.expires_at) is float and math.isfinite(claims.expires_at)
    if claims.dst is not None:
        assert isinstance(claims.dst, tuple) and all(isinstance(d, str) for d in claims.dst)
    if claims.max_calls is not None:
        assert type(claims.max_calls) is int and claims.max_calls >= 1
    if claims.max_duration is not None:
        assert type(claims.max_duration) is float
        assert math.isfinite(claims.max_duration) and claims.max_duration > 0


# --- strategies -------------------------------------------------------------------------------

ALGORITHMS = ("none", "None", "NONE", "HS256", "HS384", "HS512", "RS256", "ES256", "PS256", "")
BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@st.composite
def mutated_tokens(draw: st.DrawFn) -> tuple[str, str]:
    """(the valid token, a mutation of it)."""
    token = draw(st.sampled_from(VALID_TOKENS))
    header, payload, signature = token.split(".")
    how = draw(
        st.sampled_from(
            (
                "flip",
                "swap",
                "header",
                "drop-signature",
                "dots",
                "huge",
                "non-base64",
                "padding",
                "text",
                "payload",
            )
        )
    )
    if how == "flip":
        at = draw(st.integers(0, len(token) - 1))
        char = draw(st.one_of(st.sampled_from(BASE64URL + ".=+/ "), st.characters()))
        return token, token[:at] + char + token[at + 1 :]
    if how == "swap":
        parts = draw(st.permutations([header, payload, signature]))
        return token, ".".join(parts)
    if how == "header":
        fields: dict[str, Any] = json.loads(unb64(header))
        fields["alg"] = draw(st.one_of(st.sampled_from(ALGORITHMS), st.none(), st.integers()))
        if draw(st.booleans()):
            fields["kid"] = draw(st.sampled_from(("k1", "r1", "k2", "", None, 1, ["k1"])))
        if draw(st.booleans()):
            fields.pop("kid", None)
        new_header = b64(json.dumps(fields).encode())
        new_signature = draw(st.sampled_from((signature, "", "AAAA")))
        return token, f"{new_header}.{payload}.{new_signature}"
    if how == "drop-signature":
        return token, draw(st.sampled_from((f"{header}.{payload}.", f"{header}.{payload}")))
    if how == "dots":
        parts = [header, payload, signature]
        at = draw(st.integers(0, 3))
        dots = draw(st.sampled_from((".", "..", "...")))
        parts.insert(at, dots.strip(".") if at in (0, 3) else "")
        return token, draw(st.sampled_from((".".join(parts), token + dots, dots + token)))
    if how == "huge":
        which = draw(st.integers(0, 2))
        parts = [header, payload, signature]
        parts[which] = parts[which] * draw(st.sampled_from((10, 100, 300)))
        return token, ".".join(parts)
    if how == "non-base64":
        which = draw(st.integers(0, 2))
        parts = [header, payload, signature]
        at = draw(st.integers(0, len(parts[which])))
        junk = draw(st.sampled_from(("!", "+", "/", "=", "==", " ", "\n", "\x00", "é", "%3D")))
        parts[which] = parts[which][:at] + junk + parts[which][at:]
        return token, ".".join(parts)
    if how == "padding":
        which = draw(st.integers(0, 2))
        parts = [header, payload, signature]
        parts[which] += draw(st.sampled_from(("=", "==", "===")))
        return token, ".".join(parts)
    if how == "payload":
        # The payload swapped for another valid token's: the signature no longer fits.
        other = draw(st.sampled_from(VALID_TOKENS)).split(".")[1]
        return token, f"{header}.{other}.{signature}"
    return token, mutate_text(draw(st.data()), token, max_mutations=2)


def json_values() -> st.SearchStrategy[object]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.sampled_from((-1, 0, 1, 2**31, 2**53 + 1, 10**30, -(10**30), 10**400)),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=20),
        st.sampled_from(HOSTILE).filter(lambda s: not contains_surrogate(s)),
        st.just("x" * 200),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
        ),
        max_leaves=6,
    )


CLAIM_NAMES = ("sub", "exp", "nbf", "iat", "aud", "dst", "max_calls", "max_duration", "jti")


@st.composite
def claim_sets(draw: st.DrawFn) -> dict[str, Any]:
    """A valid payload with one to three claims replaced by a value of any type, or removed."""
    payload: dict[str, Any] = {
        "sub": "alice",
        "aud": AUDIENCE,
        "iat": int(T0),
        "exp": int(T0) + 600,
        "dst": ["+1555*"],
        "max_calls": 2,
        "max_duration": 90.0,
    }
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(CLAIM_NAMES))
        if draw(st.integers(0, 4)) == 0:
            payload.pop(name, None)
        else:
            payload[name] = draw(
                st.one_of(
                    json_values(),
                    st.sampled_from(
                        (
                            "1700000600",
                            float("nan"),
                            float("inf"),
                            True,
                            False,
                            -3,
                            2.5,
                            {"a": 1},
                            ["+1", 5],
                            [],
                            "",
                            "\t",
                            "a\x00b",
                            "x" * 129,
                        )
                    ),
                )
            )
    return payload


def sign(payload: dict[str, Any], secret: str, kid: str | None = "k1") -> str:
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(payload, secret, algorithm="HS256", headers=headers)


def expected_type_refusal(payload: dict[str, Any]) -> bool:
    """Whether ``payload`` has a claim of a type ``Claims`` cannot hold (must be refused)."""

    def number(value: object) -> bool:
        return type(value) is int or (type(value) is float and math.isfinite(value))

    sub = payload.get("sub")
    if "sub" not in payload or "exp" not in payload or "aud" not in payload:
        return True
    if not isinstance(sub, str) or not 0 < len(sub) <= MAX_SUBJECT or not sub.isprintable():
        return True
    if not number(payload["exp"]):
        return True
    if "nbf" in payload and payload["nbf"] is not None and not number(payload["nbf"]):
        return True
    dst = payload.get("dst")
    if isinstance(dst, list):
        if not all(isinstance(d, str) for d in dst):
            return True
    elif dst is not None and not isinstance(dst, str):
        return True
    calls = payload.get("max_calls")
    if calls is not None and (type(calls) is not int or calls < 1):
        return True
    duration = payload.get("max_duration")
    return duration is not None and (not number(duration) or duration <= 0)


# --- properties -----------------------------------------------------------------------------------


@fuzz(300)
@given(st.one_of(any_text(300), st.text(st.sampled_from(BASE64URL + "."), max_size=300)))
@example("")
@example("..")
@example("a.b.c")
@example("x" * 9000)
@example("eyJhbGciOiJub25lIn0.e30.")
def test_random_strings_are_refused(token: str) -> None:
    for verifier in VERIFIERS.values():
        result = verify(verifier, token)
        assert not isinstance(result, Claims), token


@fuzz(500)
@given(mutated_tokens(), st.sampled_from(tuple(VERIFIERS)))
def test_mutated_token_is_refused_unless_it_decodes_the_same(
    pair: tuple[str, str], which: str
) -> None:
    original, token = pair
    result = verify(VERIFIERS[which], token)
    note_event("accepted" if isinstance(result, Claims) else "refused")
    if isinstance(result, Claims):
        # Accepted: only a spelling of the same signed bytes (say a signature's last
        # character whose unused low bits differ) may be; the claims must be the same.
        assert result == VALID_CLAIMS[original], (original, token)


@fuzz(200)
@given(
    st.sampled_from(VALID_TOKENS),
    st.one_of(st.just(OTHER_SECRET), st.text(min_size=32, max_size=64)),
    st.sampled_from(("k1", None, "k2")),
)
def test_token_signed_with_another_secret_is_refused(
    token: str, secret: str, kid: str | None
) -> None:
    if secret == SECRET:
        return
    payload = json.loads(unb64(token.split(".")[1]))
    forged = sign(payload, secret, kid)
    for verifier in VERIFIERS.values():
        assert isinstance(verify(verifier, forged), TokenError)


@fuzz(50)
@given(st.sampled_from(VALID_TOKENS), st.sampled_from(("r1", None, "k1")))
def test_hs256_with_the_public_key_as_secret_is_refused(token: str, kid: str | None) -> None:
    payload = token.split(".")[1]
    header: dict[str, str] = {"alg": "HS256", "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    signing_input = f"{b64(json.dumps(header).encode())}.{payload}"
    signature = hmac.new(PUBLIC_PEM, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{b64(signature)}"
    assert isinstance(verify(VERIFIERS["rsa"], forged), TokenError)


@fuzz(250)
@given(claim_sets(), st.sampled_from(("k1", None)))
@example({"sub": 5, "aud": AUDIENCE, "exp": int(T0) + 60}, "k1")
@example({"sub": "a", "aud": AUDIENCE, "exp": int(T0) + 60, "dst": {"a": 1}}, "k1")
@example({"sub": "a", "aud": AUDIENCE, "exp": int(T0) + 60, "max_calls": True}, "k1")
@example({"sub": "a", "aud": AUDIENCE, "exp": int(T0) + 60, "max_calls": -1}, "k1")
@example({"sub": "a", "aud": AUDIENCE, "exp": int(T0) + 60, "max_calls": 2.0}, "k1")
@example({"sub": "a", "aud": AUDIENCE, "exp": str(int(T0) + 60)}, "k1")
@example({"sub": "a", "aud": AUDIENCE, "exp": float("nan")}, "k1")
def test_claims_of_the_wrong_type_are_refused(payload: dict[str, Any], kid: str | None) -> None:
    token = sign(payload, SECRET, kid)
    result = verify(VERIFIERS["kid"], token)
    if result is None:
        return  # a known bug
    if expected_type_refusal(payload):
        assert isinstance(result, TokenError), payload


# --- the reported bugs, as minimal reproducers ----------------------------------------------------


@pytest.mark.parametrize("claim", ["exp", "nbf", "max_duration"])
def test_bug_integer_claim_too_large_for_a_float_is_refused(claim: str) -> None:
    payload: dict[str, Any] = {"sub": "a", "aud": AUDIENCE, "exp": int(T0) + 60}
    payload[claim] = 10**400
    with pytest.raises(TokenError):
        VERIFIERS["kid"].verify(sign(payload, SECRET), T0)


def test_bug_token_with_a_lone_surrogate_is_refused() -> None:
    with pytest.raises(TokenError):
        VERIFIERS["kid"].verify(VALID_TOKENS[0] + "\ud800", T0)
