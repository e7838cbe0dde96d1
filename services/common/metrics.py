"""Prometheus metrics of one process, all named ``bridge_*``.

Each process builds one ``Metrics`` on a registry of its own (never the
client library's global default), so tests can build as many as they like.
Every service registers the same names; a service fills those that concern
it (media the RTP counters, the SIP agent the call outcomes, signaling the
set-up time) and the others stay at zero.

Nothing here is called per RTP packet: media adds each call's counters
periodically and when the call ends (see ``services.media.call``).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.process_collector import ProcessCollector

SETUP_BUCKETS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 34.0, 60.0)
"Seconds from the browser's offer to ``connected`` (ringing included)."
JITTER_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2)
MOS_BUCKETS = (1.0, 2.0, 2.5, 3.0, 3.5, 3.8, 4.0, 4.2, 4.4)
"Seconds of RFC 3550 interarrival jitter at the end of a call."

IN = "in"
"RTP received from the trunk."
OUT = "out"
"RTP sent to the trunk."
SIP_REFUSALS = ("unknown_source", "rate", "too_many_ringing")
"Reasons of ``bridge_sip_refused``."


class Metrics:
    """The ``bridge_*`` metrics of one process and the registry that holds them."""

    def __init__(self, *, process_metrics: bool = False) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        if process_metrics:
            ProcessCollector(registry=self.registry)
        registry = self.registry
        self.active_calls = Gauge(
            "bridge_active_calls", "Calls this process holds now.", registry=registry
        )
        self.call_attempts = Counter(
            "bridge_call_attempts",
            "Calls a SIP agent took from the work queue.",
            registry=registry,
        )
        self.call_outcomes = Counter(
            "bridge_call_outcomes",
            "Calls a SIP agent finished, by cause and final SIP status ('none' without one).",
            ["cause", "status"],
            registry=registry,
        )
        self.refused = Counter(
            "bridge_refused",
            "Call attempts, sockets and messages signaling refused, by reason (the error code).",
            ["reason"],
            registry=registry,
        )
        self.call_setup_seconds = Histogram(
            "bridge_call_setup_seconds",
            "Seconds from the browser's offer to the trunk's answer (signaling).",
            buckets=SETUP_BUCKETS,
            registry=registry,
        )
        self.rtp_packets = Counter(
            "bridge_rtp_packets",
            "RTP packets toward the trunk (out) and from it (in).",
            ["direction"],
            registry=registry,
        )
        self.rtp_bytes = Counter(
            "bridge_rtp_bytes",
            "RTP bytes (headers included) toward the trunk (out) and from it (in).",
            ["direction"],
            registry=registry,
        )
        self.rtp_lost = Counter(
            "bridge_rtp_lost",
            "RTP packets from the trunk missing from its sequence.",
            registry=registry,
        )
        self.rtp_jitter_seconds = Histogram(
            "bridge_rtp_jitter_seconds",
            "Interarrival jitter of the trunk's RTP (RFC 3550), one observation per call.",
            buckets=JITTER_BUCKETS,
            registry=registry,
        )
        self.media_packets = Counter(
            "bridge_media_packets",
            "RTP packets of each call leg (browser, trunk) from its peer (in) and to it (out).",
            ["leg", "direction"],
            registry=registry,
        )
        self.media_lost = Counter(
            "bridge_media_lost",
            "RTP packets of each leg's peer that never arrived (RFC 3550 expected - received).",
            ["leg"],
            registry=registry,
        )
        self.media_mos = Histogram(
            "bridge_media_mos",
            "Estimated listening quality (E-model MOS) of audio from each leg, once per call.",
            ["leg"],
            buckets=MOS_BUCKETS,
            registry=registry,
        )
        self.media_calls = Counter(
            "bridge_media_calls",
            "Calls whose media was relayed untouched (passthrough) or converted (transcode).",
            ["path"],
            registry=registry,
        )
        self.registration_registered = Gauge(
            "bridge_registration_registered",
            "1 while a SIP agent's registration at the trunk is 'registered', else 0.",
            ["trunk"],
            registry=registry,
        )
        self.sip_refused = Counter(
            "bridge_sip_refused",
            "SIP messages a SIP agent refused: unknown_source (a request from no trunk and"
            " in no dialog: 403 or dropped), rate (over SIP_SOURCE_RATE: dropped unread),"
            " too_many_ringing (an INVITE beyond INBOUND_MAX_RINGING: 486).",
            ["reason"],
            registry=registry,
        )
        for reason in SIP_REFUSALS:
            self.sip_refused.labels(reason)
        self.nats_errors = Counter(
            "bridge_nats_errors",
            "NATS client errors, disconnections and failed publishes.",
            registry=registry,
        )
        # Label sets that exist before their first increment, so dashboards see zeros.
        for direction in (IN, OUT):
            self.rtp_packets.labels(direction)
            for leg in ("browser", "trunk"):
                self.media_packets.labels(leg, direction)
        for path in ("passthrough", "transcode"):
            self.media_calls.labels(path)
            self.rtp_bytes.labels(direction)

    def track_active_calls(self, count: Callable[[], int]) -> None:
        """Read ``bridge_active_calls`` from ``count()`` at every scrape."""
        self.active_calls.set_function(lambda: float(count()))

    def track_registration(self, trunk: str, registered: Callable[[], bool]) -> None:
        """Read ``bridge_registration_registered{trunk}`` from ``registered()`` at every scrape."""
        self.registration_registered.labels(trunk).set_function(lambda: float(registered()))

    def record_outcome(self, cause: str, status: int | None) -> None:
        self.call_outcomes.labels(cause, "none" if status is None else str(status)).inc()

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)
