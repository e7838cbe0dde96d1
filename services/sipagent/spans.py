"""The trace spans of one call's SIP side. No header, body or credential reaches a span."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from services.common.digits import number


class SipSpans:
    """The spans of one call's SIP side: the call, and its INVITE transaction inside.

    Each SIP message becomes an event of the INVITE span while it is open,
    else of the call span, named by method or status only: no header, no
    body, no credential ever reaches a span.
    """

    def __init__(self, spans: trace.Tracer, call: Span, attributes: dict[str, str]) -> None:
        self._tracer = spans
        self._attributes = attributes
        self.call = call
        self.invite: Span | None = None

    def start_invite(self) -> None:
        context = trace.set_span_in_context(self.call)
        self.invite = self._tracer.start_span(
            "sip.invite", context=context, attributes=self._attributes
        )

    def end_invite(self, status: int | None) -> None:
        if self.invite is not None:
            if status is not None:
                self.invite.set_attribute("sip.status", status)
                if status >= 300:
                    self.invite.set_status(Status(StatusCode.ERROR, str(status)))
            self.invite.end()
            self.invite = None

    def observe(self, direction: str, summary: str) -> None:
        span = self.invite or self.call
        if not span.is_recording():
            return  # clean-up after the call's end (BYE retransmissions): its span is closed
        token = summary.split(" ", 1)[0]
        attributes: dict[str, str | int] = {
            "sip.direction": "sent" if direction == ">" else "received"
        }
        status = number(token)
        if status is not None:
            attributes["sip.status"] = status
        else:
            attributes["sip.method"] = token
        span.add_event(f"sip {direction} {token}", attributes)
