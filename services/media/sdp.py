"""The trunk leg's SDP (RFC 4566, offer/answer per RFC 3264): pure functions.

We offer G.711 and telephone-event on one audio stream and read back what the
trunk chose. The browser leg's SDP is aiortc's business, not this module's.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from proto import errors
from services.common.digits import number
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
        suffix = f"/{self.channels}" if self.channels != 1 else ""
        return f"{self.name}/{self.clock_rate}{suffix}"


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

# RFC 3551 static payload types an answer may use without an rtpmap.
_STATIC = {0: ("PCMU", 8000), 8: ("PCMA", 8000), 9: ("G722", 8000)}


MAX_PAYLOAD_TYPE = 127
"RTP payload types are 7 bits (RFC 3550)."


class SdpError(ValueError):
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


def _addrtype(address: str) -> str:
    try:
        return "IP6" if ipaddress.ip_address(address).version == 6 else "IP4"
    except ValueError:
        return "IP4"  # a host name: RFC 4566 leaves the family to the name


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
    addrtype = _addrtype(address)
    formats = " ".join(str(c.payload_type) for c in codecs)
    lines = [
        "v=0",
        f"o=- {session_id} {session_id} IN {addrtype} {address}",
        "s=-",
        f"c=IN {addrtype} {address}",
        "t=0 0",
        f"m=audio {port} {'RTP/SAVP' if secure else 'RTP/AVP'} {formats} {dtmf_pt}",
        *(f"a=rtpmap:{c.payload_type} {c.rtpmap}" for c in codecs),
        *(f"a=fmtp:{c.payload_type} {OPUS_FMTP}" for c in codecs if c.name == OPUS.name),
        f"a=rtpmap:{dtmf_pt} telephone-event/8000",
        f"a=fmtp:{dtmf_pt} 0-16",
        f"a=ptime:{PTIME_MS}",
        "a=sendrecv",
        *(c.line for c in crypto),
    ]
    return "\r\n".join(lines) + "\r\n"


@dataclass(slots=True)
class _Media:
    kind: str
    port: int
    formats: list[int]
    address: str | None = None
    rtpmap: dict[int, tuple[str, int]] = field(default_factory=dict)
    profile: str = ""
    crypto: list[Crypto] = field(default_factory=list)


def _connection_address(value: str) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(f"malformed c= line: {value!r}")
    # Multicast addresses may carry /ttl; a trunk never uses them, keep the address.
    return parts[2].split("/", 1)[0]


def _media_line(value: str) -> _Media:
    parts = value.split()
    if len(parts) < 3:
        raise SdpError(f"malformed m= line: {value!r}")
    port = number(parts[1].split("/", 1)[0])
    numbers = [number(f) for f in parts[3:]] if parts[2].startswith("RTP/") else []
    formats = [pt for pt in numbers if pt is not None]
    if port is None or len(formats) != len(numbers):
        raise SdpError(f"malformed m= line: {value!r}")
    if not 0 <= port <= 65535:
        raise SdpError(f"port out of range in m= line: {value!r}")
    if any(pt > MAX_PAYLOAD_TYPE for pt in formats):
        raise SdpError(f"payload type out of range (0-127) in m= line: {value!r}")
    return _Media(kind=parts[0], port=port, formats=formats, profile=parts[2])


def _rtpmap(value: str) -> tuple[int, str, int]:
    # rtpmap:<pt> <name>/<rate>[/<channels>]
    try:
        pt_text, encoding = value[len("rtpmap:") :].split(None, 1)
        name, rate_text, *_ = encoding.strip().split("/")
    except ValueError:
        raise SdpError(f"malformed a={value!r}") from None
    pt, rate = number(pt_text), number(rate_text)
    if pt is None or rate is None or pt > MAX_PAYLOAD_TYPE:
        raise SdpError(f"malformed a={value!r}")
    return pt, name, rate


def _parse(sdp: str) -> tuple[str | None, list[_Media]]:
    session_address: str | None = None
    media: list[_Media] = []
    for raw in sdp.splitlines():
        line = raw.strip()
        if not line:
            continue
        if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
            raise SdpError(f"malformed SDP line: {line[:80]!r}")
        kind, value = line[0], line[2:]
        if kind == "m":
            media.append(_media_line(value))
        elif kind == "c":
            address = _connection_address(value)
            if media:
                media[-1].address = address
            else:
                session_address = address
        elif kind == "a" and media and value.startswith("rtpmap:"):
            pt, name, rate = _rtpmap(value)
            media[-1].rtpmap[pt] = (name, rate)
        elif kind == "a" and media and value.startswith("crypto:"):
            crypto = parse_crypto(value)
            if crypto is not None:
                media[-1].crypto.append(crypto)
    return session_address, media


def parse_answer(sdp: str, offered: tuple[Codec, ...] = DEFAULT_CODECS) -> TrunkMedia:
    """The trunk's choice from its answer: the first of its audio codecs that we offered."""
    if not sdp.strip():
        raise SdpError("empty SDP answer")
    session_address, media = _parse(sdp)
    audio = next((m for m in media if m.kind == "audio"), None)
    if audio is None:
        raise SdpError("no audio m= line in the answer")
    if audio.port == 0:
        raise SdpError("the trunk rejected the audio stream (port 0)")
    address = audio.address or session_address
    if address is None:
        raise SdpError("no c= line for the audio stream")
    rtpmap = audio.rtpmap
    chosen: Codec | None = None
    dtmf_pt: int | None = None
    for pt in audio.formats:
        name, rate = rtpmap.get(pt) or _STATIC.get(pt, ("", 0))
        if name.lower() == "telephone-event" and rate == 8000:
            dtmf_pt = pt if dtmf_pt is None else dtmf_pt
            continue
        if chosen is None:
            for codec in offered:
                if codec.name.lower() == name.lower() and codec.clock_rate == rate:
                    # Keep the answer's number: it is what the trunk will send.
                    chosen = Codec(codec.name, pt, rate, codec.channels)
                    break
    if chosen is None:
        raise NoCommonCodecError(f"no common codec in the answer (formats {audio.formats})")
    return TrunkMedia(
        address=address,
        port=audio.port,
        codec=chosen,
        dtmf_pt=dtmf_pt,
        crypto=tuple(audio.crypto),
        secure=audio.profile.upper().startswith("RTP/SAVP"),
    )


