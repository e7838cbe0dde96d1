"""Our side of the trunk's SDP offer/answer in a confirmed dialog (RFC 3264). Pure.

The first SDP is media's (``DialRequested.offer_sdp`` for a call out, its
answer to the trunk's INVITE for a call in); later offers and answers keep
its address, port, codecs and ``ptime`` and change only the direction and
the formats. ``LocalSdp`` holds the ``o=`` version, raised whenever what we
send differs from what we sent before (RFC 3264 section 8). Every SDP is read
by the shared model (``services.common.sdp``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from services.common import sdp
from services.common.sdp import DIRECTIONS, MediaDescription, SessionDescription
from services.common.sdp_codecs import RtpMap

__all__ = [
    "DIRECTIONS",
    "TELEPHONE_EVENT",
    "Audio",
    "LocalSdp",
    "SdpOfferError",
    "answer_direction",
    "has_telephone_event",
    "is_held",
    "narrowed",
]

TELEPHONE_EVENT = "TELEPHONE-EVENT/8000"


class SdpOfferError(ValueError):
    """An offer we cannot answer: the reason goes into the log, a 488 to the trunk."""


def _audio_of(text: str) -> tuple[SessionDescription, int]:
    """The SDP in ``text`` and the index of its audio section; ``SdpOfferError`` if none."""
    try:
        description = sdp.parse(text)
    except sdp.SdpError as exc:
        raise SdpOfferError(str(exc)) from None
    index = description.audio_index()
    if index is None:
        raise SdpOfferError("no audio stream")
    return description, index


def _encoding(media: MediaDescription, fmt: str) -> str:
    """``NAME/RATE`` in upper case of a format; empty when unknown."""
    pt = next((pt for pt in media.payload_types if str(pt) == fmt), None)
    rtpmap = media.rtpmap(pt) if pt is not None else None
    return rtpmap.key if rtpmap is not None else ""


@dataclass
class Audio:
    """A view of one SDP for tests and logs: its lines, audio stream and direction."""

    lines: list[str]
    "The SDP's lines, as the shared model writes them."
    audio: int
    "Index of the audio section's ``m=`` line."
    end: int
    "Index after the audio section."
    formats: list[str]
    encodings: dict[str, str] = field(default_factory=dict)
    "Payload type to ``NAME/RATE`` in upper case (empty when unknown)."
    direction: str = "sendrecv"
    connection: str = ""
    port: int = 0

    @classmethod
    def parse(cls, text: str) -> Audio:
        description, index = _audio_of(text)
        media = description.media[index]
        # The model's own lines: the session's, then each section's, so the audio
        # section's place is counted, not searched for.
        lines = replace(description, media=()).serialize().split("\r\n")[:-1]
        start = len(lines)
        for at, section in enumerate(description.media):
            if at == index:
                start = len(lines)
            lines += section.serialize_lines()
        end = start + len(media.serialize_lines())
        connection = description.connection_of(media)
        return cls(
            lines,
            start,
            end,
            list(media.formats),
            {fmt: _encoding(media, fmt) for fmt in media.formats},
            description.direction_of(media),
            connection.address if connection is not None else "",
            media.port,
        )

    @property
    def held(self) -> bool:
        """The sender puts the other side on hold (RFC 3264 8.4, and the old c=0.0.0.0)."""
        return self.direction in ("sendonly", "inactive") or self.connection in ("0.0.0.0", "::")


def is_held(text: str) -> bool:
    """Whether the trunk's SDP puts us on hold; False when it cannot be read."""
    try:
        description, index = _audio_of(text)
    except SdpOfferError:
        return False
    return description.holds(description.media[index])


def has_telephone_event(text: str) -> bool:
    """Whether the SDP offers or accepts RFC 4733 telephone-event."""
    try:
        description, index = _audio_of(text)
    except SdpOfferError:
        return False
    return description.media[index].telephone_event() is not None


