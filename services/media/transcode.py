"""Payload conversion between the browser's codec and the trunk's, when they differ.

When both legs share a codec nothing here runs: the payload is relayed as
it is. Otherwise one ``Transcoder`` per call converts each packet's payload
in one step, reusing its buffers: G.711 µ-law ↔ A-law by a 256-byte table,
Opus ↔ G.711 through libopus driven directly (decoded straight to 8 kHz,
encoded from 8 kHz at a complexity set for density, in-band FEC on).
``scale_*`` give the timestamp clock ratio of each direction for
``RtpSession.forward``.
"""

from __future__ import annotations

import contextlib

import numpy as np

from services.media import g711
from services.media.opus import OpusDecoder, OpusEncoder, OpusError
from services.media.sdp import Codec

G711 = ("PCMU", "PCMA")
OPUS_COMPLEXITY = 5
"libopus encoder complexity: about 60 µs per 20 ms frame here, still wide-band speech quality."
OPUS_BITRATE = 24000
_OPUS_FRAMES = frozenset((80, 160, 320, 480))
"8 kHz frame lengths Opus can encode as one frame: 10, 20, 40 and 60 ms."
_MAX_SAMPLES = 2880
"The longest G.711 payload we convert (360 ms), far beyond any ptime."


class UnsupportedCodecError(ValueError):
    """No conversion between these two codecs."""


def is_passthrough(browser: Codec, trunk: Codec) -> bool:
    """True when the payload can be relayed as it is."""
    return browser.name.upper() == trunk.name.upper() and browser.clock_rate == trunk.clock_rate


def _law_table(source: str, target: str) -> bytes:
    decoded = g711.DECODE_TABLES[source]
    encode, _ = g711.CODECS[target]
    return encode(decoded.astype(np.int16))


class Transcoder:
    """Converts payloads both ways between two different codecs of a call."""

    def __init__(self, browser: Codec, trunk: Codec) -> None:
        self.browser = browser
        self.trunk = trunk
        b, t = browser.name.upper(), trunk.name.upper()
        self._table_to_trunk: bytes | None = None
        self._table_to_browser: bytes | None = None
        self._decoder: OpusDecoder | None = None
        self._encoder: OpusEncoder | None = None
        self._pcm = np.zeros(_MAX_SAMPLES, dtype=np.int16)
        if b in G711 and t in G711:
            self._table_to_trunk = _law_table(b, t)
            self._table_to_browser = _law_table(t, b)
        elif b == "OPUS" and t in G711:
            self._decoder = OpusDecoder(8000, 1)
            self._encoder = OpusEncoder(
                8000, 1, bitrate=OPUS_BITRATE, complexity=OPUS_COMPLEXITY, fec=True
            )
            self._g711_encode = g711.ENCODE_TABLES[t]
            self._g711_decode = g711.DECODE_TABLES[t]
        else:
            raise UnsupportedCodecError(f"cannot convert {browser.name} to {trunk.name}")
        self.scale_to_trunk = (browser.clock_rate, trunk.clock_rate)
        "Timestamp units of the browser's clock per units of the trunk's, reduced below."
        self.scale_to_browser = (trunk.clock_rate, browser.clock_rate)
        self.errors = 0
        "Payloads that could not be converted (corrupt Opus, odd frame lengths)."

    def to_trunk(self, payload: bytes | memoryview) -> bytes | None:
        """The trunk's payload for one browser payload; None to drop it."""
        if self._table_to_trunk is not None:
            return bytes(payload).translate(self._table_to_trunk)
        assert self._decoder is not None
        try:
            pcm = self._decoder.decode(payload)
        except OpusError:
            self.errors += 1
            return None
        samples = np.frombuffer(pcm, dtype=np.uint16)
        return bytes(self._g711_encode[samples].tobytes())

    @property
    def conceals(self) -> bool:
        """True when lost browser packets can be stood in for (Opus: FEC, else PLC)."""
        return self._decoder is not None

    def conceal_to_trunk(
        self, samples: int, next_payload: bytes | memoryview, *, just_before: bool
    ) -> bytes | None:
        """A trunk payload standing in for ``samples`` lost before ``next_payload``.

        The frame ``just_before`` it comes from the in-band FEC copy that
        ``next_payload`` carries, when it has one; older ones from libopus's
        loss concealment. Call oldest first, then ``to_trunk(next_payload)``.
        """
        if self._decoder is None:
            return None
        pcm: memoryview | None = None
        if just_before:
            with contextlib.suppress(OpusError):
                pcm = self._decoder.decode(next_payload, fec=True, samples=samples)
        if pcm is None:
            try:
                pcm = self._decoder.conceal(samples)
            except OpusError:
                return None
        return bytes(self._g711_encode[np.frombuffer(pcm, dtype=np.uint16)].tobytes())

    def to_browser(self, payload: bytes | memoryview) -> bytes | None:
        """The browser's payload for one trunk payload; None to drop it."""
        if self._table_to_browser is not None:
            return bytes(payload).translate(self._table_to_browser)
        assert self._encoder is not None
        count = len(payload)
        if count not in _OPUS_FRAMES:
            self.errors += 1
            return None
        pcm = self._pcm[:count]
        np.take(self._g711_decode, np.frombuffer(payload, dtype=np.uint8), out=pcm)
        try:
            return self._encoder.encode(pcm.data.cast("B"))
        except OpusError:
            self.errors += 1
            return None

    def close(self) -> None:
        if self._decoder is not None:
            self._decoder.close()
        if self._encoder is not None:
            self._encoder.close()
