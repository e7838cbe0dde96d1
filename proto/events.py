"""Call lifecycle events exchanged over NATS.

Every event is a frozen msgspec ``Struct`` tagged by its ``type`` field and
carries the ``call_id`` of the browser call session it belongs to. Names are
past tense: an event says what happened, the subject says who said it.
"""

from __future__ import annotations

import msgspec


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


# --- media → call subject ------------------------------------------------------


class MediaPrepared(Event, frozen=True, tag="media.prepared"):
    """A media worker took the call: WebRTC answered, trunk RTP port open."""

    media_id: str
    "Instance id of the media worker that owns the call's media."
    answer_sdp: str
    "The WebRTC SDP answer for the browser."
    trunk_offer_sdp: str
    "The SDP offer for the trunk (G.711 + telephone-event, PUBLIC_IP)."


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
    """The trunk answered with 2xx; the dialog is confirmed."""

    answer_sdp: str
    "The trunk's SDP answer."


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
)
