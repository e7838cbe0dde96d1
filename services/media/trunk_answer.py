"""Our answer to a trunk's SDP offer, for a call in (RFC 3264): pure functions.

``read_offer`` takes what we can use of the trunk's offer: its first audio
stream with a port, the codecs of it that we relay or convert (PCMU, PCMA,
G722, opus) in its order and with its numbers, telephone-event, its SDES
keys when SRTP is allowed for the trunk, and whether it holds. The browser's
answer then prefers those codecs (``TrunkOffer.names``), so ``choose_codec``
finds the browser's codec among them and the audio passes through
untouched; else the trunk's first codec is taken and converted.
``build_answer`` writes the answer: as many m-lines as the offer, in its
order, everything but that audio stream refused with port 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.common.sdp import (
    Connection,
    Fmtp,
    MediaDescription,
    Origin,
    SessionDescription,
    answer_direction,
)
from services.common.sdp_codecs import TELEPHONE_EVENT, RtpMap
from services.media import sdes
from services.media.sdp import (
    BY_NAME,
    OPUS,
    OPUS_FMTP,
    PTIME_MS,
    Codec,
    NoCommonCodecError,
    SdpError,
    TrunkMedia,
    parse_sdp,
)

_PROTOS = ("RTP/AVP", "RTP/AVPF", "RTP/SAVP", "RTP/SAVPF")


@dataclass(frozen=True, slots=True)
class TrunkOffer:
    """What we can use of a trunk's offer."""

    description: SessionDescription
    index: int
    "The audio section we answer."
    codecs: tuple[Codec, ...]
    "Its codecs we relay or convert, in its order and with its payload types."
    dtmf_pt: int | None
    "Its telephone-event/8000 payload type, if offered."
    crypto: tuple[sdes.Crypto, ...]
    "Its usable ``a=crypto`` keys, in its order, when SRTP is on for this call; else empty."
    address: str
    port: int
    held: bool
    "The offer is ``sendonly``/``inactive`` (or ``c=0.0.0.0``): the trunk holds the call."

    @property
    def names(self) -> tuple[str, ...]:
        """Its codec names, for the browser answer's preferences."""
        return tuple(codec.name for codec in self.codecs)

    @property
    def media(self) -> MediaDescription:
        return self.description.media[self.index]

    def trunk_media(self, codec: Codec) -> TrunkMedia:
        """Where and how to send to the trunk once we answer with ``codec``."""
        return TrunkMedia(
            self.address, self.port, codec, self.dtmf_pt, self.crypto, self.media.secure
        )


def read_offer(text: str, srtp: str) -> TrunkOffer:
    """The usable part of the trunk's offer; ``SdpError`` (``bad_sdp``) or
    ``NoCommonCodecError`` (``no_common_codec``) when we cannot answer it.

    ``srtp`` is the trunk's setting (``sdes.OFF``, ``OPTIONAL``, ``REQUIRED``).
    """
    if not text.strip():
        raise SdpError("the trunk's INVITE has no SDP offer")
    description = parse_sdp(text)
    index = description.audio_index()
    if index is None or description.media[index].port == 0:
        raise SdpError("the trunk's offer has no audio stream")
    media = description.media[index]
    if media.proto.upper() not in _PROTOS:
        raise SdpError(f"the trunk's audio transport {media.proto!r} is not RTP/AVP or RTP/SAVP")
    connection = description.connection_of(media)
    if connection is None:
        raise SdpError("no c= line for the trunk's audio stream")
    crypto = _keys(media, srtp)
    codecs: list[Codec] = []
    for pt in media.payload_types:
        rtpmap = media.rtpmap(pt)
        known = BY_NAME.get(rtpmap.encoding.upper()) if rtpmap is not None else None
        if rtpmap is not None and known is not None and rtpmap.clock_rate == known.clock_rate:
            codecs.append(Codec(known.name, pt, known.clock_rate, known.channels))
    if not codecs:
        raise NoCommonCodecError(
            f"the trunk offers none of PCMU, PCMA, G722, opus (formats {list(media.formats)})"
        )
    return TrunkOffer(
        description=description,
        index=index,
        codecs=tuple(codecs),
        dtmf_pt=media.telephone_event(),
        crypto=crypto,
        address=connection.address,
        port=media.port,
        held=description.holds(media),
    )


def _keys(media: MediaDescription, srtp: str) -> tuple[sdes.Crypto, ...]:
    """The offer's usable SDES keys if SRTP is used; ``SdpError`` if the offer and the
    trunk's setting cannot agree."""
    usable = tuple(
        crypto
        for line in media.crypto
        if (crypto := sdes.parse_crypto(f"crypto:{line.value}")) is not None
    )
    if media.secure and srtp == sdes.OFF:
        raise SdpError("the trunk offers SRTP only (RTP/SAVP) and SRTP is off for this trunk")
    if media.secure and not usable:
        raise SdpError("the trunk offers SRTP (RTP/SAVP) without an a=crypto we can use")
    if srtp == sdes.REQUIRED and not usable:
        raise SdpError("SRTP is required for this trunk and its offer has no usable a=crypto")
    return usable if srtp != sdes.OFF else ()


def choose_codec(offer: TrunkOffer, browser: Codec) -> Codec:
    """The browser's codec when the trunk offered it (the audio passes through), else the
    trunk's first codec (converted), with the trunk's payload type."""
    for codec in offer.codecs:
        if codec.name.upper() == browser.name.upper() and codec.clock_rate == browser.clock_rate:
            return codec
    return offer.codecs[0]


def build_answer(
    offer: TrunkOffer,
    codec: Codec,
    address: str,
    port: int,
    session_id: int,
    crypto: sdes.Crypto | None = None,
) -> str:
    """Our answer: ``codec`` (and telephone-event if offered) at ``address:port``, with our
    SDES key ``crypto`` if SRTP is used, every other m-line refused."""
    theirs = offer.media
    formats = [str(codec.payload_type)]
    rtpmaps = [codec.rtpmap_line]
    fmtps = [Fmtp(formats[0], OPUS_FMTP)] if codec.name == OPUS.name else []
    if offer.dtmf_pt is not None:
        dtmf = str(offer.dtmf_pt)
        formats.append(dtmf)
        rtpmaps.append(RtpMap(offer.dtmf_pt, TELEPHONE_EVENT, 8000))
        fmtps.append(Fmtp(dtmf, theirs.fmtp(dtmf) or "0-16"))
    audio = MediaDescription(
        "audio",
        port,
        theirs.proto,
        tuple(formats),
        rtpmaps=tuple(rtpmaps),
        fmtps=tuple(fmtps),
        ptime=PTIME_MS,
        direction=answer_direction(offer.description.direction_of(theirs)),
        crypto=(crypto.sdp_line,) if crypto is not None else (),
    )
    media = tuple(
        audio if i == offer.index else m.rejected() for i, m in enumerate(offer.description.media)
    )
    connection = Connection.of(address)
    origin = Origin("-", str(session_id), str(session_id), "IN", connection.addrtype, address)
    return SessionDescription(origin, connection=connection, media=media).serialize()
