"""Log set-up: text lines for people (``bridge up``), JSON lines for containers.

A JSON line holds ``ts``, ``level``, ``service``, ``logger``, ``message``, and
when known ``call_id`` (from ``call_context``, set per call and per bus
handler) and ``trace_id`` (from the current span).
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

current_call_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "bridge_call_id", default=None
)
"The call the running code works for; tasks started under it inherit it."

_NOISY = ("aioice", "aiortc", "nats")
"Libraries that log every packet-level detail at INFO/DEBUG."


@contextmanager
def call_context(call_id: str | None) -> Iterator[None]:
    """Log records inside carry ``call_id``."""
    token = current_call_id.set(call_id)
    try:
        yield
    finally:
        current_call_id.reset(token)


def set_call_id(call_id: str | None) -> None:
    """Set the call of the current context (a task's own context, say) for good."""
    current_call_id.set(call_id)


def current_trace_id() -> str | None:
    """The 32-hex-digit trace id of the current span, or None outside any trace."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return trace.format_trace_id(context.trace_id)


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        call_id = getattr(record, "call_id", None) or current_call_id.get()
        if call_id:
            line["call_id"] = call_id
        trace_id = current_trace_id()
        if trace_id:
            line["trace_id"] = trace_id
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def setup_logging(service: str, level: str, fmt: str = "text") -> None:
    """Log to stderr at ``level`` in ``fmt`` (``text`` or ``json``)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s")
        )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


class LogBudget:
    """At most ``count`` log lines a ``period``: refusals an attacker can cause at will
    must not flood the log (the metrics count every one)."""

    def __init__(self, count: int, period: float) -> None:
        self._count = count
        self._period = period
        self._start = -period
        self._used = 0

    def allow(self, now: float) -> bool:
        if now - self._start >= self._period:
            self._start, self._used = now, 0
        self._used += 1
        return self._used <= self._count
