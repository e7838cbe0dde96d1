"""Text into the shared SDP model, hardened (limits and refusals: see ``services.common.sdp``)."""

from __future__ import annotations

from services.common.digits import number
from services.common.sdp_codecs import RtpMap
from services.common.sdp_model import (
    DIRECTIONS,
    MAX_PAYLOAD_TYPE,
    Attribute,
    Connection,
    CryptoLine,
    Fmtp,
    Line,
    MediaDescription,
    Origin,
    Rtcp,
    SessionDescription,
)

MAX_SDP_CHARS = 65536
"An SDP larger than this is refused (a SIP message is at most 64 KiB too)."
MAX_LINE_CHARS = 4096
MAX_LINES = 1024
MAX_MEDIA = 32
"Media sections (``m=`` lines) in one SDP."
MAX_FORMATS = 128
"Formats on one ``m=`` line (RTP has 128 payload types)."
_SESSION_ONLY = frozenset("vostrzuep")
_KNOWN = frozenset("vosiuepcbtrzkam")


class SdpError(ValueError):
    """The text is not an SDP we accept; the message says why (safe to log)."""


def _quote(text: str) -> str:
    return repr(text[:80] + ("…" if len(text) > 80 else ""))


def parse(text: str) -> SessionDescription:
    """The session description in ``text``; ``SdpError`` if it is not one we accept."""
    if len(text) > MAX_SDP_CHARS:
        raise SdpError(f"SDP too large ({len(text)} characters, at most {MAX_SDP_CHARS})")
    lines = [raw.removesuffix("\r").rstrip(" \t") for raw in text.split("\n")]
    lines = [line for line in lines if line]
    if len(lines) > MAX_LINES:
        raise SdpError(f"SDP has too many lines ({len(lines)}, at most {MAX_LINES})")
    if not lines or lines[0] != "v=0":
        raise SdpError("malformed SDP: it does not start with v=0")
    parser = _Parser()
    for line in lines[1:]:
        parser.line(line)
    return parser.result()


class _Parser:
    """Reads one SDP line at a time into the session and its media sections."""

    def __init__(self) -> None:
        self._session: dict[str, object] = {}
        self._session_lines: list[Line] = []
        self._timing: list[Line] = []
        self._session_attributes: list[Attribute] = []
        self._media: list[dict[str, object]] = []

    def line(self, line: str) -> None:
        if len(line) > MAX_LINE_CHARS:
            raise SdpError(f"SDP line too long ({len(line)} characters, at most {MAX_LINE_CHARS})")
        kind, value = line[0], line[2:]
        if len(line) < 2 or line[1] != "=" or kind not in _KNOWN:
            raise SdpError(f"malformed SDP line: {_quote(line)}")
        if not line.isprintable():
            if kind == "a":
                return  # dropped: see the module doc
            raise SdpError(f"control character in SDP line: {_quote(line)}")
        if kind == "m":
            self._media_line(value)
        elif self._media:
            self._in_media(kind, value, self._media[-1])
        else:
            self._in_session(kind, value)

    def _in_session(self, kind: str, value: str) -> None:
        session = self._session
        if kind == "o":
            if "origin" in session:
                raise SdpError("more than one o= line")
            session["origin"] = _origin(value)
        elif kind == "s":
            session["session_name"] = value
        elif kind == "c":
            session["connection"] = _connection(value)
        elif kind in "trz":
            self._timing.append((kind, value))
        elif kind == "v":
            raise SdpError("more than one v= line")
        elif kind == "a":
            if value in DIRECTIONS:
                session["direction"] = value
            else:
                self._session_attributes.append(_attribute(value))
        else:
            self._session_lines.append((kind, value))

    def _in_media(self, kind: str, value: str, media: dict[str, object]) -> None:
        if kind in _SESSION_ONLY:
            raise SdpError(f"{kind}= line inside a media section")
        if kind == "c":
            media["connection"] = _connection(value)
        elif kind == "a":
            _media_attribute(value, media)
        else:
            _append(media, "lines", (kind, value))

    def _media_line(self, value: str) -> None:
        if len(self._media) >= MAX_MEDIA:
            raise SdpError(f"SDP has too many media sections (at most {MAX_MEDIA})")
        parts = value.split()
        if len(parts) < 3 or (len(parts) < 4 and parts[1] != "0"):
            raise SdpError(f"malformed m= line: {_quote(value)}")
        port_text, _, count_text = parts[1].partition("/")
        port, count = number(port_text), number(count_text) if count_text else None
        if port is None or (count_text and not count):
            raise SdpError(f"malformed m= line: {_quote(value)}")
        if port > 65535:
            raise SdpError(f"port out of range in m= line: {_quote(value)}")
        formats = tuple(parts[3:])
        if len(formats) > MAX_FORMATS:
            raise SdpError(f"too many formats in m= line (at most {MAX_FORMATS})")
        is_rtp = "RTP/" in parts[2].upper()
        if is_rtp and any(f.isascii() and f.isdigit() and _pt(f) is None for f in formats):
            raise SdpError(f"payload type out of range (0-127) in m= line: {_quote(value)}")
        self._media.append(
            {
                "media": parts[0],
                "port": port,
                "port_count": count,
                "proto": parts[2],
                "formats": formats,
            }
        )

    def result(self) -> SessionDescription:
        media = []
        for fields in self._media:
            for key in ("rtpmaps", "fmtps", "crypto", "attributes", "lines"):
                if key in fields:
                    fields[key] = tuple(fields[key])  # type: ignore[arg-type]
            media.append(MediaDescription(**fields))  # type: ignore[arg-type]
        return SessionDescription(
            **self._session,  # type: ignore[arg-type]
            timing=tuple(self._timing),
            attributes=tuple(self._session_attributes),
            lines=tuple(self._session_lines),
            media=tuple(media),
        )


