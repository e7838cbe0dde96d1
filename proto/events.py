"""Call lifecycle events exchanged over NATS.

Every event is a frozen msgspec ``Struct`` tagged by its ``type`` field and
carries the ``call_id`` of the browser call session it belongs to. Names are
past tense: an event says what happened, the subject says who said it.
"""

from __future__ import annotations

from typing import Literal

import msgspec

Direction = Literal["outbound", "inbound"]
"Who placed the call: the browser (``outbound``, toward the trunk) or the trunk (``inbound``)."


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every event on the bus."""

    call_id: str
    "Identifier of the call session, chosen by signaling (URL-safe, no dots)."


# --- signaling → media (work queue) ------------------------------------------


class CallRequested(Event, frozen=True, tag="call.requested"):
    """A browser sent an offer; a media worker should take the call."""

    offer_sdp: str
    "The browser's WebRTC SDP offer."
    destination: str
    "Who to call: a number such as ``+15551234567`` or a SIP user part."
    signaling_id: str
    "Instance id of the signaling process holding the browser socket."
    headers: dict[str, str] = {}
    "Custom SIP headers for the INVITE from the browser, already checked (names to values)."
    trunk: str = ""
    """The trunk the destination routes to (``PROVIDERS_FILE`` name, ``default`` for ``.env``);
    media shapes the trunk offer to it (codecs, SRTP). Empty: the media worker's defaults."""
    direction: Direction = "outbound"
    "``outbound``: the browser calls out; ``inbound``: the browser accepted a call from the trunk."
    trunk_offer_sdp: str = ""
    """Inbound only: the trunk's SDP offer from its INVITE. Media answers it with a codec the
    browser's offer shares where one exists (``MediaPrepared.trunk_answer_sdp``)."""


# --- media → call subject ------------------------------------------------------


class MediaPrepared(Event, frozen=True, tag="media.prepared"):
    """A media worker took the call: WebRTC answered, trunk RTP port open."""

    media_id: str
    "Instance id of the media worker that owns the call's media."
    answer_sdp: str
    "The WebRTC SDP answer for the browser."
    trunk_offer_sdp: str
    "Outbound: the SDP offer for the trunk (G.711 + telephone-event, PUBLIC_IP). Inbound: empty."
    trunk_answer_sdp: str = ""
    "Inbound: the SDP answer to the trunk's offer, for the SIP agent's 2xx. Outbound: empty."


class MediaFailed(Event, frozen=True, tag="media.failed"):
    """Media could not be prepared or broke during the call."""

    code: str
    "Error code (see ``proto.errors``)."
    reason: str
    "Human-readable reason, safe to show to the caller."


class CallDeclined(Event, frozen=True, tag="call.declined"):
    """A media worker will not take a ``CallRequested``: the requester tries another."""

    media_id: str
    "Instance id of the worker that declined."
    code: str
    "Why, as an error code: ``at_capacity`` or ``draining`` (see ``proto.errors``)."


class MediaConnected(Event, frozen=True, tag="media.connected"):
    """The browser's WebRTC leg completed ICE and DTLS."""


class IceCandidateReceived(Event, frozen=True, tag="ice.received"):
    """The browser trickled an ICE candidate after its offer."""

    candidate: str
    "The ``candidate:`` attribute line, as the browser sent it (empty: end of candidates)."
    sdp_mid: str | None = None
    "The media stream identification the candidate belongs to."
    sdp_mline_index: int | None = None
    "The index of the m-line the candidate belongs to."


# --- signaling → sipagent (work queue) ----------------------------------------


class DialRequested(Event, frozen=True, tag="dial.requested"):
    """Media is ready; a SIP agent should place the call to the trunk."""

    destination: str
    "Who to call, as in ``CallRequested``."
    offer_sdp: str
    "The trunk-side SDP offer built by media."
    media_id: str
    "Instance id of the media worker that owns the call's media."
    signaling_id: str
    "Instance id of the signaling process holding the browser socket."
    headers: dict[str, str] = {}
    "Custom SIP headers for the INVITE, as in ``CallRequested``."


# --- sipagent → call subject ---------------------------------------------------


