"""SDP offer/answer for the demo peer, on the shared model: pure functions, no I/O.

The peer only echoes RTP, so it accepts one audio stream in G.711 (plus telephone-event) and
rejects everything else with port 0, as RFC 3264 asks.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.common import sdp
from services.common.sdp import (
    Connection,
    Fmtp,
    MediaDescription,
    Origin,
    SessionDescription,
)
from services.common.sdp_codecs import TELEPHONE_EVENT, RtpMap

_CODECS = ("PCMU", "PCMA")
_PROTOS = ("RTP/AVP", "RTP/AVPF")


@dataclass(frozen=True, slots=True)
class Negotiated:
    """What the answer to one offer says."""

    codec: str
    "PCMU or PCMA."
    payload_type: int
    "The offer's payload type for the codec."
    dtmf_payload_type: int | None
    "The offer's telephone-event payload type, if it offered one."
    proto: str
    "The transport protocol of the audio m-line, echoed in the answer."
    direction: str
    "Our direction attribute in the answer."
    offer: SessionDescription
    "The offer, so the answer keeps the number and order of its m-lines."
    audio_index: int
    "Which of them is the accepted audio stream."


def negotiate(body: bytes) -> Negotiated | None:
    """Pick the answer to an SDP offer, or None when nothing in it is acceptable."""
    try:
        offer = sdp.parse(body.decode("utf-8"))
    except (UnicodeDecodeError, sdp.SdpError):
        return None
    for index, media in enumerate(offer.media):
        if media.media != "audio" or media.proto not in _PROTOS or media.port == 0:
            continue  # not ours, or a stream the offerer already disabled
        return _negotiate_audio(offer, index)
    return None


def _negotiate_audio(offer: SessionDescription, index: int) -> Negotiated | None:
    media = offer.media[index]
    codec: tuple[str, int] | None = None
    # Honour the offerer's preference order (RFC 3264 section 6.1).
    for pt in media.payload_types:
        rtpmap = media.rtpmap(pt)
        if rtpmap is not None and rtpmap.clock_rate == 8000 and rtpmap.encoding.upper() in _CODECS:
            codec = (rtpmap.encoding.upper(), pt)
            break
    if codec is None:
        return None
    return Negotiated(
        codec=codec[0],
        payload_type=codec[1],
        dtmf_payload_type=media.telephone_event(),
        proto=media.proto,
        direction=sdp.answer_direction(offer.direction_of(media)),
        offer=offer,
        audio_index=index,
    )


def build_answer(
    negotiated: Negotiated, host: str, port: int, session_id: int, version: int
) -> bytes:
    """The SDP answer: our audio at host:port, other offered streams rejected."""
    pt, dtmf = negotiated.payload_type, negotiated.dtmf_payload_type
    rtpmaps = [RtpMap(pt, negotiated.codec, 8000)]
    fmtps: list[Fmtp] = []
    if dtmf is not None:
        rtpmaps.append(RtpMap(dtmf, TELEPHONE_EVENT, 8000))
        fmtps.append(Fmtp(str(dtmf), "0-16"))
    audio = MediaDescription(
        "audio",
        port,
        negotiated.proto,
        tuple(str(f) for f in (pt, dtmf) if f is not None),
        rtpmaps=tuple(rtpmaps),
        fmtps=tuple(fmtps),
        ptime=20,
        direction=negotiated.direction,
    )
    media = tuple(
        audio if index == negotiated.audio_index else offered.rejected()
        for index, offered in enumerate(negotiated.offer.media)
    )
    connection = Connection.of(host)
    origin = Origin("-", str(session_id), str(version), "IN", connection.addrtype, host)
    return SessionDescription(origin, connection=connection, media=media).serialize().encode()
