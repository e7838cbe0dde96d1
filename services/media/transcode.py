"""Payload conversion between the browser's codec and the trunk's, when they differ.

When both legs share a codec nothing here runs: the payload is relayed as
it is. Otherwise one ``Transcoder`` per call converts each packet's payload
in one step: G.711 µ-law ↔ A-law by a 256-byte table; anything else through
16-bit PCM (``pcm_codecs``): decoded at its codec's rate, resampled when the
other codec's differs (8 ↔ 16 kHz), encoded. Opus runs at the other leg's
rate, so Opus ↔ G.711 never resamples. ``scale_*`` give the timestamp clock
ratio of each direction for ``RtpSession.forward``.
"""

from __future__ import annotations

import numpy as np

from services.media import g711
from services.media.pcm_codecs import (
    CodecError,
    G711Codec,
    G722Codec,
    OpusCodec,
    PcmCodec,
    resample,
)
from services.media.sdp import Codec

G711 = ("PCMU", "PCMA")
CONVERTED = (*G711, "OPUS", "G722")
"Codecs a Transcoder converts between (any two of them)."


class UnsupportedCodecError(ValueError):
    """No conversion between these two codecs."""


def is_passthrough(browser: Codec, trunk: Codec) -> bool:
    """True when the payload can be relayed as it is."""
    return browser.name.upper() == trunk.name.upper() and browser.clock_rate == trunk.clock_rate


def _law_table(source: str, target: str) -> bytes:
    decoded = g711.DECODE_TABLES[source]
    encode, _ = g711.CODECS[target]
    return encode(decoded.astype(np.int16))


def _pcm_codec(name: str, other: str) -> PcmCodec:
    if name in G711:
        return G711Codec(name)
    if name == "G722":
        return G722Codec()
    return OpusCodec(16000 if other == "G722" else 8000)


class Transcoder:
    """Converts payloads both ways between two different codecs of a call."""

    def __init__(self, browser: Codec, trunk: Codec) -> None:
        self.browser = browser
        self.trunk = trunk
        b, t = browser.name.upper(), trunk.name.upper()
        if b not in CONVERTED or t not in CONVERTED or b == t:
            raise UnsupportedCodecError(f"cannot convert {browser.name} to {trunk.name}")
        self._table_to_trunk: bytes | None = None
        self._table_to_browser: bytes | None = None
        self._codecs: tuple[PcmCodec, PcmCodec] | None = None
        if b in G711 and t in G711:
            self._table_to_trunk = _law_table(b, t)
            self._table_to_browser = _law_table(t, b)
        else:
            self._codecs = (_pcm_codec(b, t), _pcm_codec(t, b))
        self.scale_to_trunk = (browser.clock_rate, trunk.clock_rate)
        "Timestamp units of the browser's clock per units of the trunk's."
        self.scale_to_browser = (trunk.clock_rate, browser.clock_rate)
        self.errors = 0
        "Payloads that could not be converted (corrupt, odd frame lengths)."

    def _convert(
        self, payload: bytes | memoryview, source: PcmCodec, target: PcmCodec
    ) -> bytes | None:
        try:
            pcm = resample(source.decode(payload), source.rate, target.rate)
            return target.encode(pcm)
        except CodecError:
            self.errors += 1
            return None

    def to_trunk(self, payload: bytes | memoryview) -> bytes | None:
        """The trunk's payload for one browser payload; None to drop it."""
        if self._table_to_trunk is not None:
            return bytes(payload).translate(self._table_to_trunk)
        assert self._codecs is not None
        return self._convert(payload, self._codecs[0], self._codecs[1])

    def to_browser(self, payload: bytes | memoryview) -> bytes | None:
        """The browser's payload for one trunk payload; None to drop it."""
        if self._table_to_browser is not None:
            return bytes(payload).translate(self._table_to_browser)
        assert self._codecs is not None
        return self._convert(payload, self._codecs[1], self._codecs[0])

    @property
    def conceals(self) -> bool:
        """True when lost browser packets can be stood in for (an Opus browser: FEC, PLC)."""
        return self._codecs is not None and isinstance(self._codecs[0], OpusCodec)

    def conceal_to_trunk(
        self, samples: int, next_payload: bytes | memoryview, *, just_before: bool
    ) -> bytes | None:
        """A trunk payload standing in for ``samples`` (trunk clock) lost before ``next_payload``.

        The frame ``just_before`` it comes from the in-band FEC copy that
        ``next_payload`` carries, when it has one; older ones from libopus's
        loss concealment. Call oldest first, then ``to_trunk(next_payload)``.
        """
        if self._codecs is None:
            return None
        source, target = self._codecs
        if not isinstance(source, OpusCodec):
            return None
        try:
            # The trunk clock counts 8 kHz samples (G.722's too): at Opus's rate, scale.
            count = samples * source.rate // 8000
            pcm = source.conceal(count, next_payload, fec=just_before)
            return target.encode(resample(pcm, source.rate, target.rate))
        except CodecError:
            return None

    def close(self) -> None:
        if self._codecs is not None:
            for codec in self._codecs:
                codec.close()
