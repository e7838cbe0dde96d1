"""SRTP toward the trunk keyed in the SDP (SDES, RFC 4568): ``a=crypto`` offered and read.

We offer one ``a=crypto`` line per suite, each with a fresh key; the
trunk's answer keeps one tag and gives its own key for what it sends. The
offer's transport is ``RTP/SAVP`` when SRTP is required, ``RTP/AVP`` with
the crypto lines when it is optional (best effort: a trunk that ignores
them answers plain RTP). Keys live in this process and in the SDP bodies
that must carry them to the trunk; ``mask`` hides them wherever an SDP is
logged or traced.
"""

from __future__ import annotations

import base64
import re
import secrets
from dataclasses import dataclass, field

import pylibsrtp

from services.common.sdp import CryptoLine
from services.media.srtp import SrtpTransform

OFF = "off"
OPTIONAL = "optional"
REQUIRED = "required"
MODES = (OFF, OPTIONAL, REQUIRED)

# suite name → (pylibsrtp profile, master key + salt length in bytes)
SUITES: dict[str, tuple[int, int]] = {
    "AEAD_AES_128_GCM": (pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 16 + 12),
    "AES_CM_128_HMAC_SHA1_80": (pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 16 + 14),
    "AES_CM_128_HMAC_SHA1_32": (pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32, 16 + 14),
}
OFFERED = ("AES_CM_128_HMAC_SHA1_80", "AEAD_AES_128_GCM", "AES_CM_128_HMAC_SHA1_32")
"Our offer's suites, most widely supported first (carriers and PBXes all do the first)."

_INLINE = re.compile(r"(inline:)[A-Za-z0-9+/=]+")
_CRYPTO = re.compile(r"^(\d{1,9}) ([A-Z0-9_]+) inline:([A-Za-z0-9+/=]+)(?:\|[^ ]*)?(?: .*)?$")


class SdesError(ValueError):
    """The trunk's ``a=crypto`` cannot be used."""


def mask(sdp: str) -> str:
    """``sdp`` with every SDES key replaced, for logs and traces."""
    return _INLINE.sub(r"\1…", sdp)


@dataclass(frozen=True, slots=True)
class Crypto:
    """One ``a=crypto`` attribute."""

    tag: int
    suite: str
    key: bytes = field(repr=False)
    "Master key and salt."

    @property
    def line(self) -> str:
        return f"a=crypto:{self.sdp_line.value}"

    @property
    def sdp_line(self) -> CryptoLine:
        """The attribute in the shared SDP model."""
        inline = base64.b64encode(self.key).decode()
        return CryptoLine(self.tag, self.suite, f"inline:{inline}")


def parse_crypto(value: str) -> Crypto | None:
    """The ``crypto:`` attribute value of an SDP line, or None when we cannot use it
    (an unknown suite, a key of the wrong length, lifetimes or MKIs we do not do)."""
    match = _CRYPTO.match(value.removeprefix("crypto:").strip())
    if match is None:
        return None
    tag, suite, inline = match.groups()
    if suite not in SUITES:
        return None
    try:
        key = base64.b64decode(inline, validate=True)
    except ValueError:
        return None
    if len(key) != SUITES[suite][1]:
        return None
    return Crypto(int(tag), suite, key)


def offer() -> tuple[Crypto, ...]:
    """Our crypto attributes for one call: a fresh key per suite."""
    return tuple(
        Crypto(tag, suite, secrets.token_bytes(SUITES[suite][1]))
        for tag, suite in enumerate(OFFERED, start=1)
    )


def answer(theirs: Crypto) -> Crypto:
    """Our attribute in the answer to an offered one (RFC 4568 5.1.2): the same tag
    and suite, with a fresh key of ours."""
    return Crypto(theirs.tag, theirs.suite, secrets.token_bytes(SUITES[theirs.suite][1]))


def _session(crypto: Crypto, direction: int) -> pylibsrtp.Session:
    profile, _length = SUITES[crypto.suite]
    policy = pylibsrtp.Policy(key=crypto.key, ssrc_type=direction, srtp_profile=profile)
    policy.allow_repeat_tx = True
    policy.window_size = 1024
    return pylibsrtp.Session(policy)


def transforms(
    ours: tuple[Crypto, ...], answer: tuple[Crypto, ...]
) -> tuple[SrtpTransform, SrtpTransform]:
    """(protect, unprotect) for the first answered attribute that matches one we offered:
    the same tag and suite; we send with our key, read with theirs."""
    by_tag = {crypto.tag: crypto for crypto in ours}
    for theirs in answer:
        mine = by_tag.get(theirs.tag)
        if mine is not None and mine.suite == theirs.suite:
            tx = _session(mine, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
            rx = _session(theirs, pylibsrtp.Policy.SSRC_ANY_INBOUND)
            return SrtpTransform(tx), SrtpTransform(rx)
    raise SdesError("the answer's a=crypto matches none we offered")
