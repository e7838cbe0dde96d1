"""Our side of the trunk's SDP offer/answer in a confirmed dialog (RFC 3264). Pure.

The first offer is media's (``DialRequested.offer_sdp``); later offers and
answers keep its address, port, codecs and ``ptime`` and change only the
direction and the formats. ``LocalSdp`` holds the ``o=`` version, raised
whenever what we send differs from what we sent before (RFC 3264 section 8).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.common.digits import number

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
_MIRROR = {"sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}
# RFC 3551 static payload types a trunk may use without an rtpmap.
_STATIC = {"0": "PCMU/8000", "8": "PCMA/8000"}
TELEPHONE_EVENT = "TELEPHONE-EVENT/8000"


class SdpOfferError(ValueError):
    """An offer we cannot answer: the reason goes into the log, a 488 to the trunk."""


@dataclass
class Audio:
    """What the offer/answer needs of one SDP: its audio stream and direction."""

    lines: list[str]
    audio: int
    "Index of the ``m=audio`` line."
    end: int
    "Index after the audio section."
    formats: list[str]
    encodings: dict[str, str] = field(default_factory=dict)
    "Payload type to ``NAME/RATE`` in upper case."
    direction: str = "sendrecv"
    connection: str = ""
    port: int = 0

    @classmethod
    def parse(cls, sdp: str) -> Audio:
        lines = [line for line in sdp.replace("\r\n", "\n").split("\n") if line]
        audio = next((i for i, line in enumerate(lines) if line.startswith("m=audio ")), None)
        if audio is None:
            raise SdpOfferError("no audio stream")
        end = next((i for i in range(audio + 1, len(lines)) if lines[i].startswith("m=")), None)
        end = len(lines) if end is None else end
        fields = lines[audio].split()
        port = number(fields[1].split("/")[0]) if len(fields) >= 4 else None
        if port is None:
            raise SdpOfferError(f"malformed {lines[audio]!r}")
        parsed = cls(lines, audio, end, fields[3:], port=port)
        session_direction = "sendrecv"
        for i, line in enumerate(lines):
            in_audio = audio < i < end
            if i >= end and not in_audio:
                break
            if line[2:] in DIRECTIONS and line.startswith("a="):
                if in_audio:
                    parsed.direction = line[2:]
                elif i < audio:
                    session_direction = line[2:]
                    parsed.direction = session_direction
            elif line.startswith("c=") and (in_audio or (i < audio and not parsed.connection)):
                parts = line[2:].split()
                parsed.connection = parts[2].split("/")[0] if len(parts) >= 3 else ""
            elif line.startswith("a=rtpmap:") and in_audio:
                pt, _, encoding = line[len("a=rtpmap:") :].partition(" ")
                parsed.encodings[pt] = _encoding(encoding)
        for pt in parsed.formats:
            parsed.encodings.setdefault(pt, _STATIC.get(pt, ""))
        return parsed

    @property
    def held(self) -> bool:
        """The sender puts the other side on hold (RFC 3264 8.4, and the old c=0.0.0.0)."""
        return self.direction in ("sendonly", "inactive") or self.connection in (
            "0.0.0.0",
            "::",
        )

    def attribute(self, name: str, pt: str) -> str | None:
        prefix = f"a={name}:{pt} "
        return next(
            (ln for ln in self.lines[self.audio + 1 : self.end] if ln.startswith(prefix)), None
        )


def _encoding(value: str) -> str:
    name, _, rest = value.strip().partition("/")
    rate = rest.split("/", 1)[0] or "8000"
    return f"{name.upper()}/{rate}"


def is_held(sdp: str) -> bool:
    """Whether the trunk's ``sdp`` puts us on hold; False when it cannot be read."""
    try:
        return Audio.parse(sdp).held
    except SdpOfferError:
        return False


def has_telephone_event(sdp: str) -> bool:
    """Whether ``sdp`` offers or accepts RFC 4733 telephone-event."""
    try:
        audio = Audio.parse(sdp)
    except SdpOfferError:
        return False
    return TELEPHONE_EVENT in audio.encodings.values()


def narrowed(offer_sdp: str, answer_sdp: str) -> str:
    """The trunk's ``offer_sdp`` with only the audio formats our ``answer_sdp`` kept.

    RFC 3264 6.1: media is sent with what the answer accepted, not all that was
    offered (telephone-event included only if we took it). Unchanged when the
    answer kept every format or either cannot be read.
    """
    try:
        offer, answer = Audio.parse(offer_sdp), Audio.parse(answer_sdp)
    except SdpOfferError:
        return offer_sdp
    kept = [pt for pt in offer.formats if pt in answer.formats]
    if not kept or kept == offer.formats:
        return offer_sdp
    dropped = set(offer.formats) - set(kept)
    newline = "\r\n" if "\r\n" in offer_sdp else "\n"
    lines: list[str] = []
    for i, line in enumerate(offer.lines):
        if i == offer.audio:
            line = " ".join([*line.split()[:3], *kept])
        elif offer.audio < i < offer.end and _attribute_of(line) in dropped:
            continue
        lines.append(line)
    return newline.join(lines) + newline


def _attribute_of(line: str) -> str | None:
    """The payload type an ``a=rtpmap``/``a=fmtp`` line is about; None for other lines."""
    if not line.startswith(("a=rtpmap:", "a=fmtp:")):
        return None
    return line.split(":", 1)[1].split(" ", 1)[0]


