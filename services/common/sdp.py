"""One SDP model for every service (RFC 8866; offer/answer per RFC 3264). Pure.

``parse(text)`` reads a session description into frozen records, or raises
``SdpError`` with a message fit for a log or a 488 (never a secret: an
``a=crypto`` value is never quoted). ``SessionDescription.serialize()`` writes
one back with CRLF line ends. Records are changed with ``dataclasses.replace``
and the helpers here (``with_formats``, ``rejected``, ``with_media``).

What is refused: more than ``MAX_SDP_CHARS``, ``MAX_LINES``, ``MAX_MEDIA``
sections or ``MAX_FORMATS`` formats per section, a line over
``MAX_LINE_CHARS``, a first line other than ``v=0``, a line that is not
``<letter>=<value>`` with a known letter, a control character outside an
``a=`` line, a session line inside a media section, a port out of 0-65535,
an RTP payload type out of 0-127, and malformed ``o=``, ``c=``, ``m=``,
``a=rtpmap``, ``a=fmtp``, ``a=rtcp``, ``a=crypto`` lines. Tolerated: LF
alone as the line end, blank lines, trailing blanks, no ``o=``/``s=``/``t=``
(some trunks omit them), format tokens that are not numbers (kept, but not
payload types), and an ``a=`` line with a control character: it is dropped,
so nothing of it can be echoed into an answer (no attribute we read needs
one).
"""

from __future__ import annotations

from services.common.sdp_codecs import TELEPHONE_EVENT, RtpMap, static_rtpmap
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
    answer_direction,
)
from services.common.sdp_parse import (
    MAX_FORMATS,
    MAX_LINE_CHARS,
    MAX_LINES,
    MAX_MEDIA,
    MAX_SDP_CHARS,
    SdpError,
    parse,
)

__all__ = [
    "DIRECTIONS",
    "MAX_FORMATS",
    "MAX_LINES",
    "MAX_LINE_CHARS",
    "MAX_MEDIA",
    "MAX_PAYLOAD_TYPE",
    "MAX_SDP_CHARS",
    "TELEPHONE_EVENT",
    "Attribute",
    "Connection",
    "CryptoLine",
    "Fmtp",
    "Line",
    "MediaDescription",
    "Origin",
    "Rtcp",
    "RtpMap",
    "SdpError",
    "SessionDescription",
    "answer_direction",
    "parse",
    "static_rtpmap",
]