class InviteSent(Event, frozen=True, tag="invite.sent"):
    """The SIP agent sent the INVITE toward the trunk."""

    sipagent_id: str
    "Instance id of the SIP agent that owns the dialog."
    request_uri: str
    "The Request-URI of the INVITE (no credentials)."
    dtmf: str = "rfc4733"
    "DTMF toward the trunk: ``rfc4733`` (media, if the answer has telephone-event) or ``info``."


class ProgressReceived(Event, frozen=True, tag="progress.received"):
    """The trunk answered with a provisional response (180 or 183)."""

    status: int
    "SIP status code of the provisional response."
    early_sdp: str | None = None
    "SDP answer carried by the provisional response, for early media."


class CallAnswered(Event, frozen=True, tag="call.answered"):
    """The dialog is confirmed: the trunk answered with 2xx (outbound), or ACKed ours (inbound)."""

    answer_sdp: str
    "The trunk's SDP: its answer (outbound), or the offer of its INVITE (inbound)."


class SessionUpdated(Event, frozen=True, tag="session.updated"):
    """The trunk's side of the media session changed and the change was accepted.

    Sent after a re-INVITE or UPDATE from the trunk was answered, after our
    own hold/resume re-INVITE got its 2xx, and after a transfer connected the
    call to a new party. Media retargets RTP to ``remote_sdp`` and sends to
    the trunk only while neither side holds.
    """

    remote_sdp: str
    "The trunk's current SDP (its offer or answer): address, port, payload types, direction."
    local_hold: bool = False
    "The browser put the trunk on hold (our SDP says ``sendonly``)."
    remote_hold: bool = False
    "The trunk put us on hold (its SDP says ``sendonly`` or ``inactive``)."
    transferred_to: str = ""
    "Set when a transfer (REFER) connected the call to this party (a SIP URI, no credentials)."


class HoldFailed(Event, frozen=True, tag="hold.failed"):
    """The trunk refused our hold or resume re-INVITE; the session is unchanged."""

    held: bool
    "What was asked: True for hold, False for resume."
    status: int | None = None
    "The SIP status of the refusal; None when the re-INVITE timed out."
    reason: str = ""
    "Human-readable reason, safe to show to the caller."


class DtmfReceived(Event, frozen=True, tag="dtmf.received"):
    """The trunk sent a DTMF digit (RFC 4733 event in RTP, or SIP INFO)."""

    digit: str
    "One of ``0-9``, ``*``, ``#``, ``A-D``."
    method: str
    "``rfc4733`` or ``info``."


class LegQuality(msgspec.Struct, frozen=True, kw_only=True):
    """One leg of a call as its media worker measured it (``CallStatsReported``)."""

    codec: str
    "The leg's codec (``PCMU``, ``PCMA``, ``opus``)."
    packets_in: int
    "RTP packets received from this leg's peer."
    packets_out: int
    "RTP packets sent to it."
    lost: int
    "Packets of the peer's stream that never arrived (RFC 3550 expected minus received)."
    loss: float
    "``lost`` as a fraction (0-1) of the packets expected."
    jitter_ms: float
    "Interarrival jitter of the peer's stream (RFC 3550 6.4.1)."
    rtt_ms: float | None = None
    "Round trip to the peer, from its RTCP report blocks (LSR/DLSR); None before one."
    remote_loss: float | None = None
    "The fraction of our stream the peer says it lost (its last RTCP report); None before one."
    mos: float
    "Estimated listening quality for audio from this peer, 1-4.5 (ITU-T G.107 E-model)."


class CallStatsReported(Event, frozen=True, tag="call.stats"):
    """The media of a call, measured: every few seconds while it lasts, and once at the end."""

    passthrough: bool
    "True when payloads are relayed untouched (both legs share the codec)."
    browser: LegQuality
    trunk: LegQuality | None = None
    "None until the trunk's SDP is known."
    final: bool = False
    "The last report of the call, sent when its media is released."


# --- inbound: sipagent → listeners, and the ring that follows ------------------


