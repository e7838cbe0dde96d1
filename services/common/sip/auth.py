"""Digest authentication of requests, the client side (RFC 2617, RFC 7616, RFC 8760).

A 401 carries ``WWW-Authenticate`` and is answered with ``Authorization``; a
407 carries ``Proxy-Authenticate`` and is answered with ``Proxy-Authorization``.
The password is only ever hashed, so any character in it is fine. The server
side (challenging a peer) is ``services.common.sip.challenge``.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from sipmessage import Response

_HASHES: dict[str, Callable[[bytes], str]] = {
    "MD5": lambda data: hashlib.md5(data, usedforsecurity=False).hexdigest(),
    "SHA-256": lambda data: hashlib.sha256(data).hexdigest(),
}

CHALLENGE_HEADERS = {401: "WWW-Authenticate", 407: "Proxy-Authenticate"}
"Where each challenging status carries its challenges."
CREDENTIAL_HEADERS = {401: "Authorization", 407: "Proxy-Authorization"}
"Where the answer to each challenging status goes."


class AuthError(ValueError):
    """A challenge that cannot be answered."""


@dataclass(frozen=True)
class Challenge:
    """One ``Digest`` challenge."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    "Upper-case algorithm name, possibly with ``-SESS``."
    qop: tuple[str, ...] = ()
    "Offered qop values, lower-case; empty for the RFC 2069 form."
    opaque: str | None = None
    stale: bool = False


def parse_params(text: str) -> dict[str, str]:
    """Parse ``key=value, key="quoted, value"`` auth parameters."""
    params: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t,":
            i += 1
        if i >= n:
            break
        eq = text.find("=", i)
        if eq < 0:
            raise AuthError("auth parameter without a value")
        key = text[i:eq].strip().lower()
        i = eq + 1
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == '"':
            i += 1
            chars: list[str] = []
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(text[i])
                i += 1
            if i >= n:
                raise AuthError("unterminated quoted string")
            i += 1
            value = "".join(chars)
        else:
            end = text.find(",", i)
            end = n if end < 0 else end
            value = text[i:end].strip()
            i = end
        if not key:
            raise AuthError("empty auth parameter name")
        params[key] = value
    return params


def parse_challenge(value: str) -> Challenge:
    """Parse one ``WWW-Authenticate``/``Proxy-Authenticate`` value."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise AuthError(f"unsupported scheme {scheme!r}")
    params = parse_params(rest)
    if "nonce" not in params:
        raise AuthError("challenge without nonce")
    qop = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
    return Challenge(
        realm=params.get("realm", ""),
        nonce=params["nonce"],
        algorithm=params.get("algorithm", "MD5").upper(),
        qop=qop,
        opaque=params.get("opaque"),
        stale=params.get("stale", "").lower() == "true",
    )


def digest_response(
    *,
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: str = "",
    cnonce: str = "",
    body: bytes = b"",
) -> str:
    """The ``response`` value of RFC 7616 section 3.4.1 (RFC 2617 when MD5)."""
    return digest_from_ha1(
        algorithm=algorithm,
        ha1=hash_a1(algorithm, username, realm, password),
        method=method,
        uri=uri,
        nonce=nonce,
        qop=qop,
        nc=nc,
        cnonce=cnonce,
        body=body,
    )


def hash_a1(algorithm: str, username: str, realm: str, password: str) -> str:
    """``H(username:realm:password)``: what a server may store instead of the password."""
    base, _ = _split_algorithm(algorithm)
    return _HASHES[base](f"{username}:{realm}:{password}".encode())


def digest_from_ha1(
    *,
    algorithm: str,
    ha1: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: str = "",
    cnonce: str = "",
    body: bytes = b"",
) -> str:
    """The ``response`` value from a stored ``hash_a1``."""
    base, sess = _split_algorithm(algorithm)
    h = _HASHES[base]
    if sess:
        ha1 = h(f"{ha1}:{nonce}:{cnonce}".encode())
    a2 = f"{method}:{uri}"
    if qop == "auth-int":
        a2 += ":" + h(body)
    ha2 = h(a2.encode())
    if qop:
        return h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}".encode())
    return h(f"{ha1}:{nonce}:{ha2}".encode())


def _split_algorithm(algorithm: str) -> tuple[str, bool]:
    upper = algorithm.upper()
    sess = upper.endswith("-SESS")
    base = upper[: -len("-SESS")] if sess else upper
    if base not in _HASHES:
        raise AuthError(f"unsupported algorithm {algorithm!r}")
    return base, sess


def supported(challenge: Challenge) -> bool:
    try:
        _split_algorithm(challenge.algorithm)
    except AuthError:
        return False
    return not challenge.qop or bool({"auth", "auth-int"} & set(challenge.qop))


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class DigestAuthenticator:
    """Answers challenges for one set of credentials, counting nonce uses."""

    def __init__(
        self,
        username: str,
        password: str,
        cnonce_factory: Callable[[], str] = lambda: secrets.token_hex(8),
    ) -> None:
        self._username = username
        self._password = password
        self._cnonce = cnonce_factory
        self._nonce_counts: dict[str, int] = {}

    def choose(self, response: Response) -> Challenge:
        """The first supported challenge of a 401/407 (servers list their preferred first)."""
        header = CHALLENGE_HEADERS.get(response.code)
        if header is None:
            raise AuthError(f"{response.code} is not a challenge")
        for value in response.headers.getlist(header):
            try:
                challenge = parse_challenge(value)
            except AuthError:
                continue
            if supported(challenge):
                return challenge
        raise AuthError(f"no supported challenge in {header}")

    def authorize(
        self, response: Response, method: str, uri: str, body: bytes = b""
    ) -> tuple[str, str]:
        """The (header name, value) answering the challenge of ``response``."""
        challenge = self.choose(response)
        return CREDENTIAL_HEADERS[response.code], self.credentials(challenge, method, uri, body)

    def credentials(self, challenge: Challenge, method: str, uri: str, body: bytes = b"") -> str:
        """The ``Digest ...`` credentials value for one request."""
        qop: str | None = None
        if challenge.qop:
            qop = "auth" if "auth" in challenge.qop else "auth-int"
        _, sess = _split_algorithm(challenge.algorithm)
        cnonce = self._cnonce() if (qop or sess) else ""
        nc = ""
        if qop:
            count = self._nonce_counts.get(challenge.nonce, 0) + 1
            self._nonce_counts[challenge.nonce] = count
            nc = f"{count:08x}"
        response = digest_response(
            algorithm=challenge.algorithm,
            username=self._username,
            realm=challenge.realm,
            password=self._password,
            method=method,
            uri=uri,
            nonce=challenge.nonce,
            qop=qop,
            nc=nc,
            cnonce=cnonce,
            body=body,
        )
        parts = [
            f"username={_quote(self._username)}",
            f"realm={_quote(challenge.realm)}",
            f"nonce={_quote(challenge.nonce)}",
            f"uri={_quote(uri)}",
            f"response={_quote(response)}",
            f"algorithm={challenge.algorithm}",
        ]
        if cnonce:
            parts.append(f"cnonce={_quote(cnonce)}")
        if challenge.opaque is not None:
            parts.append(f"opaque={_quote(challenge.opaque)}")
        if qop:
            parts += [f"qop={qop}", f"nc={nc}"]
        return "Digest " + ", ".join(parts)