def _append(fields: dict[str, object], key: str, item: object) -> None:
    items = fields.setdefault(key, [])
    assert isinstance(items, list)
    items.append(item)


def _pt(text: str) -> int | None:
    pt = number(text) if len(text) <= 3 else None
    return pt if pt is not None and pt <= MAX_PAYLOAD_TYPE else None


def _origin(value: str) -> Origin:
    parts = value.split()
    if len(parts) != 6:
        raise SdpError(f"malformed o= line: {_quote(value)}")
    return Origin(*parts)


def _connection(value: str) -> Connection:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(f"malformed c= line: {_quote(value)}")
    address = parts[2].split("/", 1)[0]
    if not address:
        raise SdpError(f"malformed c= line: {_quote(value)}")
    return Connection(address, parts[1])


def _attribute(value: str) -> Attribute:
    name, colon, rest = value.partition(":")
    if not name:
        raise SdpError(f"malformed a= line: {_quote(value)}")
    return Attribute(name, rest if colon else None)


def _media_attribute(value: str, media: dict[str, object]) -> None:
    name, _, rest = value.partition(":")
    if value in DIRECTIONS:
        media["direction"] = value
    elif name == "rtpmap" and "RTP/" in str(media["proto"]).upper():
        rtpmap = _rtpmap(rest)
        if any(m.payload_type == rtpmap.payload_type for m in media.get("rtpmaps", ())):  # type: ignore[attr-defined]
            raise SdpError(f"more than one a=rtpmap for payload type {rtpmap.payload_type}")
        _append(media, "rtpmaps", rtpmap)
    elif name == "fmtp":
        fmt, _, parameters = rest.partition(" ")
        if not fmt:
            raise SdpError(f"malformed a=fmtp line: {_quote(value)}")
        _append(media, "fmtps", Fmtp(fmt, parameters.strip()))
    elif name == "ptime" and number(rest) is not None:
        media["ptime"] = number(rest)
    elif name == "crypto":
        _append(media, "crypto", _crypto(rest))
    elif name == "rtcp":
        media["rtcp"] = _rtcp(rest)
    else:
        _append(media, "attributes", _attribute(value))


def _rtpmap(value: str) -> RtpMap:
    # <pt> <encoding>/<clock rate>[/<channels>]
    pt_text, _, encoding = value.partition(" ")
    name, _, rest = encoding.strip().partition("/")
    rate_text, _, channels_text = rest.partition("/")
    pt, rate = _pt(pt_text), number(rate_text)
    channels = number(channels_text) if channels_text else None
    if pt is None or not name or not rate or (channels_text and not channels):
        raise SdpError(f"malformed a=rtpmap line: {_quote(value)}")
    return RtpMap(pt, name, rate, channels)


def _crypto(value: str) -> CryptoLine:
    # Never quote it: the key is in it.
    parts = value.split(None, 3)
    tag = number(parts[0]) if parts and len(parts[0]) <= 9 else None
    if tag is None or len(parts) < 3:
        raise SdpError("malformed a=crypto line")
    return CryptoLine(tag, parts[1], parts[2], parts[3] if len(parts) > 3 else "")


def _rtcp(value: str) -> Rtcp:
    port_text, _, address = value.partition(" ")
    port = number(port_text)
    if port is None or port > 65535:
        raise SdpError(f"malformed a=rtcp line: {_quote(value)}")
    return Rtcp(port, _connection(address) if address.strip() else None)
