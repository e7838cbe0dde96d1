"""The records of the shared SDP model (RFC 8866): a session, its media sections, their lines.

Frozen: change them with ``dataclasses.replace`` and the helpers here
(``with_formats``, ``rejected``, ``with_media``). ``sdp_parse`` makes them
from text; ``SessionDescription.serialize`` writes them back (CRLF).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from services.common.digits import number
from services.common.sdp_codecs import TELEPHONE_EVENT, RtpMap, static_rtpmap

MAX_PAYLOAD_TYPE = 127
"RTP payload types are 7 bits (RFC 3550)."
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
_MIRROR = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly"}
_UNSPECIFIED = ("0.0.0.0", "::")

Line = tuple[str, str]
"An SDP line kept as it came: (type letter, value)."


@dataclass(frozen=True, slots=True)
class Origin:
    """The ``o=`` line."""

    username: str
    session_id: str
    version: str
    "As written: a number in any SDP we make, but kept as text when a peer's is not."
    nettype: str
    addrtype: str
    address: str

    @property
    def version_number(self) -> int | None:
        return number(self.version)

    def with_version(self, version: int) -> Origin:
        return replace(self, version=str(version))

    def __str__(self) -> str:
        fields = (self.username, self.session_id, self.version)
        return " ".join((*fields, self.nettype, self.addrtype, self.address))


@dataclass(frozen=True, slots=True)
class Connection:
    """A ``c=`` line: ``IN IP4|IP6 address`` (a multicast ``/ttl`` suffix is not kept)."""

    address: str
    addrtype: str = "IP4"

    @classmethod
    def of(cls, address: str) -> Connection:
        """The connection for an address, its family from its form (a name is IP4)."""
        return cls(address, "IP6" if ":" in address else "IP4")

    @property
    def unspecified(self) -> bool:
        """``0.0.0.0`` or ``::``: the old way to put a peer on hold (RFC 2543)."""
        return self.address in _UNSPECIFIED

    def __str__(self) -> str:
        return f"IN {self.addrtype} {self.address}"


@dataclass(frozen=True, slots=True)
class Fmtp:
    """An ``a=fmtp`` line: the format (a payload type for RTP) and its parameters."""

    format: str
    parameters: str


@dataclass(frozen=True, slots=True)
class Rtcp:
    """An ``a=rtcp`` line (RFC 3605)."""

    port: int
    connection: Connection | None = None

    def __str__(self) -> str:
        return f"{self.port}" if self.connection is None else f"{self.port} {self.connection}"


@dataclass(frozen=True, slots=True)
class CryptoLine:
    """An ``a=crypto`` line (SDES, RFC 4568), read for its shape only; the key is hidden
    from ``repr``."""

    tag: int
    suite: str
    key_params: str = field(repr=False)
    session_params: str = ""

    @property
    def value(self) -> str:
        tail = f" {self.session_params}" if self.session_params else ""
        return f"{self.tag} {self.suite} {self.key_params}{tail}"


@dataclass(frozen=True, slots=True)
class Attribute:
    """Any other ``a=`` line: ``a=name`` or ``a=name:value``."""

    name: str
    value: str | None = None

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


@dataclass(frozen=True, slots=True)
class MediaDescription:
    """One media section: its ``m=`` line and what follows it."""

    media: str
    "``audio``, ``video``, ``application``..."
    port: int
    proto: str
    "``RTP/AVP``, ``RTP/SAVP``, ``UDP/TLS/RTP/SAVPF``..."
    formats: tuple[str, ...]
    "As on the ``m=`` line, in its order (payload type numbers for RTP)."
    port_count: int | None = None
    connection: Connection | None = None
    "The section's own ``c=``; ``SessionDescription.connection_of`` falls back to the session's."
    direction: str | None = None
    "The section's own direction attribute, if any."
    rtpmaps: tuple[RtpMap, ...] = ()
    fmtps: tuple[Fmtp, ...] = ()
    ptime: int | None = None
    crypto: tuple[CryptoLine, ...] = ()
    rtcp: Rtcp | None = None
    attributes: tuple[Attribute, ...] = ()
    "Every other ``a=`` line, in order."
    lines: tuple[Line, ...] = ()
    "Its ``i=``, ``b=`` and ``k=`` lines, in order."

    @property
    def is_rtp(self) -> bool:
        return "RTP/" in self.proto.upper()

    @property
    def secure(self) -> bool:
        """``RTP/SAVP`` or ``RTP/SAVPF`` (SRTP keyed in the SDP, not DTLS)."""
        return self.proto.upper() in ("RTP/SAVP", "RTP/SAVPF")

    @property
    def payload_types(self) -> tuple[int, ...]:
        """The formats that are payload types (RTP sections), in order."""
        if not self.is_rtp:
            return ()
        return tuple(pt for fmt in self.formats if (pt := number(fmt)) is not None)

    def rtpmap(self, pt: int) -> RtpMap | None:
        """The encoding of payload type ``pt``: its ``a=rtpmap``, else the RFC 3551 static one."""
        found = next((m for m in self.rtpmaps if m.payload_type == pt), None)
        return found if found is not None else static_rtpmap(pt)

    def fmtp(self, fmt: int | str) -> str | None:
        key = str(fmt)
        return next((f.parameters for f in self.fmtps if f.format == key), None)

    def find(self, encoding: str, clock_rate: int | None = None) -> int | None:
        """The first payload type (in the ``m=`` order) of ``encoding`` (any case)."""
        wanted = encoding.upper()
        for pt in self.payload_types:
            rtpmap = self.rtpmap(pt)
            if rtpmap is None or rtpmap.encoding.upper() != wanted:
                continue
            if clock_rate is None or rtpmap.clock_rate == clock_rate:
                return pt
        return None

    def telephone_event(self, clock_rate: int = 8000) -> int | None:
        """The payload type of RFC 4733 telephone-event at ``clock_rate``, if offered."""
        return self.find(TELEPHONE_EVENT, clock_rate)

    def with_formats(self, formats: tuple[str, ...] | list[str]) -> MediaDescription:
        """This section offering only ``formats``; the ``rtpmap``/``fmtp`` of the others go."""
        kept = tuple(formats)
        return replace(
            self,
            formats=kept,
            rtpmaps=tuple(m for m in self.rtpmaps if str(m.payload_type) in kept),
            fmtps=tuple(f for f in self.fmtps if f.format in kept),
        )

    def rejected(self) -> MediaDescription:
        """This section refused in an answer: port 0, its first format, nothing else
        (RFC 3264 section 6)."""
        return MediaDescription(self.media, 0, self.proto, self.formats[:1] or ("0",))

    def serialize_lines(self) -> list[str]:
        count = f"/{self.port_count}" if self.port_count is not None else ""
        out = [" ".join((f"m={self.media} {self.port}{count} {self.proto}", *self.formats))]
        out += [f"{kind}={value}" for kind, value in self.lines if kind == "i"]
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out += [f"{kind}={value}" for kind, value in self.lines if kind != "i"]
        listed = [m for fmt in self.formats for m in self.rtpmaps if str(m.payload_type) == fmt]
        for rtpmap in (*listed, *(m for m in self.rtpmaps if m not in listed)):
            out.append(f"a=rtpmap:{rtpmap.payload_type} {rtpmap.text}")
            out += [
                f"a=fmtp:{f.format} {f.parameters}"
                for f in self.fmtps
                if f.format == str(rtpmap.payload_type)
            ]
        mapped = {str(m.payload_type) for m in self.rtpmaps}
        out += [f"a=fmtp:{f.format} {f.parameters}" for f in self.fmtps if f.format not in mapped]
        if self.ptime is not None:
            out.append(f"a=ptime:{self.ptime}")
        if self.direction is not None:
            out.append(f"a={self.direction}")
        if self.rtcp is not None:
            out.append(f"a=rtcp:{self.rtcp}")
        out += [f"a=crypto:{c.value}" for c in self.crypto]
        out += [f"a={a}" for a in self.attributes]
        return out


@dataclass(frozen=True, slots=True)
class SessionDescription:
    """A whole SDP."""

    origin: Origin | None = None
    session_name: str = "-"
    connection: Connection | None = None
    timing: tuple[Line, ...] = (("t", "0 0"),)
    "Its ``t=``, ``r=`` and ``z=`` lines, in order."
    direction: str | None = None
    "The session-level direction attribute, if any."
    attributes: tuple[Attribute, ...] = ()
    lines: tuple[Line, ...] = ()
    "Its ``i=``, ``u=``, ``e=``, ``p=``, ``b=`` and ``k=`` lines, in order."
    media: tuple[MediaDescription, ...] = ()

    # -- reading -----------------------------------------------------------------------

    def connection_of(self, media: MediaDescription) -> Connection | None:
        """Where ``media`` is received: its own ``c=``, else the session's."""
        return media.connection or self.connection

    def direction_of(self, media: MediaDescription) -> str:
        """The direction of ``media``: its own attribute, the session's, else sendrecv."""
        return media.direction or self.direction or "sendrecv"

    def holds(self, media: MediaDescription) -> bool:
        """Whether the sender of this SDP puts the other side on hold on ``media``
        (RFC 3264 8.4: ``sendonly`` or ``inactive``; RFC 2543: ``c=0.0.0.0``)."""
        connection = self.connection_of(media)
        held_address = connection is not None and connection.unspecified
        return self.direction_of(media) in ("sendonly", "inactive") or held_address

    def audio_index(self) -> int | None:
        """The audio section that carries the call: the first ``m=audio`` with a port,
        else the first ``m=audio``; None without one."""
        audio = [i for i, m in enumerate(self.media) if m.media == "audio"]
        return next((i for i in audio if self.media[i].port != 0), audio[0] if audio else None)

    # -- building ----------------------------------------------------------------------

    def with_media(self, index: int, media: MediaDescription) -> SessionDescription:
        return replace(self, media=(*self.media[:index], media, *self.media[index + 1 :]))

    def serialize(self) -> str:
        """The SDP text, CRLF line ends."""
        out = ["v=0"]
        if self.origin is not None:
            out.append(f"o={self.origin}")
        out.append(f"s={self.session_name}")
        out += [f"{kind}={value}" for kind, value in self.lines if kind in "iuep"]
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out += [f"b={value}" for kind, value in self.lines if kind == "b"]
        out += [f"{kind}={value}" for kind, value in self.timing]
        out += [f"k={value}" for kind, value in self.lines if kind == "k"]
        if self.direction is not None:
            out.append(f"a={self.direction}")
        out += [f"a={a}" for a in self.attributes]
        for media in self.media:
            out += media.serialize_lines()
        return "\r\n".join(out) + "\r\n"

    def __str__(self) -> str:
        return self.serialize()


def answer_direction(offered: str) -> str:
    """The direction that mirrors an offer's (RFC 3264 6.1)."""
    return _MIRROR.get(offered, "inactive")
