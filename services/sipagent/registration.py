"""REGISTER toward one trunk (RFC 3261 section 10), sans-I/O.

One ``Registration`` per trunk that asked for it. It binds this agent's
Contact to ``sip:<username>@<domain>`` at the trunk, keeps one Call-ID with a
growing CSeq across refreshes (RFC 3261 10.2.4), answers a digest challenge
once (again only when the registrar says the nonce is ``stale``), and:

- refreshes before the expiry the registrar granted (``refresh_delay``);
- on 423 Interval Too Brief asks again with the registrar's ``Min-Expires``;
- after a failure (no answer, 403, 5xx...) tries again after a delay that
  doubles from ``BACKOFF_MIN`` up to ``BACKOFF_MAX``, jittered, unless the
  registrar's ``Retry-After`` says when; a failed refresh whose binding still
  holds is retried at half the time left, so one lost answer does not let
  the binding lapse;
- on ``unregister`` sends ``Expires: 0`` and finishes on its final response
  or after ``UNREGISTER_TIMEOUT``, whichever comes first.

Driven like the transactions: ``start(now)``, ``receive(response, now)``,
``handle_timer(now)``, ``unregister(now)``; pulled with
``messages_to_send()`` and ``get_timer()``; ``status(now)`` is what is shown
to operators. The password lives only in the digest authenticator.
"""

from __future__ import annotations

import enum
import logging
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from sipmessage import Address, Response

from services.common.sip.auth import AuthError, DigestAuthenticator
from services.common.sip.message import (
    SipMessage,
    make_request,
    new_branch,
    new_call_id,
    new_tag,
)
from services.common.sip.transaction import (
    T1,
    NonInviteClientTransaction,
    ResponseReceived,
    TransactionTimedOut,
)

log = logging.getLogger(__name__)

USER_AGENT = "webrtc-sip-bridge/0.1"

BACKOFF_MIN = 30.0
"Seconds before the first retry after a failure."
BACKOFF_MAX = 900.0
"Longest delay between retries (15 minutes)."
JITTER = 0.25
"Each retry delay is shortened by up to this fraction, at random, so replicas spread out."
REFRESH_MARGIN = 30.0
"Seconds before expiry a long registration is refreshed."
BOUND_RETRY_MIN = 1.0
"Shortest delay between retries of a failed refresh while the binding still holds."
UNREGISTER_TIMEOUT = 4.0
"Seconds ``unregister`` waits for the registrar's answer before giving up."
MAX_INTERVAL_RETRIES = 3
"423 answers followed in one attempt before it counts as a failure."

_DIGITS = re.compile(r"\s*([0-9]{1,10})")


class RegistrationState(enum.Enum):
    UNREGISTERED = "unregistered"
    REGISTERING = "registering"
    REGISTERED = "registered"
    FAILED = "failed"
    UNREGISTERING = "unregistering"


@dataclass(frozen=True)
class RegistrationStatus:
    """One registration as operators see it; times on the core's clock (``now``)."""

    trunk: str
    state: RegistrationState
    registrar: str
    "``host:port`` the REGISTER goes to."
    aor: str
    "The address-of-record bound, ``sip:<username>@<domain>``."
    expires_at: float | None
    "When the binding the registrar granted lapses (None: no binding)."
    status_code: int | None
    "Status of the last final response (408 when none came)."
    reason: str
    "Its reason phrase, or why the last attempt failed."
    next_attempt_at: float | None
    "When the next REGISTER goes out (a refresh or a retry)."


def refresh_delay(granted: float) -> float:
    """Seconds after a 200 to send the refresh: half a short expiry, 30 s before a long one.

    ``max(granted / 2, granted - 30)``: the two meet at 60 s, so a 60 s
    binding refreshes at 30 s, a 3600 s binding at 3570 s, a 2 s one at 1 s.
    """
    return max(granted / 2, granted - REFRESH_MARGIN)


def backoff_delay(failures: int, rng: Callable[[], float]) -> float:
    """Delay before retry number ``failures`` (1 first): doubling, capped, jittered down."""
    delay: float = min(BACKOFF_MIN * 2.0 ** max(failures - 1, 0), BACKOFF_MAX)
    return delay * (1 - JITTER * rng())


def _seconds(value: str | None) -> int | None:
    """The delta-seconds at the start of a header value (``Retry-After: 120 (busy)``)."""
    if value is None:
        return None
    match = _DIGITS.match(value)
    return int(match.group(1)) if match else None