def answer_direction(offered: str, local_hold: bool) -> str:
    """RFC 3264 6.1: the answer mirrors the offer; while we hold, we only send."""
    if offered == "sendrecv":
        return "sendonly" if local_hold else "sendrecv"
    if offered == "recvonly" and local_hold:
        return "sendonly"
    if offered == "sendonly" and local_hold:
        return "inactive"
    return _MIRROR.get(offered, "sendrecv")


class LocalSdp:
    """Our SDP toward the trunk across offers and answers, with its ``o=`` version."""

    def __init__(self, offer_sdp: str) -> None:
        self._base = Audio.parse(offer_sdp)
        self._newline = "\r\n"
        origin = self._origin_fields()
        self._version = (number(origin[2]) if len(origin) > 2 else None) or 0
        self._last: list[str] | None = None

    @property
    def version(self) -> int:
        return self._version

    def offer(self, direction: str) -> str:
        """Our offer (re-INVITE, or the 200 to a re-INVITE without SDP)."""
        return self._render(self._lines(self._base.formats, direction))

    def answer(self, offer_sdp: str, *, local_hold: bool) -> str:
        """Our answer to the trunk's offer; ``SdpOfferError`` if nothing is in common."""
        offer = Audio.parse(offer_sdp)
        ours = {self._base.encodings[pt] for pt in self._base.formats}
        # The offerer's payload type numbers, in its order (RFC 3264 6.1).
        common = [
            pt
            for pt in offer.formats
            if offer.encodings.get(pt) in ours and offer.encodings.get(pt) != TELEPHONE_EVENT
        ]
        if not common or offer.port == 0:
            raise SdpOfferError("no codec in common")
        events = [pt for pt in offer.formats if offer.encodings.get(pt) == TELEPHONE_EVENT]
        kept = common + events[:1] if TELEPHONE_EVENT in ours else common
        direction = answer_direction(offer.direction, local_hold)
        return self._render(_with_rejected(self._lines(kept, direction, offer), offer))

    # --- rendering ---------------------------------------------------------------

    def _origin_fields(self) -> list[str]:
        origin = next((line for line in self._base.lines if line.startswith("o=")), "o=")
        return origin[2:].split()

    def _lines(self, formats: list[str], direction: str, offer: Audio | None = None) -> list[str]:
        """Our SDP with ``formats`` on the audio line (rtpmap/fmtp of ``offer`` if given)."""
        base = self._base
        out: list[str] = []
        for i, line in enumerate(base.lines):
            in_audio = base.audio < i < base.end
            if i == base.audio:
                fields = line.split()
                out.append(" ".join([*fields[:3], *formats]))
                for pt in formats:
                    out.extend(_format_attributes(base, pt, offer))
            elif in_audio and line.startswith(("a=rtpmap:", "a=fmtp:")):
                pass
            elif not (line.startswith("a=") and line[2:] in DIRECTIONS):
                out.append(line)
            if i == base.end - 1:
                out.append(f"a={direction}")
        return out

    def _render(self, lines: list[str]) -> str:
        if lines != self._last:
            self._version += 1
            self._last = lines
        fields = self._origin_fields()
        rendered = []
        for line in lines:
            if line.startswith("o=") and len(fields) >= 6:
                fields[2] = str(self._version)
                line = "o=" + " ".join(fields)
            rendered.append(line)
        return self._newline.join(rendered) + self._newline


def _with_rejected(lines: list[str], offer: Audio) -> list[str]:
    """Our audio answer among the offer's other streams, each refused with port 0.

    RFC 3264 6 and 8: the answer has as many m-lines as the offer, in its order.
    """
    audio = next(i for i, line in enumerate(lines) if line.startswith("m="))
    end = next((i for i in range(audio + 1, len(lines)) if lines[i].startswith("m=")), len(lines))
    before: list[str] = []
    after: list[str] = []
    for i, line in enumerate(offer.lines):
        if line.startswith("m=") and i != offer.audio:
            fields = line[2:].split()
            media = fields[0] if fields else "application"
            proto = fields[2] if len(fields) > 2 else "RTP/AVP"
            first = fields[3] if len(fields) > 3 else "0"
            (before if i < offer.audio else after).append(f"m={media} 0 {proto} {first}")
    # Our own streams after the audio one, if media offered any, are not in this answer.
    return [*lines[:audio], *before, *lines[audio:end], *after]


def _format_attributes(base: Audio, pt: str, offer: Audio | None) -> list[str]:
    """The ``a=rtpmap``/``a=fmtp`` lines of ``pt``: ours, or in an answer the offer's numbering."""
    if offer is None:
        return [
            line
            for line in base.lines[base.audio + 1 : base.end]
            if line.startswith((f"a=rtpmap:{pt} ", f"a=fmtp:{pt} "))
        ]
    name, _, rate = offer.encodings.get(pt, "").partition("/")
    lines = [f"a=rtpmap:{pt} {_spelled(base, name)}/{rate}"]
    fmtp = offer.attribute("fmtp", pt)
    if fmtp is not None and fmtp.isprintable():
        # A control character (a bare CR) would make our answer invalid SDP.
        lines.append(fmtp)
    return lines


def _spelled(base: Audio, name: str) -> str:
    """The encoding name as our offer spells it (``telephone-event``, ``PCMU``)."""
    for pt, encoding in base.encodings.items():
        if encoding.split("/")[0] == name:
            line = base.attribute("rtpmap", pt)
            if line is not None:
                return line.split(" ", 1)[1].split("/")[0]
    return name
