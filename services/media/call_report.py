"""What a call's media did, told three ways: ``CallStatsReported`` events, metrics, the end line.

``CallReporter`` reads the call's ``MediaCore`` every few seconds and once
at the end, never per packet: it builds the event (both legs' packets,
loss, jitter, round trip, the far end's view of our stream, a MOS estimate,
passthrough or not), adds the counters that grew since the last read to
the Prometheus metrics, and writes the end-of-call log line and trace span.
"""

from __future__ import annotations

import logging

from opentelemetry import trace

from proto.events import CallStatsReported, LegQuality
from services.common.metrics import IN, OUT, Metrics
from services.common.telemetry import tracer
from services.media.core import BROWSER, TRUNK, MediaCore

log = logging.getLogger("services.media.call")
_tracer = tracer("bridge.media")


class CallReporter:
    """One call's reports; remembers what the metrics already counted."""

    def __init__(self, call_id: str, metrics: Metrics | None) -> None:
        self._call_id = call_id
        self._metrics = metrics
        self._counted: dict[str, tuple[int, int, int]] = {}
        "Per leg, what the metrics already hold: packets in, packets out, lost."
        self._trunk_counted = (0, 0, 0, 0)
        "The trunk's RTP already in the bridge_rtp_* metrics: packets in/out, bytes in/out."
        self._path_counted = False

    def report(self, core: MediaCore, final: bool) -> CallStatsReported:
        browser, trunk = core.quality()
        event = CallStatsReported(
            call_id=self._call_id,
            passthrough=bool(core.passthrough),
            browser=browser,
            trunk=trunk,
            final=final,
        )
        if self._metrics is not None:
            self._count(core, browser, trunk, final)
        if final:
            self._span(event)
        return event

    def _count(
        self, core: MediaCore, browser: LegQuality, trunk: LegQuality | None, final: bool
    ) -> None:
        metrics = self._metrics
        assert metrics is not None
        for leg, quality in ((BROWSER, browser), (TRUNK, trunk)):
            if quality is None:
                continue
            before = self._counted.get(leg, (0, 0, 0))
            now = (quality.packets_in, quality.packets_out, max(quality.lost, before[2]))
            self._counted[leg] = now
            metrics.media_packets.labels(leg, IN).inc(max(0, now[0] - before[0]))
            metrics.media_packets.labels(leg, OUT).inc(max(0, now[1] - before[1]))
            metrics.media_lost.labels(leg).inc(max(0, now[2] - before[2]))
            if leg == TRUNK:
                metrics.rtp_lost.inc(max(0, now[2] - before[2]))
            if final and quality.packets_in > 1:
                metrics.media_mos.labels(leg).observe(quality.mos)
                if leg == TRUNK:
                    metrics.rtp_jitter_seconds.observe(quality.jitter_ms / 1000)
        stats = core.trunk_stats
        if stats is not None:
            before_trunk = self._trunk_counted
            now_trunk = (stats.packets_in, stats.packets_out, stats.bytes_in, stats.bytes_out)
            self._trunk_counted = now_trunk
            delta = [max(0, a - b) for a, b in zip(now_trunk, before_trunk, strict=True)]
            metrics.rtp_packets.labels(IN).inc(delta[0])
            metrics.rtp_packets.labels(OUT).inc(delta[1])
            metrics.rtp_bytes.labels(IN).inc(delta[2])
            metrics.rtp_bytes.labels(OUT).inc(delta[3])
        if trunk is not None and not self._path_counted:
            self._path_counted = True
            metrics.media_calls.labels("passthrough" if core.passthrough else "transcode").inc()

    def _span(self, event: CallStatsReported) -> None:
        attributes: dict[str, str | bool | int | float] = {
            "bridge.call_id": self._call_id,
            "bridge.passthrough": event.passthrough,
        }
        for leg, quality in ((BROWSER, event.browser), (TRUNK, event.trunk)):
            if quality is None:
                continue
            attributes[f"bridge.{leg}.codec"] = quality.codec
            attributes[f"bridge.{leg}.packets_in"] = quality.packets_in
            attributes[f"bridge.{leg}.packets_out"] = quality.packets_out
            attributes[f"bridge.{leg}.loss"] = quality.loss
            attributes[f"bridge.{leg}.jitter_ms"] = quality.jitter_ms
            attributes[f"bridge.{leg}.mos"] = quality.mos
            if quality.rtt_ms is not None:
                attributes[f"bridge.{leg}.rtt_ms"] = quality.rtt_ms
        with _tracer.start_as_current_span("media.stats", attributes=attributes) as span:
            span.set_status(trace.StatusCode.OK)

    def log_end(self, core: MediaCore, reason: str, browser_codec: str) -> None:
        """The end-of-call line: both legs' figures (in the JSON log too)."""
        browser, trunk = core.quality()
        stats = core.trunk_stats
        log.info(
            "call %s media ended: %s (browser %s, trunk %s, %s; %s; %s; trunk dropped %d, "
            "conversion errors %d)",
            self._call_id,
            reason,
            browser_codec,
            trunk.codec if trunk is not None else "-",
            "passthrough" if core.passthrough else "transcoding",
            _describe(BROWSER, browser),
            _describe(TRUNK, trunk),
            stats.dropped if stats is not None else 0,
            core.transcode_errors,
        )


def _describe(leg: str, quality: LegQuality | None) -> str:
    if quality is None:
        return f"{leg}: no RTP"
    rtt = f" rtt {quality.rtt_ms:.0f} ms" if quality.rtt_ms is not None else ""
    return (
        f"{leg} rtp in {quality.packets_in} out {quality.packets_out} lost {quality.lost} "
        f"jitter {quality.jitter_ms:.1f} ms{rtt} mos {quality.mos:.2f}"
    )
