"""Call quality from a leg's counters: loss, jitter, round trip and a MOS estimate.

The MOS is the ITU-T G.107 E-model reduced to what a relay can see:
R = 93.2 − Id(delay) − Ie,eff(codec, random loss), mapped to a MOS of
1–4.5. Mouth-to-ear delay is estimated as half the RTCP round trip plus a
jitter buffer of twice the jitter plus one 20 ms packet. Codec impairments
(Ie, Bpl) are G.113's for G.711 with concealment; Opus has no G.113 entry
and is given the values commonly used for it (Ie 0, Bpl 20 with FEC).
"""

from __future__ import annotations

from proto.events import LegQuality
from services.media.rtcp import RtcpLeg
from services.media.rtp import RtpSession

PACKET_MS = 20.0
_CODEC_IMPAIRMENT = {"PCMU": (0.0, 25.1), "PCMA": (0.0, 25.1), "OPUS": (0.0, 20.0)}
"Ie and Bpl by encoding name (upper case)."


def mos(loss: float, delay_ms: float, codec: str) -> float:
    """The E-model's MOS for random ``loss`` (0-1) and one-way ``delay_ms``."""
    ie, bpl = _CODEC_IMPAIRMENT.get(codec.upper(), (0.0, 25.1))
    ppl = max(0.0, min(loss, 1.0)) * 100
    ie_eff = ie + (95 - ie) * ppl / (ppl + bpl)
    delay_impairment = 0.024 * delay_ms
    if delay_ms > 177.3:
        delay_impairment += 0.11 * (delay_ms - 177.3)
    r = max(0.0, min(100.0, 93.2 - delay_impairment - ie_eff))
    return round(1 + 0.035 * r + r * (r - 60) * (100 - r) * 7e-6, 2)


def leg_quality(session: RtpSession, rtcp: RtcpLeg | None, codec: str) -> LegQuality:
    """One leg's figures, from its RTP session and its RTCP."""
    stats = session.stats
    reception = session.reception()
    lost, loss = 0, 0.0
    if reception is not None:
        _ssrc, _highest, expected, received = reception
        lost = max(expected - received, 0)
        loss = lost / expected if expected > 0 else 0.0
    jitter_ms = stats.jitter * 1000 / session.clock_rate
    rtt = rtcp.rtt if rtcp is not None else None
    reported = rtcp is not None and rtcp.reports_in > 0
    delay = (rtt * 500 if rtt is not None else 0.0) + 2 * jitter_ms + PACKET_MS
    return LegQuality(
        codec=codec,
        packets_in=stats.packets_in,
        packets_out=stats.packets_out,
        lost=lost,
        loss=round(loss, 4),
        jitter_ms=round(jitter_ms, 2),
        rtt_ms=round(rtt * 1000, 1) if rtt is not None else None,
        remote_loss=round(rtcp.remote_fraction_lost, 4) if reported and rtcp else None,
        mos=mos(loss, delay, codec),
    )
