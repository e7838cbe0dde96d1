"""Digest authentication of a peer's requests, the server side (RFC 3261 22, RFC 7616, RFC 8760).

``DigestChallenger`` builds the ``WWW-Authenticate`` (or ``Proxy-Authenticate``)
values of a 401 (407) and checks the ``Authorization`` (``Proxy-Authorization``)
of the request that answers it. Its nonces are stateless: a timestamp, a
random salt and an HMAC of both under a shared secret, so any replica holding
the same secret accepts a nonce another one issued, until it expires. A
correct answer on an expired nonce gets a fresh challenge with ``stale=true``,
so the peer retries without asking its user again.

``now`` is wall-clock seconds (``time.time()``), the clock replicas share;
the challenger holds no timer. Passwords, HA1 values, response digests and
the secret never appear in a ``Verdict``, a log line or an exception. The
secret is random (``random_secret``, or one configured for the replicas),
never derived from the passwords: a 401 would let its reader test password
guesses offline.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

from sipmessage import URI, Request

from services.common.sip.auth import AuthError, digest_from_ha1, hash_a1, parse_params

ALGORITHMS = ("SHA-256", "MD5")
"Offered in this order: RFC 8760 asks for SHA-256 first, MD5 for older peers."
NONCE_LIFETIME = 300.0
"Seconds a nonce is accepted after it was issued."
CLOCK_SKEW = 5.0
"Seconds a nonce may be dated in the future (replicas' clocks differ a little)."
MAX_TRACKED_NONCES = 10000
"Nonces whose last ``nc`` is remembered against replays, at most (the oldest go first)."
MIN_SECRET_BYTES = 16
"The shortest nonce secret accepted."

_SALT = 8
_MAC = 16
_NONCE_BYTES = 8 + _SALT + _MAC
_HASH_NAMES = {"MD5": "md5", "SHA-256": "sha256"}


@dataclass(frozen=True, slots=True)
class Ha1:
    """A user's stored ``H(username:realm:password)`` per algorithm, instead of the password."""

    md5: str = field(default="", repr=False)
    sha256: str = field(default="", repr=False)

    def for_algorithm(self, algorithm: str) -> str:
        return self.md5 if algorithm == "MD5" else self.sha256


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the credentials of one request are worth."""

    accepted: bool
    "The request is authenticated: serve it."
    username: str = ""
    "The user the credentials name (also when refused, for the log)."
    reason: str = ""
    "Why they were refused, in a few words fit for a log line."
    stale: bool = False
    "Right credentials on an expired nonce: challenge again with ``stale=true``."
    unknown_nonce: bool = False
    """A nonce this secret did not sign (another replica's with its own secret, or forged):
    nothing was checked; challenge afresh (``stale=false``) rather than refuse."""


class DigestChallenger:
    """Challenges requests for one realm and checks the answers."""

    def __init__(
        self,
        realm: str,
        credentials: Mapping[str, str | Ha1],
        secret: bytes,
        *,
        nonce_lifetime: float = NONCE_LIFETIME,
        proxy: bool = False,
        algorithms: tuple[str, ...] = ALGORITHMS,
    ) -> None:
        """``credentials``: username to password, or to its ``Ha1`` for this realm.

        ``secret`` signs the nonces: every replica that must accept the others'
        nonces gets the same one (at least 16 random bytes). ``proxy`` makes it
        a 407 challenger (``Proxy-Authenticate``/``Proxy-Authorization``).
        """
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the nonce secret needs at least {MIN_SECRET_BYTES} bytes")
        unknown = [a for a in algorithms if a not in _HASH_NAMES]
        if unknown or not algorithms:
            raise ValueError(f"unsupported digest algorithms {unknown or algorithms!r}")
        self.realm = realm
        self._ha1 = {
            algorithm: {
                user: (
                    hash_a1(algorithm, user, realm, value)
                    if isinstance(value, str)
                    else value.for_algorithm(algorithm)
                )
                for user, value in credentials.items()
            }
            for algorithm in algorithms
        }
        self._secret = secret
        self._lifetime = nonce_lifetime
        self._algorithms = algorithms
        self._opaque = _b64(_hmac(secret, b"opaque\0" + realm.encode())[:_MAC])
        self._last_nc: dict[str, tuple[int, float]] = {}
        "Highest ``nc`` seen per nonce and when the nonce expires."
        self.status = 407 if proxy else 401
        "The status code of the challenge."
        self.challenge_header = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        self.credentials_header = "Proxy-Authorization" if proxy else "Authorization"

    def __repr__(self) -> str:
        return f"DigestChallenger(realm={self.realm!r}, status={self.status})"

    # --- challenging ---------------------------------------------------------------------

    def challenge(self, now: float, *, stale: bool = False) -> list[tuple[str, str]]:
        """The (header, value) pairs of a 401/407: one challenge per algorithm, one nonce."""
        nonce = self._new_nonce(now)
        return [
            (self.challenge_header, self._challenge_value(algorithm, nonce, stale))
            for algorithm in self._algorithms
        ]

    def _challenge_value(self, algorithm: str, nonce: str, stale: bool) -> str:
        value = (
            f'Digest realm="{_escape(self.realm)}", nonce="{nonce}", '
            f'opaque="{self._opaque}", algorithm={algorithm}, qop="auth"'
        )
        return value + (", stale=true" if stale else "")

    def _new_nonce(self, now: float) -> str:
        head = struct.pack(">Q", max(0, int(now))) + secrets.token_bytes(_SALT)
        return _b64(head + self._mac(head))

    def _mac(self, head: bytes) -> bytes:
        return _hmac(self._secret, b"nonce\0" + self.realm.encode() + b"\0" + head)[:_MAC]

    # --- verifying -----------------------------------------------------------------------

    def verify(self, request: Request, now: float) -> Verdict:
        """Check the credentials of ``request`` for this realm.

        Refused without credentials, with a forged or foreign nonce, another
        realm, URI, method or algorithm, a wrong response, a replayed ``nc``,
        or right ones on an expired nonce (``stale``). The caller answers a
        refusal with ``challenge(now, stale=verdict.stale)`` (or a 403).
        """
        params = self._credentials_of(request)
        if params is None:
            return Verdict(False, reason=f"no {self.credentials_header} for realm {self.realm!r}")
        username = params.get("username", "")
        try:
            return self._check(request, params, username, now)
        except (AuthError, ValueError, KeyError):
            return Verdict(False, username, reason="unreadable credentials")

    def _credentials_of(self, request: Request) -> dict[str, str] | None:
        """The auth parameters of the credentials for our realm, if the request has some."""
        for value in request.headers.getlist(self.credentials_header):
            scheme, _, rest = value.strip().partition(" ")
            if scheme.lower() != "digest":
                continue
            try:
                params = parse_params(rest)
            except AuthError:
                continue
            if params.get("realm") == self.realm:
                return params
        return None

    def _check(
        self, request: Request, params: dict[str, str], username: str, now: float
    ) -> Verdict:
        def refuse(reason: str) -> Verdict:
            return Verdict(False, username, reason=reason)

        algorithm = params.get("algorithm", "MD5").upper()
        if algorithm not in self._algorithms:
            return refuse(f"algorithm {algorithm} not offered")
        nonce = params.get("nonce", "")
        issued = self._issued(nonce)
        if issued is None:
            return Verdict(False, username, "nonce not issued by this realm", unknown_nonce=True)
        if issued > now + CLOCK_SKEW:
            return refuse("nonce dated in the future")
        if not hmac.compare_digest(params.get("opaque", ""), self._opaque):
            return refuse("opaque does not match")
        uri = params.get("uri", "")
        if str(URI.parse(uri)) != str(request.uri):
            return refuse("uri is not the Request-URI")
        qop, nc, cnonce = params.get("qop", ""), params.get("nc", ""), params.get("cnonce", "")
        if qop.lower() != "auth" or not cnonce or len(nc) != 8:
            return refuse("qop=auth with nc and cnonce required")
        count = int(nc, 16)
        known = self._ha1[algorithm].get(username) or None  # an empty Ha1 field: no such user
        # An unknown user costs the same hashing as a known one.
        ha1 = known if known is not None else hash_a1(algorithm, username, self.realm, "")
        expected = digest_from_ha1(
            algorithm=algorithm,
            ha1=ha1,
            method=request.method,
            uri=uri,
            nonce=nonce,
            qop="auth",
            nc=nc,
            cnonce=cnonce,
        )
        given = params.get("response", "").lower()
        if not hmac.compare_digest(expected.encode(), given.encode()) or known is None:
            return refuse("wrong username or password")
        expires = issued + self._lifetime
        if now > expires:
            return Verdict(False, username, reason="nonce expired", stale=True)
        if not self._count(nonce, count, expires, now):
            return refuse("nonce count replayed")
        return Verdict(True, username)

    def _issued(self, nonce: str) -> float | None:
        """When ``nonce`` was issued, if this realm's secret signed it."""
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except ValueError:
            return None
        if len(raw) != _NONCE_BYTES:
            return None
        head, mac = raw[:-_MAC], raw[-_MAC:]
        if not hmac.compare_digest(mac, self._mac(head)):
            return None
        (issued,) = struct.unpack(">Q", head[:8])
        return float(issued)

    def _count(self, nonce: str, count: int, expires: float, now: float) -> bool:
        """Record ``nc``; False when it is not above the last one seen with this nonce."""
        last = self._last_nc.get(nonce)
        if last is not None and count <= last[0]:
            return False
        if count < 1:
            return False
        if last is None and len(self._last_nc) >= MAX_TRACKED_NONCES:
            self._forget_expired(now)
        self._last_nc[nonce] = (count, expires)
        return True

    def _forget_expired(self, now: float) -> None:
        for key, (_, expires) in list(self._last_nc.items()):
            if expires < now:
                del self._last_nc[key]
        while len(self._last_nc) >= MAX_TRACKED_NONCES:
            del self._last_nc[next(iter(self._last_nc))]


def random_secret() -> bytes:
    """A nonce secret for one process (32 random bytes): its nonces are good with it only."""
    return secrets.token_bytes(32)


def _hmac(secret: bytes, data: bytes) -> bytes:
    return hmac.new(secret, data, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
