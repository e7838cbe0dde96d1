"""Records of the fleet: instance heartbeats and the call registry's entries.

These are not call events (they belong to no call subject and are not in
``AnyEvent``): heartbeats travel on ``subjects.heartbeat(service)``, call
records live in the JetStream KV bucket ``bridge_calls`` keyed by call id.
Both are JSON, encoded and decoded only here.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from proto.subjects import Source

SERVICES: tuple[Source, ...] = ("signaling", "media", "sipagent")

RecordState = Literal["setup", "ringing", "inviting", "confirmed", "reaping"]
"""Where a call stands, as far as a survivor needs to know.

``ringing``: an inbound call rings browsers (the SIP agent holds the INVITE);
``setup``: signaling sent ``CallRequested``; ``inviting``: a SIP agent sent the
INVITE; ``confirmed``: the trunk's 2xx was ACKed, a BYE is owed at the end;
``reaping``: a survivor claimed the call of a dead instance and is ending it.
"""


class DecodeError(ValueError):
    """Bytes that are not a valid fleet record."""


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True, tag="fleet.heartbeat"):
    """An instance is alive; sent every heartbeat interval."""

    service: Source
    "Which service the instance runs."
    instance_id: str
    "The instance's id (``INSTANCE_ID``)."
    active_calls: int
    "Calls the instance holds now."
    max_calls: int
    "Calls it takes at most (``MAX_CALLS``); 0 when it has no limit of its own."
    draining: bool = False
    "True once it stopped taking new calls (SIGTERM)."
    sent_at: float = 0.0
    "Sender's wall clock (seconds since the epoch), for logs only: leases use the receive time."


class SipDialogRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What another SIP agent needs to end the dialog with a BYE.

    While the INVITE is in progress only the Call-ID, transport and trunk are
    known; the rest is filled in from the 2xx.
    """

    sip_call_id: str
    "SIP Call-ID of the dialog."
    transport: str
    "``udp`` or ``tcp``."
    trunk_host: str
    "Address the dialog's requests are sent to (resolved trunk address)."
    trunk_port: int
    "Port the dialog's requests are sent to."
    local_tag: str = ""
    "Our tag (the From tag of our requests; the To tag of an inbound call's INVITE)."
    local_from: str = ""
    "Our From header value, tag included, verbatim."
    local_cseq: int = 0
    "Highest CSeq we used in the dialog (the INVITE's until a BYE; 0 in a dialog we answered)."
    remote_tag: str = ""
    "The trunk's tag (the To tag of our requests; empty before the dialog is confirmed)."
    remote_to: str = ""
    "The trunk's To header value, tag included, verbatim."
    remote_target: str = ""
    "Remote target URI (the Contact of the 2xx, or of the INVITE we answered)."
    route_set: tuple[str, ...] = ()
    "Route header values in sending order."

    @property
    def confirmed(self) -> bool:
        """Whether the record holds a whole dialog, so a BYE can be built."""
        return bool(self.local_from and self.remote_to and self.remote_tag and self.remote_target)


class CallRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One call in the registry: who holds it and how to end it."""

    call_id: str
    "The bridge's call id (the KV key)."
    state: RecordState
    "See ``RecordState``."
    updated_at: float
    "Writer's wall clock (seconds since the epoch) at the last write."
    signaling_id: str = ""
    "Signaling instance holding the browser socket."
    media_id: str = ""
    "Media worker holding the call's media (empty until ``MediaPrepared``)."
    sipagent_id: str = ""
    "SIP agent holding the dialog (empty until the INVITE is sent)."
    dialog: SipDialogRecord | None = None
    "SIP dialog identifiers, once a SIP agent holds the call."
    reaper_service: str = ""
    "Service of the survivor that claimed the call (state ``reaping``)."
    reaper_id: str = ""
    "Instance of the survivor that claimed the call (state ``reaping``)."
    direction: str = "outbound"
    "``outbound`` (the browser called) or ``inbound`` (the trunk called)."
    identity: str = ""
    "The browser's identity (the client token's ``sub``, or the listening user); empty: anonymous."
    caller: str = ""
    "Who calls: the browser's identity outbound, the trunk's From user inbound."
    callee: str = ""
    "Who is called: the destination outbound, the DID inbound."
    trunk: str = ""
    "The trunk of the call (``PROVIDERS_FILE`` name, ``default`` for ``.env``)."
    started_at: float = 0.0
    "Wall clock (seconds since the epoch) when the call started: the offer, or the INVITE."
    answered_at: float = 0.0
    "Wall clock when the call was answered; 0 before."

    def owner(self, service: Source) -> str:
        """The instance of ``service`` holding the call, or ``""``."""
        return {
            "signaling": self.signaling_id,
            "media": self.media_id,
            "sipagent": self.sipagent_id,
        }[service]


_encoder = msgspec.json.Encoder()
_heartbeat_decoder = msgspec.json.Decoder(Heartbeat)
_record_decoder = msgspec.json.Decoder(CallRecord)


def encode(record: Heartbeat | CallRecord) -> bytes:
    return _encoder.encode(record)


def decode_heartbeat(data: bytes) -> Heartbeat:
    try:
        return _heartbeat_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise DecodeError(str(exc)) from exc


def decode_record(data: bytes) -> CallRecord:
    try:
        return _record_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise DecodeError(str(exc)) from exc
