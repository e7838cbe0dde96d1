"""JSON log lines: their shape, the call id and the trace id."""

import json
import logging
import sys

from opentelemetry.sdk.trace import TracerProvider

from services.common.logs import JsonFormatter, call_context


def record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("services.media.call", logging.INFO, __file__, 1, message, args, None)


def test_json_line_shape() -> None:
    line = json.loads(JsonFormatter("media").format(record("call %s ended", "c1")))
    assert set(line) == {"ts", "level", "service", "logger", "message"}
    assert line["level"] == "INFO" and line["service"] == "media"
    assert line["logger"] == "services.media.call"
    assert line["message"] == "call c1 ended"
    assert line["ts"].endswith("+00:00") and "T" in line["ts"]


def test_call_id_and_trace_id_when_known() -> None:
    tracer = TracerProvider().get_tracer("test")
    with call_context("c42"), tracer.start_as_current_span("call") as span:
        line = json.loads(JsonFormatter("signaling").format(record("offer")))
    assert line["call_id"] == "c42"
    assert line["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    # Outside the call, neither is there.
    line = json.loads(JsonFormatter("signaling").format(record("idle")))
    assert "call_id" not in line and "trace_id" not in line


def test_exception_is_one_line_of_json() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    text = JsonFormatter("sipagent").format(rec)
    assert "\n" not in text
    assert "ValueError: boom" in json.loads(text)["exc"]


def test_a_log_budget_allows_so_many_lines_a_period() -> None:
    from services.common.logs import LogBudget

    budget = LogBudget(3, 60.0)
    assert [budget.allow(0.0) for _ in range(5)] == [True, True, True, False, False]
    assert budget.allow(59.9) is False
    assert budget.allow(60.0) is True
