"""Client tokens: JWTs a backend mints, checked before a WebSocket may do anything.

Signatures are checked by PyJWT, never here. Each configured key allows one
algorithm (HS256 for a secret, RS256 or ES256 for a public key file) and a
token is only tried against keys whose algorithm its header names, so
``alg: none`` and algorithm confusion (an RS256 public key used as an HS256
secret) find no key. Times (``exp`` required, ``nbf``) are checked against the
``now`` given, with ``LEEWAY`` seconds of clock skew, so tests run on a fake
clock. ``TokenError`` messages never hold the token or a key.
"""

from __future__ import annotations

import contextlib
import math
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from services.common.access import Access, Key
from services.common.dialplan import Pattern, parse_pattern

LEEWAY = 30.0
"Seconds of clock skew allowed on ``exp`` and ``nbf``."
MAX_TOKEN_BYTES = 8192
MAX_SUBJECT = 128
MAX_DST = 64


class TokenError(Exception):
    """The token is refused; the message says why, without its content."""


@dataclass(frozen=True)
class Claims:
    """What a valid token grants."""

    sub: str
    "The identity: in logs and the audit line (never a metrics label)."
    expires_at: float
    dst: tuple[str, ...] | None = None
    "Allowed destinations as written (exact, ``prefix*`` or route names); None: any."
    dst_patterns: tuple[Pattern, ...] = ()
    "The ``dst`` entries that are numbers or names, normalized."
    max_calls: int | None = None
    max_duration: float | None = None


@dataclass(frozen=True)
class _VerifyKey:
    kid: str
    algorithm: str
    key: Any


class TokenVerifier:
    """The keys of ``Access``, loaded once; ``verify`` checks one token."""

    def __init__(self, access: Access) -> None:
        self._audience = access.audience
        self._keys = [_load(key) for key in access.keys]

    @property
    def configured(self) -> bool:
        return bool(self._keys)

    def verify(self, token: str, now: float) -> Claims:
        """The claims of ``token``, or ``TokenError``."""
        if not token:
            raise TokenError("a client token is required")
        if len(token) > MAX_TOKEN_BYTES:
            raise TokenError("the token is too large")
        if not token.isascii():
            raise TokenError("the token is not a JWT")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenError("the token is not a JWT") from None
        algorithm, kid = header.get("alg"), header.get("kid")
        if not isinstance(algorithm, str) or (kid is not None and not isinstance(kid, str)):
            raise TokenError("the token header is malformed")
        candidates = [
            k for k in self._keys if k.algorithm == algorithm and (kid is None or k.kid == kid)
        ]
        if not candidates:
            raise TokenError("the token is signed with no key or algorithm this bridge accepts")
        payload = None
        for candidate in candidates:
            try:
                payload = jwt.decode(
                    token,
                    candidate.key,
                    algorithms=[candidate.algorithm],
                    audience=self._audience,
                    options={
                        "require": ["exp", "aud", "sub"],
                        "verify_exp": False,
                        "verify_nbf": False,
                        "verify_iat": False,
                    },
                )
                break
            except jwt.InvalidSignatureError:
                continue
            except jwt.InvalidAudienceError:
                raise TokenError("the token is for another audience") from None
            except jwt.MissingRequiredClaimError as exc:
                raise TokenError(f"the token has no {exc.claim!r} claim") from None
            except jwt.PyJWTError:
                raise TokenError("the token is malformed") from None
        if payload is None:
            raise TokenError("the token's signature is not valid")
        return _claims(payload, now)


def _claims(payload: dict[str, Any], now: float) -> Claims:
    exp = _number(payload.get("exp"), "exp")
    if exp is None:
        raise TokenError("the token has no 'exp' claim")
    if now > exp + LEEWAY:
        raise TokenError("the token has expired")
    nbf = _number(payload.get("nbf"), "nbf")
    if nbf is not None and now + LEEWAY < nbf:
        raise TokenError("the token is not valid yet")
    sub = payload.get("sub")
    if not isinstance(sub, str) or not 0 < len(sub) <= MAX_SUBJECT or not sub.isprintable():
        raise TokenError(f"the token's 'sub' must be 1-{MAX_SUBJECT} printable characters")
    dst = payload.get("dst")
    if isinstance(dst, str):
        dst = [dst]
    patterns: list[Pattern] = []
    if dst is not None:
        if not isinstance(dst, list) or len(dst) > MAX_DST:
            raise TokenError(f"the token's 'dst' must be a list of up to {MAX_DST} strings")
        for item in dst:
            if not isinstance(item, str):
                raise TokenError("the token's 'dst' must be a list of strings")
            # Not a number or name: a route name, or nothing a destination can be.
            with contextlib.suppress(ValueError):
                patterns.append(parse_pattern(item))
    return Claims(
        sub=sub,
        expires_at=exp,
        dst=tuple(dst) if dst is not None else None,
        dst_patterns=tuple(patterns),
        max_calls=_positive_int(payload.get("max_calls"), "max_calls"),
        max_duration=_number(payload.get("max_duration"), "max_duration", positive=True),
    )


def _number(value: object, name: str, *, positive: bool = False) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenError(f"the token's {name!r} must be a number")
    try:
        number = float(value)
    except OverflowError:
        raise TokenError(f"the token's {name!r} is out of range") from None
    if not math.isfinite(number):
        raise TokenError(f"the token's {name!r} must be a number")
    if positive and number <= 0:
        raise TokenError(f"the token's {name!r} must be above 0")
    return number


def _positive_int(value: object, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TokenError(f"the token's {name!r} must be a whole number above 0")
    return value


def _load(key: Key) -> _VerifyKey:
    if key.secret:
        return _VerifyKey(key.kid, "HS256", key.secret.encode("utf-8"))
    public = load_pem_public_key(Path(key.public_key_file).read_bytes())
    if isinstance(public, rsa.RSAPublicKey):
        return _VerifyKey(key.kid, "RS256", public)
    if isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1":
        return _VerifyKey(key.kid, "ES256", public)
    raise ValueError(f"{key.public_key_file}: not an RSA or P-256 public key")


def load_problem(access: Access) -> str | None:
    """Why the keys of ``access`` cannot be used (one start-up line), or None."""
    for key in access.public_keys:
        try:
            _load(key)
        except (OSError, ValueError) as exc:
            return f"CLIENT_TOKEN_PUBLIC_KEY: {key.public_key_file}: cannot use it: {exc}"
    return None


def mint(
    access: Access,
    sub: str,
    ttl: float,
    *,
    dst: list[str] | None = None,
    max_calls: int | None = None,
    max_duration: float | None = None,
    now: float | None = None,
) -> str:
    """A token signed with the first ``CLIENT_TOKEN_SECRET`` (``bridge token``, tests)."""
    if not access.secrets:
        raise TokenError("CLIENT_TOKEN_SECRET is not set: there is no key to sign with")
    key = access.secrets[0]
    issued = time.time() if now is None else now
    payload: dict[str, Any] = {
        "sub": sub,
        "aud": access.audience,
        "iat": int(issued),
        "exp": int(issued + ttl),
        "jti": uuid.uuid4().hex,
    }
    if dst is not None:
        payload["dst"] = dst
    if max_calls is not None:
        payload["max_calls"] = max_calls
    if max_duration is not None:
        payload["max_duration"] = max_duration
    headers = {"kid": key.kid} if key.kid else None
    return jwt.encode(payload, key.secret, algorithm="HS256", headers=headers)