def narrowed(offer_sdp: str, answer_sdp: str) -> str:
    """The trunk's ``offer_sdp`` with only the audio formats our ``answer_sdp`` kept.

    RFC 3264 6.1: media is sent with what the answer accepted, not all that was
    offered (telephone-event included only if we took it). Unchanged when the
    answer kept every format or either cannot be read.
    """
    try:
        offer, at = _audio_of(offer_sdp)
        answer, answered = _audio_of(answer_sdp)
    except SdpOfferError:
        return offer_sdp
    theirs = offer.media[at]
    kept = [fmt for fmt in theirs.formats if fmt in answer.media[answered].formats]
    if not kept or kept == list(theirs.formats):
        return offer_sdp
    return offer.with_media(at, theirs.with_formats(kept)).serialize()


def answer_direction(offered: str, local_hold: bool) -> str:
    """RFC 3264 6.1: the answer mirrors the offer; while we hold, we only send."""
    if offered == "sendrecv":
        return "sendonly" if local_hold else "sendrecv"
    if offered == "recvonly" and local_hold:
        return "sendonly"
    if offered == "sendonly" and local_hold:
        return "inactive"
    return sdp.answer_direction(offered)


class LocalSdp:
    """Our SDP toward the trunk across offers and answers, with its ``o=`` version."""

    def __init__(self, offer_sdp: str) -> None:
        self._base, self._audio = _audio_of(offer_sdp)
        origin = self._base.origin
        self._version = (origin.version_number if origin is not None else None) or 0
        self._last: SessionDescription | None = None

    @property
    def version(self) -> int:
        return self._version

    def offer(self, direction: str) -> str:
        """Our offer (re-INVITE, or the 200 to a re-INVITE without SDP)."""
        audio = replace(self._base.media[self._audio], direction=direction)
        return self._render(replace(self._base, direction=None).with_media(self._audio, audio))

    def answer(self, offer_sdp: str, *, local_hold: bool) -> str:
        """Our answer to the trunk's offer; ``SdpOfferError`` if nothing is in common."""
        offer, at = _audio_of(offer_sdp)
        theirs = offer.media[at]
        base = self._base.media[self._audio]
        ours = {_encoding(base, fmt) for fmt in base.formats} - {""}
        # The offerer's payload type numbers, in its order (RFC 3264 6.1).
        common = [
            fmt
            for fmt in theirs.formats
            if _encoding(theirs, fmt) in ours and _encoding(theirs, fmt) != TELEPHONE_EVENT
        ]
        if not common or theirs.port == 0:
            raise SdpOfferError("no codec in common")
        events = [fmt for fmt in theirs.formats if _encoding(theirs, fmt) == TELEPHONE_EVENT]
        kept = common + events[:1] if TELEPHONE_EVENT in ours else common
        audio = replace(
            base,
            formats=tuple(kept),
            rtpmaps=tuple(_answered_rtpmap(base, theirs, int(fmt)) for fmt in kept),
            fmtps=tuple(f for f in theirs.fmtps if f.format in kept),
            direction=answer_direction(offer.direction_of(theirs), local_hold),
        )
        # RFC 3264 6 and 8: as many m-lines as the offer, in its order; the rest refused.
        media = tuple(audio if i == at else m.rejected() for i, m in enumerate(offer.media))
        return self._render(replace(self._base, direction=None, media=media))

    def _render(self, description: SessionDescription) -> str:
        if description != self._last:
            self._version += 1
            self._last = description
        origin = description.origin
        if origin is not None:
            description = replace(description, origin=origin.with_version(self._version))
        return description.serialize()


def _answered_rtpmap(base: MediaDescription, theirs: MediaDescription, pt: int) -> RtpMap:
    """The offer's encoding of ``pt``, spelled as our SDP spells it (``telephone-event``)."""
    offered = theirs.rtpmap(pt)
    assert offered is not None  # only formats with a known encoding are answered
    spelled = next(
        (m.encoding for m in base.rtpmaps if m.key == offered.key),
        offered.encoding,
    )
    return RtpMap(pt, spelled, offered.clock_rate, offered.channels)
