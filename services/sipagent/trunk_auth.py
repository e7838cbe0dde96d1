"""How a trunk with ``inbound_auth`` proves its INVITEs: a digest challenge. Sans I/O.

One realm and one challenge for every such trunk (which trunk calls is known
only from the answer's username); stateless nonces signed with a secret of
the agent (``SIP_NONCE_SECRET`` shared by replicas), never with the passwords.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from sipmessage import Request, Response

from services.common.inbound_routes import DIGEST_ALGORITHMS
from services.common.providers import Trunk
from services.common.sip.challenge import DigestChallenger, random_secret
from services.common.sip.message import make_response, new_tag

log = logging.getLogger(__name__)


class TrunkAuth(Protocol):
    """Digest authentication of the INVITEs of trunks with ``inbound_auth`` (``DigestTrunks``)."""

    def check(self, request: Request) -> str | Response | None:
        """The trunk whose credentials ``request`` proves, the 401 to send (no credentials
        yet, or a stale nonce), or None: refused."""
        ...


INBOUND_REALM = "bridge"
"The digest realm of the challenges to trunks (their providers store it with the password)."


class DigestTrunks:
    """The trunks with ``inbound_auth``, told apart by username: one realm, stateless nonces.

    ``secret`` signs the nonces (``SIP_NONCE_SECRET``, at least 16 bytes): every
    SIP agent given the same one accepts the nonces of the others (the retry
    may reach another replica). None: a random secret of this process, so a
    retry reaching another replica gets a fresh 401. Never derived from the
    passwords: a 401 must not let anyone test password guesses offline.
    ``clock``: wall-clock seconds, shared by replicas.
    """

    def __init__(
        self,
        trunks: Iterable[Trunk],
        *,
        secret: bytes | None = None,
        realm: str = INBOUND_REALM,
        clock: Callable[[], float] = time.time,
    ) -> None:
        trunks = list(trunks)
        self._trunk_of: dict[str, str] = {}
        passwords: dict[str, str] = {}
        for trunk in trunks:
            auth = trunk.inbound_auth
            if auth is not None and auth.username not in passwords:
                self._trunk_of[auth.username] = trunk.name
                passwords[auth.username] = auth.password
        # One challenge for every trunk (which one calls is known only from the answer):
        # the algorithms any of them accepts, most preferred first.
        wanted = {
            a for trunk in trunks if trunk.inbound_auth for a in trunk.inbound_auth.algorithms
        }
        algorithms = tuple(a for a in DIGEST_ALGORITHMS if a in wanted) or DIGEST_ALGORITHMS
        key = secret if secret is not None else random_secret()
        self._challenger = DigestChallenger(realm, passwords, key, algorithms=algorithms)
        self._clock = clock

    def __bool__(self) -> bool:
        return bool(self._trunk_of)

    def check(self, request: Request) -> str | Response | None:
        now = self._clock()
        challenger = self._challenger
        if not request.headers.getlist(challenger.credentials_header):
            return self._challenge(request, now, stale=False)
        verdict = challenger.verify(request, now)
        if verdict.accepted:
            return self._trunk_of.get(verdict.username)
        if verdict.stale:
            return self._challenge(request, now, stale=True)
        if verdict.unknown_nonce:
            # Another replica's nonce (each has its own secret without SIP_NONCE_SECRET),
            # or a forged one: nothing was proven either way; a fresh 401.
            log.info("INVITE with a nonce not issued here: challenged again")
            return self._challenge(request, now, stale=False)
        log.info("INVITE with digest credentials refused: %s", verdict.reason)
        return None

    def _challenge(self, request: Request, now: float, *, stale: bool) -> Response:
        headers = self._challenger.challenge(now, stale=stale)
        return make_response(request, self._challenger.status, to_tag=new_tag(), headers=headers)
