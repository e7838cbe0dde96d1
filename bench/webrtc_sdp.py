"""The SDP of a lean browser peer: its audio-only offer, and what it needs from the answer.

The offer is what a browser that waited for ICE gathering would send, cut to
one audio section: ``UDP/TLS/RTP/SAVPF`` with one codec (PCMU or Opus),
``rtcp-mux``, ``setup:actpass``, its ICE credentials, the SHA-256 fingerprint
of its DTLS certificate, one host candidate and one SSRC. ``parse_answer``
reads back the few things the peer acts on: ICE credentials and candidates,
DTLS fingerprints and role, the codec and the SSRC of the audio to expect.
Pure functions, no I/O.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class AudioCodec:
    """One RTP audio codec as the offer names it."""

    name: str
    payload_type: int
    clock_rate: int
    channels: int = 1
    fmtp: str = ""
    samples_per_packet: int = 160
    "RTP timestamp step of one 20 ms packet."

    @property
    def rtpmap(self) -> str:
        suffix = f"/{self.channels}" if self.channels > 1 else ""
        return f"{self.name}/{self.clock_rate}{suffix}"


PCMU = AudioCodec("PCMU", 0, 8000, samples_per_packet=160)
OPUS = AudioCodec(
    "opus", 111, 48000, channels=2, fmtp="minptime=10;useinbandfec=1", samples_per_packet=960
)
CODECS = {"pcmu": PCMU, "opus": OPUS}


def codec_named(name: str) -> AudioCodec:
    """``PCMU`` or ``opus`` (any case)."""
    try:
        return CODECS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown codec {name!r}: PCMU or opus") from None


@dataclass(frozen=True, slots=True)
class Candidate:
    """One ``a=candidate`` line (RFC 8839 section 5.1), the fields ICE uses."""

    foundation: str
    component: int
    transport: str
    priority: int
    host: str
    port: int
    type: str

    @classmethod
    def parse(cls, value: str) -> Candidate:
        """``value``: the attribute value, after ``candidate:``."""
        bits = value.split()
        if len(bits) < 8 or bits[6] != "typ":
            raise ValueError(f"bad candidate {value!r}")
        return cls(
            foundation=bits[0],
            component=int(bits[1]),
            transport=bits[2].lower(),
            priority=int(bits[3]),
            host=bits[4],
            port=int(bits[5]),
            type=bits[7],
        )

    @property
    def is_ipv4(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).version == 4
        except ValueError:
            return False  # an mDNS name


@dataclass(frozen=True, slots=True)
class LocalDescription:
    """What goes into the offer: the peer's own parameters."""

    codec: AudioCodec
    host: str
    port: int
    ice_ufrag: str
    ice_pwd: str
    fingerprint: str
    "SHA-256 of the DTLS certificate, upper-case hex pairs joined by colons."
    ssrc: int
    cname: str
    session_id: int


def build_offer(local: LocalDescription) -> str:
    """The complete offer, CRLF line ends, candidates included (no trickle)."""
    codec = local.codec
    family = "IP6" if ":" in local.host else "IP4"
    lines = [
        "v=0",
        f"o=- {local.session_id} 2 IN {family} {local.host}",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        f"m=audio {local.port} UDP/TLS/RTP/SAVPF {codec.payload_type}",
        f"c=IN {family} {local.host}",
        f"a=candidate:1 1 udp 2130706431 {local.host} {local.port} typ host",
        "a=end-of-candidates",
        f"a=ice-ufrag:{local.ice_ufrag}",
        f"a=ice-pwd:{local.ice_pwd}",
        f"a=fingerprint:sha-256 {local.fingerprint}",
        "a=setup:actpass",
        "a=mid:0",
        "a=sendrecv",
        "a=rtcp-mux",
        f"a=rtpmap:{codec.payload_type} {codec.rtpmap}",
    ]
    if codec.fmtp:
        lines.append(f"a=fmtp:{codec.payload_type} {codec.fmtp}")
    lines.append(f"a=ssrc:{local.ssrc} cname:{local.cname}")
    return "\r\n".join(lines) + "\r\n"


@dataclass(slots=True)
class RemoteDescription:
    """What the peer needs from the answer."""

    ice_ufrag: str
    ice_pwd: str
    setup: str
    "``active`` (the remote is the DTLS client), ``passive`` or ``actpass``."
    fingerprints: list[tuple[str, str]]
    "(algorithm in lower case, upper-case hex) pairs."
    candidates: list[Candidate] = field(default_factory=list)
    payload_type: int | None = None
    codec_name: str = ""
    clock_rate: int = 0
    ssrc: int | None = None

    @property
    def dtls_role(self) -> str:
        """Our DTLS role: the opposite of the answer's ``a=setup``."""
        return "server" if self.setup == "active" else "client"


class AnswerError(ValueError):
    """The answer lacks what an audio peer needs."""


def parse_answer(sdp: str) -> RemoteDescription:
    """The first audio section of ``sdp``, with session-level defaults."""
    session: dict[str, list[str]] = {}
    media: dict[str, list[str]] | None = None
    formats: list[str] = []
    for raw in sdp.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            if media is not None:
                break  # only the first media section
            bits = line[2:].split()
            if not bits or bits[0] != "audio":
                raise AnswerError(f"the first media section is not audio: {line!r}")
            if len(bits) > 1 and bits[1] == "0":
                raise AnswerError("the audio section was rejected (port 0)")
            formats = bits[3:]
            media = {}
            continue
        if not line.startswith("a="):
            continue
        name, _, value = line[2:].partition(":")
        (session if media is None else media).setdefault(name, []).append(value)
    if media is None:
        raise AnswerError("the answer has no audio section")

    def one(name: str) -> str:
        values = media.get(name) or session.get(name)
        if not values:
            raise AnswerError(f"the answer has no a={name}")
        return values[0].strip()

    fingerprints = []
    for value in media.get("fingerprint") or session.get("fingerprint") or []:
        algorithm, _, digest = value.strip().partition(" ")
        fingerprints.append((algorithm.lower(), digest.strip().upper()))
    if not fingerprints:
        raise AnswerError("the answer has no a=fingerprint")
    candidates = []
    for value in media.get("candidate", []):
        try:
            candidates.append(Candidate.parse(value))
        except ValueError:
            continue
    remote = RemoteDescription(
        ice_ufrag=one("ice-ufrag"),
        ice_pwd=one("ice-pwd"),
        setup=one("setup").lower(),
        fingerprints=fingerprints,
        candidates=candidates,
    )
    if formats:
        remote.payload_type = int(formats[0])
        for value in media.get("rtpmap", []):
            pt, _, encoding = value.partition(" ")
            if pt.strip() == formats[0]:
                name, _, rest = encoding.partition("/")
                remote.codec_name = name
                remote.clock_rate = int(rest.partition("/")[0] or 0)
    for value in media.get("ssrc", []):
        remote.ssrc = int(value.split()[0])
        break
    return remote


def check_addresses(candidates: list[Candidate], limit: int = 4) -> list[tuple[str, int]]:
    """Where to send ICE checks: component 1 UDP IPv4, 127.0.0.1 first, then by priority.

    The bridge may add a PUBLIC_IP candidate (127.0.0.1 in tests) beside the
    addresses it really bound; checking a few in order finds the one that answers.
    """
    usable = [c for c in candidates if c.component == 1 and c.transport == "udp" and c.is_ipv4]
    usable.sort(key=lambda c: (not c.host.startswith("127."), -c.priority))
    seen: list[tuple[str, int]] = []
    for c in usable:
        if (c.host, c.port) not in seen:
            seen.append((c.host, c.port))
    return seen[:limit]