class CallArrived(Event, frozen=True, kw_only=True, tag="call.arrived"):
    """A trunk's INVITE was admitted and routed: ring the browsers listening as ``users``.

    Published on ``subjects.inbound_calls(user)`` for each user. A signaling
    instance with a browser listening as one of them rings it (``incoming``),
    subscribes to the call's ``sipagent`` subject and answers with
    ``RingingStarted`` on its own call subject.
    """

    sipagent_id: str
    "Instance id of the SIP agent holding the INVITE's server transaction."
    caller: str
    "Who calls: the From user part (a number such as ``+15557654321``), normalized when E.164."
    caller_name: str = ""
    "The From display name, if any (plain text, at most 64 characters)."
    called: str
    "The number or user called (the Request-URI or To user part): the DID."
    trunk: str
    "The trunk the INVITE came from (``PROVIDERS_FILE`` name, ``default`` for ``.env``)."
    users: tuple[str, ...]
    "Every identity this call rings (``[[inbound]]`` ``user``/``users``)."
    offer_sdp: str
    "The trunk's SDP offer (passed on to media as ``CallRequested.trunk_offer_sdp``)."
    ring_timeout: float
    "Seconds the call rings before the trunk gets 480; for display."


class RingingStarted(Event, frozen=True, tag="ringing.started"):
    """A signaling instance rang at least one browser for an arrived call."""

    signaling_id: str
    "The instance that rang (it stays subscribed to the call until the call ends or is claimed)."
    listeners: int
    "How many browsers it rang."


class RingingStopped(Event, frozen=True, tag="ringing.stopped"):
    """Every browser a signaling instance rang for the call declined or went away."""

    signaling_id: str
    "The instance whose browsers stopped ringing."
    declined: bool
    "True: at least one person declined (the trunk then gets 486/603); False: they went away."


class AcceptRequested(Event, frozen=True, tag="accept.requested"):
    """A browser accepted an arrived call; the SIP agent lets the first such instance have it."""

    signaling_id: str
    "The instance holding the accepting browser."
    identity: str = ""
    "Who accepted (the listening user), for the registry and logs."


class CallClaimed(Event, frozen=True, tag="call.claimed"):
    """The SIP agent gave an arrived call to one signaling instance (the first to accept).

    Every other instance ends its rings with cause ``answered_elsewhere``; the
    winner sends ``CallRequested`` (``direction="inbound"``) to a media worker.
    """

    signaling_id: str
    "The instance that won the call."


class AnswerRequested(Event, frozen=True, tag="answer.requested"):
    """Media is ready for an inbound call: the SIP agent should answer the trunk (2xx)."""

    media_id: str
    "Instance id of the media worker that owns the call's media."
    answer_sdp: str
    "The SDP answer for the trunk (``MediaPrepared.trunk_answer_sdp``)."


# --- signaling → call subject (browser actions during a call) ------------------


class HoldRequested(Event, frozen=True, tag="hold.requested"):
    """The browser asked to put the trunk on hold, or to resume."""

    held: bool
    "True: hold (re-INVITE with ``sendonly``); False: resume (``sendrecv``)."


class DtmfRequested(Event, frozen=True, tag="dtmf.requested"):
    """The browser sent DTMF digits for the trunk, already checked by signaling."""

    digits: str
    "One to 32 of ``0-9``, ``*``, ``#``, ``A-D``; sent in order."
    duration_ms: int = 160
    "How long each digit sounds (RFC 4733 event duration or INFO ``Duration``)."


# --- any service → its call subject --------------------------------------------


class HangupRequested(Event, frozen=True, tag="hangup.requested"):
    """A side wants the call ended (browser hung up, socket lost, media failed)."""

    cause: str
    "Why, as a cause code (see ``proto.errors``)."


class CallEnded(Event, frozen=True, tag="call.ended"):
    """The call is over; every service releases what it holds for it."""

    cause: str
    "Why, as a cause code (see ``proto.errors``)."
    status: int | None = None
    "Final SIP status that ended the call, when a SIP response did."
    reason: str = ""
    "Human-readable reason, e.g. ``Busy Here``, safe to show to the caller."
    code: str = ""
    "An error code for the browser's ``error`` message (e.g. ``unknown_destination``); empty: none."


AnyEvent = (
    CallRequested
    | MediaPrepared
    | MediaFailed
    | MediaConnected
    | IceCandidateReceived
    | DialRequested
    | InviteSent
    | ProgressReceived
    | CallAnswered
    | HangupRequested
    | CallEnded
    | CallDeclined
    | SessionUpdated
    | HoldFailed
    | DtmfReceived
    | HoldRequested
    | DtmfRequested
    | CallStatsReported
    | CallArrived
    | RingingStarted
    | RingingStopped
    | AcceptRequested
    | CallClaimed
    | AnswerRequested
)