class Registration:
    """REGISTER bindings of one trunk, kept fresh until ``unregister``."""

    def __init__(
        self,
        *,
        trunk: str,
        registrar: str,
        domain: str,
        username: str,
        password: str,
        contact: str,
        sent_by: str,
        transport: str = "udp",
        expires: int = 600,
        t1: float = T1,
        rng: Callable[[], float] = random.random,
        user_agent: str = USER_AGENT,
    ) -> None:
        """``registrar``: ``host:port`` for display; ``contact``: a ``<sip:...>`` Contact value."""
        self.trunk = trunk
        self.registrar = registrar
        self.aor = f"sip:{username}@{domain}"
        self.call_id = new_call_id()
        self.state = RegistrationState.UNREGISTERED
        self._request_uri = f"sip:{domain}"
        self._from_tag = new_tag()
        self._contact = contact
        self._sent_by = sent_by
        self._transport = transport
        self._reliable = transport != "udp"
        self._expires = expires
        self._t1 = t1
        self._rng = rng
        self._user_agent = user_agent
        self._authenticator = DigestAuthenticator(username, password) if username else None
        self._cseq = 0
        self._transaction: NonInviteClientTransaction | None = None
        self._outbox: list[SipMessage] = []
        self._challenges = 0
        "Challenges answered in the current attempt."
        self._interval_retries = 0
        self._failures = 0
        "Failed attempts in a row, for the backoff."
        self._next_attempt: float | None = None
        self._deadline: float | None = None
        "When an unregistration gives up waiting."
        self._expires_at: float | None = None
        self._status_code: int | None = None
        self._reason = ""
        self._started = False
        self.finished = False
        "True once unregistered: the host may forget it."

    # --- driving ------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Send the first REGISTER."""
        self._started = True
        self._attempt(now)

    def receive(self, response: Response, now: float) -> None:
        transaction = self._transaction
        if transaction is None or not transaction.matches(response):
            log.debug("%s: dropped a response of no pending REGISTER", self.trunk)
            return
        transaction.receive(response, now)
        self._drain(now)

    def handle_timer(self, now: float) -> None:
        if self._transaction is not None:
            self._transaction.handle_timer(now)
            self._drain(now)
        if self._deadline is not None and now >= self._deadline:
            log.info("%s: no answer to the unregistration; giving up", self.trunk)
            self._finish("no answer to the unregistration")
        elif self._next_attempt is not None and now >= self._next_attempt:
            self._attempt(now)

    def get_timer(self) -> float | None:
        timers = [self._next_attempt, self._deadline]
        if self._transaction is not None:
            timers.append(self._transaction.get_timer())
        return min((t for t in timers if t is not None), default=None)

    def messages_to_send(self) -> list[SipMessage]:
        out, self._outbox = self._outbox, []
        if self._transaction is not None:
            out += self._transaction.messages_to_send()
        return out

    def unregister(self, now: float) -> None:
        """Remove the binding (``Expires: 0``); finish at once when there is none to remove.

        A REGISTER still unanswered may have created a binding, so it is
        removed too.
        """
        if self.finished or self.state is RegistrationState.UNREGISTERING:
            return
        self._next_attempt = None
        bound = self._expires_at is not None and self._expires_at > now
        if not self._started or not (bound or self._transaction is not None):
            self._finish("")
            return
        self._set_state(RegistrationState.UNREGISTERING)
        self._deadline = now + UNREGISTER_TIMEOUT
        self._challenges = 0
        self._send(now, expires=0)

    def status(self, now: float) -> RegistrationStatus:
        expires_at = self._expires_at
        if expires_at is not None and expires_at <= now:
            expires_at = None
        return RegistrationStatus(
            trunk=self.trunk,
            state=self.state,
            registrar=self.registrar,
            aor=self.aor,
            expires_at=expires_at,
            status_code=self._status_code,
            reason=self._reason,
            next_attempt_at=self._next_attempt,
        )

    # --- attempts -----------------------------------------------------------------

    def _attempt(self, now: float) -> None:
        """A new REGISTER: the first, a refresh or a retry."""
        self._next_attempt = None
        self._challenges = 0
        self._interval_retries = 0
        if self.state is not RegistrationState.REGISTERED:
            self._set_state(RegistrationState.REGISTERING)
        self._send(now, expires=self._expires)

    def _send(
        self, now: float, *, expires: int, credentials: tuple[str, str] | None = None
    ) -> None:
        self._cseq += 1
        via = f"SIP/2.0/{self._transport.upper()} {self._sent_by};rport;branch={new_branch()}"
        headers = [
            ("Via", via),
            ("Max-Forwards", "70"),
            ("From", f"<{self.aor}>;tag={self._from_tag}"),
            ("To", f"<{self.aor}>"),
            ("Call-ID", self.call_id),
            ("CSeq", f"{self._cseq} REGISTER"),
            ("Contact", self._contact),
            ("Expires", str(expires)),
        ]
        if credentials is not None:
            headers.append(credentials)
        headers.append(("User-Agent", self._user_agent))
        request = make_request("REGISTER", self._request_uri, headers)
        self._transaction = NonInviteClientTransaction(
            request, reliable=self._reliable, t1=self._t1
        )
        self._transaction.start(now)

    def _resend(self, now: float, credentials: tuple[str, str] | None = None) -> None:
        """The same request again with a new CSeq (after a challenge or a 423)."""
        unregistering = self.state is RegistrationState.UNREGISTERING
        self._send(now, expires=0 if unregistering else self._expires, credentials=credentials)

    def _drain(self, now: float) -> None:
        transaction = self._transaction
        if transaction is None:
            return
        # What the transaction wants sent goes out before it may be replaced below.
        self._outbox += transaction.messages_to_send()
        while (event := transaction.next_event()) is not None:
            if isinstance(event, TransactionTimedOut):
                self._transaction = None
                self._failed(now, 408, "Request Timeout (no answer)")
                return
            if isinstance(event, ResponseReceived) and event.response.code >= 200:
                self._transaction = None
                self._final(event.response, now)
                return

    def _final(self, response: Response, now: float) -> None:
        code = response.code
        self._status_code = code
        self._reason = response.phrase
        if code in (401, 407):
            self._challenged(response, now)
        elif self.state is RegistrationState.UNREGISTERING:
            self._expires_at = None
            self._finish(response.phrase)
        elif 200 <= code < 300:
            self._registered(response, now)
        elif code == 423:
            self._too_brief(response, now)
        else:
            self._failed(now, code, response.phrase, _seconds(response.headers.get("Retry-After")))

    def _challenged(self, response: Response, now: float) -> None:
        """Answer a 401/407; a second one only when it says the nonce was ``stale``."""
        try:
            if self._authenticator is None:
                raise AuthError("the trunk asks for credentials and none are set")
            stale = self._authenticator.choose(response).stale
            # A stale nonce is renewed once, never in a loop.
            if self._challenges >= 2 or (self._challenges == 1 and not stale):
                raise AuthError("credentials refused")
            credentials = self._authenticator.authorize(response, "REGISTER", self._request_uri)
        except AuthError as exc:
            if self.state is RegistrationState.UNREGISTERING:
                self._finish(str(exc))
            else:
                self._failed(now, response.code, f"{response.phrase} ({exc})")
            return
        self._challenges += 1
        self._resend(now, credentials)

    def _registered(self, response: Response, now: float) -> None:
        granted = self._granted(response)
        if granted <= 0:
            self._failed(now, response.code, "registrar kept no binding (expires=0)")
            return
        self._failures = 0
        self._expires_at = now + granted
        self._next_attempt = now + refresh_delay(granted)
        self._set_state(RegistrationState.REGISTERED)
        log.debug("%s: registered for %d s", self.trunk, granted)

    def _granted(self, response: Response) -> int:
        """The expiry of our binding: its Contact ``expires``, else ``Expires``, else ours."""
        ours = _contact_key(self._contact)
        try:
            contacts = response.contact
        except ValueError:
            contacts = []
        for address in contacts:
            uri = address.uri
            if (uri.user, uri.host.lower(), uri.port) == ours:
                value = _seconds(address.parameters.get("expires"))
                if value is not None:
                    return value
        header = _seconds(response.headers.get("Expires"))
        return self._expires if header is None else header

    def _too_brief(self, response: Response, now: float) -> None:
        minimum = _seconds(response.headers.get("Min-Expires"))
        if (
            minimum is None
            or minimum <= self._expires
            or self._interval_retries >= MAX_INTERVAL_RETRIES
        ):
            self._failed(now, 423, f"{response.phrase} (no usable Min-Expires)")
            return
        log.info("%s: registrar asks for at least %d s", self.trunk, minimum)
        self._interval_retries += 1
        self._expires = minimum
        self._challenges = 0
        self._resend(now)

    def _failed(
        self, now: float, code: int | None, reason: str, retry_after: int | None = None
    ) -> None:
        if self.state is RegistrationState.UNREGISTERING:
            self._finish(reason)
            return
        self._status_code = code
        self._reason = reason
        if self._expires_at is not None and self._expires_at <= now:
            self._expires_at = None
        if retry_after:
            delay: float = retry_after
        elif self._expires_at is not None:
            # A failed refresh while the binding holds: try again before it lapses,
            # without counting toward the backoff.
            delay = max(min(BACKOFF_MIN, (self._expires_at - now) / 2), BOUND_RETRY_MIN)
        else:
            self._failures += 1
            delay = backoff_delay(self._failures, self._rng)
        self._next_attempt = now + delay
        self._set_state(RegistrationState.FAILED)
        log.warning(
            "%s: registration failed (%s %s); next attempt in %.0f s",
            self.trunk,
            code if code is not None else "-",
            reason,
            delay,
        )

    def _finish(self, reason: str) -> None:
        self._transaction = None
        self._deadline = None
        self._next_attempt = None
        self._expires_at = None
        if reason:
            self._reason = reason
        self._set_state(RegistrationState.UNREGISTERED)
        self.finished = True

    def _set_state(self, state: RegistrationState) -> None:
        if state is not self.state:
            log.info("%s: registration %s -> %s", self.trunk, self.state.value, state.value)
            self.state = state


def _contact_key(contact: str) -> tuple[str | None, str, int | None]:
    """User, host and port of a ``<sip:...>`` Contact value, to find it in a 200."""
    uri = Address.parse(contact).uri
    return uri.user, uri.host.lower(), uri.port
