"""What SIP agents say about their REGISTER bindings, for ``bridge registrations``.

Not a call event: a request on ``subjects.registrations()`` (empty body) is
answered by every SIP agent with one ``RegistrationsReply``. The same JSON is
served at ``GET /registrations`` on each SIP agent's ops port. Encoded and
decoded only here. No credential is ever part of it.
"""

from __future__ import annotations

import msgspec


class DecodeError(ValueError):
    """Bytes that are not a valid registrations reply."""


class TrunkRegistration(msgspec.Struct, frozen=True, kw_only=True):
    """One trunk's binding as one SIP agent holds it."""

    trunk: str
    "Trunk name (``default`` for the ``SIP_TRUNK_*`` settings)."
    state: str
    "``unregistered``, ``registering``, ``registered``, ``failed`` or ``unregistering``."
    registrar: str
    "``host:port`` the REGISTERs go to."
    aor: str
    "Address-of-record bound, ``sip:<username>@<domain>``."
    expires_at: float | None = None
    "When the granted binding lapses (seconds since the epoch); None without one."
    status_code: int | None = None
    "Status of the registrar's last final response (408: none came)."
    reason: str = ""
    "Its reason phrase, or why the last attempt failed."
    next_attempt_at: float | None = None
    "When the next REGISTER (refresh or retry) goes out (seconds since the epoch)."


class RegistrationsReply(msgspec.Struct, frozen=True, kw_only=True, tag="registrations.reply"):
    """Every binding of one SIP agent instance."""

    instance_id: str
    "The SIP agent's ``INSTANCE_ID``."
    registrations: list[TrunkRegistration] = msgspec.field(default_factory=list)
    "One per trunk with ``register`` set, by trunk name."
    sent_at: float = 0.0
    "Sender's wall clock (seconds since the epoch)."


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(RegistrationsReply)


def encode(reply: RegistrationsReply) -> bytes:
    return _encoder.encode(reply)


def decode(data: bytes) -> RegistrationsReply:
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise DecodeError(str(exc)) from exc
