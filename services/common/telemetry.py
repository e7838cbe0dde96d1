"""Tracing set-up and W3C trace context in NATS headers.

A real SDK tracer provider is installed even when nothing is exported, so
every span has a valid context and ``traceparent`` travels on every message.
Spans leave over OTLP/HTTP only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set;
the exporter then reads the other standard ``OTEL_*`` variables itself.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from services.common.settings import redact_url

log = logging.getLogger(__name__)

_provider: TracerProvider | None = None

TRACES_PATH = "/v1/traces"
"Where an OTLP/HTTP receiver takes spans, under the base endpoint."


def setup_tracing(service: str, otlp_endpoint: str = "") -> None:
    """Install the process's tracer provider once, exporting to ``otlp_endpoint`` if set.

    ``otlp_endpoint`` is the base URL (``OTEL_EXPORTER_OTLP_ENDPOINT``, possibly
    from ``.env``); spans go to its ``/v1/traces``.
    """
    global _provider
    if _provider is not None:
        return
    provider = TracerProvider(resource=Resource.create({"service.name": f"bridge-{service}"}))
    if otlp_endpoint:
        # Imported only when used: the exporter pulls in protobuf and requests.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        traces_url = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        if not traces_url:
            traces_url = otlp_endpoint.rstrip("/") + TRACES_PATH
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_url)))
        log.info("exporting traces over OTLP/HTTP to %s", redact_url(traces_url))
    trace.set_tracer_provider(provider)
    _provider = provider


def shutdown_tracing() -> None:
    """Export the spans still queued, then stop exporting (blocking: run off the loop)."""
    if _provider is not None:
        _provider.shutdown()


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def inject_headers() -> dict[str, str]:
    """The current trace context as NATS headers (``traceparent``, ``tracestate``)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def extract_context(headers: Mapping[str, str] | None) -> otel_context.Context:
    return propagate.extract(dict(headers or {}))
