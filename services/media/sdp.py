"""The trunk leg's SDP (offer/answer per RFC 3264) on the shared model: pure functions.

We offer our codecs and telephone-event on one audio stream and read back
what the trunk chose. The answer to a trunk's offer (inbound calls) is
``trunk_answer``'s. The browser leg's SDP is aiortc's business, not this
module's (we only read back the codec of our answer to it).
"""

from __future__ import annotations

from dataclasses import dataclass

from proto import errors
from services.common import sdp
from services.common.sdp import (
    Connection,
    Fmtp,
    MediaDescription,
    Origin,
    SessionDescription,
)
from services.common.sdp_codecs import TELEPHONE_EVENT, RtpMap
from services.media.sdes import Crypto, parse_crypto


@dataclass(frozen=True, slots=True)
class Codec:
    name: str
    "Encoding name as in ``a=rtpmap`` (``PCMU``, ``PCMA``)."
    payload_type: int
    clock_rate: int
    channels: int = 1
    "As in ``a=rtpmap``: Opus is always ``opus/48000/2`` (RFC 7587), even for mono."

    @property
    def rtpmap(self) -> str:
        return self.rtpmap_line.text

    @property
    def rtpmap_line(self) -> RtpMap:
        channels = self.channels if self.channels != 1 else None
        return RtpMap(self.payload_type, self.name, self.clock_rate, channels)


PCMU = Codec("PCMU", 0, 8000)
PCMA = Codec("PCMA", 8, 8000)
OPUS = Codec("opus", 111, 48000, 2)
G722 = Codec("G722", 9, 8000)
"16 kHz audio on an 8000 Hz RTP clock (RFC 3551 4.5.2)."
DEFAULT_CODECS = (PCMU, PCMA)
BY_NAME = {codec.name.upper(): codec for codec in (PCMU, PCMA, OPUS, G722)}
"Our codecs by upper-case encoding name (the names of SIP_CODECS)."
OPUS_FMTP = "minptime=10;useinbandfec=1"
TELEPHONE_EVENT_PT = 101
PTIME_MS = 20


class SdpError(sdp.SdpError):
    """The trunk's SDP cannot be used; ``code`` is a ``proto.errors`` code."""

    code = errors.BAD_SDP


class NoCommonCodecError(SdpError):
    """The answer kept none of the codecs we offered."""

    code = errors.NO_COMMON_CODEC


@dataclass(frozen=True, slots=True)
class TrunkMedia:
    """Where and how to send audio to the trunk, from its answer."""

    address: str
    port: int
    codec: Codec
    dtmf_pt: int | None
    "Payload type of telephone-event in the answer, if the trunk kept it."
    crypto: tuple[Crypto, ...] = ()
    "The answer's usable ``a=crypto`` attributes (SDES), in its order."
    secure: bool = False
    "The answer's transport is ``RTP/SAVP`` (or ``SAVPF``)."


def build_offer(
    address: str,
    port: int,
    session_id: int,
    codecs: tuple[Codec, ...] = DEFAULT_CODECS,
    dtmf_pt: int = TELEPHONE_EVENT_PT,
    crypto: tuple[Crypto, ...] = (),
    secure: bool = False,
) -> str:
    """An offer of ``codecs`` plus telephone-event, receiving at ``address:port``; with
    ``crypto`` lines (SDES), over ``RTP/SAVP`` when ``secure``."""
    connection = Connection.of(address)
    audio = MediaDescription(
        "audio",
        port,
        "RTP/SAVP" if secure else "RTP/AVP",
        (*(str(c.payload_type) for c in codecs), str(dtmf_pt)),
        rtpmaps=(*(c.rtpmap_line for c in codecs), RtpMap(dtmf_pt, TELEPHONE_EVENT, 8000)),
        fmtps=(
            *(Fmtp(str(c.payload_type), OPUS_FMTP) for c in codecs if c.name == OPUS.name),
            Fmtp(str(dtmf_pt), "0-16"),
        ),
        ptime=PTIME_MS,
        direction="sendrecv",
        crypto=tuple(c.sdp_line for c in crypto),
    )
    origin = Origin("-", str(session_id), str(session_id), "IN", connection.addrtype, address)
    return SessionDescription(origin, connection=connection, media=(audio,)).serialize()