def first_codec(sdp: str) -> Codec | None:
    """The first audio format of an SDP (the one its sender sends), if it is one we know."""
    in_audio = False
    first_pt: int | None = None
    for raw in sdp.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            parts = line[2:].split()
            in_audio = parts[:1] == ["audio"]
            first_pt = number(parts[3]) if in_audio and len(parts) > 3 else None
            if first_pt is not None and first_pt in _STATIC:
                name, rate = _STATIC[first_pt]
                return Codec(name, first_pt, rate)
        elif in_audio and first_pt is not None and line.startswith(f"a=rtpmap:{first_pt} "):
            name, _, rest = line.split(None, 1)[1].partition("/")
            known = BY_NAME.get(name.upper())
            clock = number(rest.split("/", 1)[0])
            if known is None or clock != known.clock_rate:
                return None
            return Codec(known.name, first_pt, known.clock_rate, known.channels)
    return None


def first_codec_name(sdp: str) -> str:
    """The encoding name of the first audio format of an SDP, for logs (``?`` if none)."""
    in_audio = False
    first_pt: str | None = None
    for raw in sdp.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            parts = line[2:].split()
            in_audio = parts[:1] == ["audio"]
            first_pt = parts[3] if in_audio and len(parts) > 3 else None
        elif in_audio and first_pt is not None and line.startswith(f"a=rtpmap:{first_pt} "):
            return line.split(None, 1)[1].split("/", 1)[0]
    return "?"


def trunk_codecs(browser: Codec, names: tuple[str, ...]) -> tuple[Codec, ...]:
    """The trunk offer's codecs: SIP_CODECS in order, the browser's first when it is one of
    them, so the trunk can pick the codec that passes through."""
    codecs = [BY_NAME[name.upper()] for name in names if name.upper() in BY_NAME]
    same = [c for c in codecs if c.name.upper() == browser.name.upper()]
    return tuple(same + [c for c in codecs if c not in same]) or (BY_NAME["PCMU"],)
