"""SDP offer/answer for the demo peer: pure functions, no I/O.

The peer only echoes RTP, so it accepts one audio stream in G.711 (plus telephone-event) and
rejects everything else with port 0, as RFC 3264 asks.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.common.digits import is_number

# Static payload types (RFC 3551) we can answer even when the offer has no rtpmap for them.
_STATIC = {0: ("PCMU", 8000), 8: ("PCMA", 8000)}
_CODECS = ("PCMU", "PCMA")
_PROTOS = ("RTP/AVP", "RTP/AVPF")
_ANSWER_DIRECTION = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}


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
    m_lines: tuple[str, ...]
    "Every m-line of the offer, so the answer keeps their number and order."
    audio_index: int
    "Which of them is the accepted audio stream."


def _rtpmap(value: str) -> tuple[int, str, int] | None:
    # "0 PCMU/8000" or "101 telephone-event/8000/1"
    try:
        pt_text, encoding = value.split(None, 1)
        parts = encoding.strip().split("/")
        return int(pt_text), parts[0], int(parts[1])
    except (ValueError, IndexError):
        return None


def negotiate(body: bytes) -> Negotiated | None:
    """Pick the answer to an SDP offer, or None when nothing in it is acceptable."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    m_lines: list[str] = []
    # Attributes per section: index -1 is the session level.
    attributes: dict[int, list[str]] = {-1: []}
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            m_lines.append(line)
            attributes[len(m_lines) - 1] = []
        elif line.startswith("a="):
            attributes[len(m_lines) - 1].append(line[2:])

    for index, m_line in enumerate(m_lines):
        fields = m_line[2:].split()
        if len(fields) < 4 or fields[0] != "audio" or fields[2] not in _PROTOS:
            continue
        if fields[1].split("/")[0] == "0":
            continue  # a stream the offerer already disabled
        return _negotiate_audio(fields, attributes, index, tuple(m_lines))
    return None


def _negotiate_audio(
    fields: list[str], attributes: dict[int, list[str]], index: int, m_lines: tuple[str, ...]
) -> Negotiated | None:
    rtpmaps: dict[int, tuple[str, int]] = {}
    direction = "sendrecv"
    for scope in (-1, index):  # media-level attributes override session-level ones
        for attribute in attributes[scope]:
            if attribute.startswith("rtpmap:"):
                parsed = _rtpmap(attribute[len("rtpmap:") :])
                if parsed is not None:
                    rtpmaps[parsed[0]] = (parsed[1], parsed[2])
            elif attribute in _ANSWER_DIRECTION:
                direction = attribute

    codec: tuple[str, int] | None = None
    dtmf: int | None = None
    for fmt in fields[3:]:
        if not is_number(fmt):
            continue
        pt = int(fmt)
        name, rate = rtpmaps.get(pt, _STATIC.get(pt, ("", 0)))
        # Honour the offerer's preference order (RFC 3264 section 6.1).
        if codec is None and rate == 8000 and name.upper() in _CODECS:
            codec = (name.upper(), pt)
        elif dtmf is None and rate == 8000 and name.lower() == "telephone-event":
            dtmf = pt
    if codec is None:
        return None
    return Negotiated(
        codec=codec[0],
        payload_type=codec[1],
        dtmf_payload_type=dtmf,
        proto=fields[2],
        direction=_ANSWER_DIRECTION[direction],
        m_lines=m_lines,
        audio_index=index,
    )


def build_answer(
    negotiated: Negotiated, host: str, port: int, session_id: int, version: int
) -> bytes:
    """The SDP answer: our audio at host:port, other offered streams rejected."""
    family = "IP6" if ":" in host else "IP4"
    lines = [
        "v=0",
        f"o=- {session_id} {version} IN {family} {host}",
        "s=-",
        f"c=IN {family} {host}",
        "t=0 0",
    ]
    for index, m_line in enumerate(negotiated.m_lines):
        if index != negotiated.audio_index:
            fields = m_line[2:].split()
            fmt = fields[3] if len(fields) > 3 else "0"
            proto = fields[2] if len(fields) > 2 else "RTP/AVP"
            lines.append(f"m={fields[0] if fields else 'audio'} 0 {proto} {fmt}")
            continue
        pt = negotiated.payload_type
        dtmf = negotiated.dtmf_payload_type
        formats = f"{pt}" if dtmf is None else f"{pt} {dtmf}"
        lines.append(f"m=audio {port} {negotiated.proto} {formats}")
        lines.append(f"a=rtpmap:{pt} {negotiated.codec}/8000")
        if dtmf is not None:
            lines.append(f"a=rtpmap:{dtmf} telephone-event/8000")
            lines.append(f"a=fmtp:{dtmf} 0-16")
        lines.append("a=ptime:20")
        lines.append(f"a={negotiated.direction}")
    return ("\r\n".join(lines) + "\r\n").encode()