def parse_sdp(text: str) -> SessionDescription:
    """``text`` read by the shared model; its ``SdpError`` becomes ours (``bad_sdp``)."""
    try:
        return sdp.parse(text)
    except sdp.SdpError as exc:
        raise SdpError(str(exc)) from None


def parse_answer(text: str, offered: tuple[Codec, ...] = DEFAULT_CODECS) -> TrunkMedia:
    """The trunk's choice from its answer: the first of its audio codecs that we offered.

    Also reads the trunk's offer of an inbound call once we answered it with one of
    its codecs (``offered`` then holds that one)."""
    if not text.strip():
        raise SdpError("empty SDP answer")
    description = parse_sdp(text)
    index = description.audio_index()
    if index is None:
        raise SdpError("no audio m= line in the answer")
    audio = description.media[index]
    if audio.port == 0:
        raise SdpError("the trunk rejected the audio stream (port 0)")
    connection = description.connection_of(audio)
    if connection is None:
        raise SdpError("no c= line for the audio stream")
    chosen: Codec | None = None
    for pt in audio.payload_types:
        rtpmap = audio.rtpmap(pt)
        if rtpmap is None or rtpmap.encoding.lower() == TELEPHONE_EVENT:
            continue
        codec = next((c for c in offered if c.rtpmap_line.key == rtpmap.key), None)
        if codec is not None:
            # Keep the answer's number: it is what the trunk will send.
            chosen = Codec(codec.name, pt, codec.clock_rate, codec.channels)
            break
    if chosen is None:
        raise NoCommonCodecError(f"no common codec in the answer (formats {list(audio.formats)})")
    crypto = (parse_crypto(f"crypto:{line.value}") for line in audio.crypto)
    return TrunkMedia(
        address=connection.address,
        port=audio.port,
        codec=chosen,
        dtmf_pt=audio.telephone_event(),
        crypto=tuple(c for c in crypto if c is not None),
        secure=audio.secure,
    )


def _first_rtpmap(text: str) -> RtpMap | None:
    """The first format of an SDP's audio section (the one its sender sends)."""
    try:
        description = sdp.parse(text)
    except sdp.SdpError:
        return None
    index = description.audio_index()
    if index is None:
        return None
    pts = description.media[index].payload_types
    return description.media[index].rtpmap(pts[0]) if pts else None


def first_codec(text: str) -> Codec | None:
    """The first audio format of an SDP (the one its sender sends), if it is one we know."""
    rtpmap = _first_rtpmap(text)
    known = BY_NAME.get(rtpmap.encoding.upper()) if rtpmap is not None else None
    if rtpmap is None or known is None or rtpmap.clock_rate != known.clock_rate:
        return None
    return Codec(known.name, rtpmap.payload_type, known.clock_rate, known.channels)


def first_codec_name(text: str) -> str:
    """The encoding name of the first audio format of an SDP, for logs (``?`` if none)."""
    rtpmap = _first_rtpmap(text)
    return rtpmap.encoding if rtpmap is not None else "?"


def trunk_codecs(browser: Codec, names: tuple[str, ...]) -> tuple[Codec, ...]:
    """The trunk offer's codecs: SIP_CODECS in order, the browser's first when it is one of
    them, so the trunk can pick the codec that passes through."""
    codecs = [BY_NAME[name.upper()] for name in names if name.upper() in BY_NAME]
    same = [c for c in codecs if c.name.upper() == browser.name.upper()]
    return tuple(same + [c for c in codecs if c not in same]) or (BY_NAME["PCMU"],)
