"""One call, one trace in an OTLP receiver, spans from all three services; no password.

The receiver is this test's own: an aiohttp server on a free port taking
OTLP/HTTP protobuf on ``/v1/traces``, the way Jaeger or a collector would.
The services log JSON lines here, as they would in a container.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.integration.client import BridgeClient
from tests.integration.harness import (
    TRUNK_PASSWORD,
    TRUNK_USER,
    Process,
    Sipp,
    free_port,
    free_rtp_range,
    service_env,
    start_nats,
    start_service,
    wait_ready,
)
from tests.integration.test_call import CHALLENGE_401

pytestmark = pytest.mark.timeout(90)

SERVICES = ("bridge-signaling", "bridge-media", "bridge-sipagent")
EXPECTED_SPANS = {"call", "media.prepare", "media.answer", "sipagent.call", "sip.invite"}


class OtlpReceiver:
    """Collects every span exported to it, with the raw bodies for a password check."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.spans: list[tuple[str, object]] = []
        "(service.name, span)"
        self._runner: web.AppRunner | None = None
        self.port = free_port()

    async def start(self) -> OtlpReceiver:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _traces(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.bodies.append(body)
        export = ExportTraceServiceRequest()
        export.ParseFromString(body)
        for resource_spans in export.resource_spans:
            service = next(
                a.value.string_value
                for a in resource_spans.resource.attributes
                if a.key == "service.name"
            )
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append((service, span))
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    def services_in(self, trace_id: bytes) -> set[str]:
        return {s for s, span in self.spans if span.trace_id == trace_id}  # type: ignore[attr-defined]


def attributes(span: object) -> dict[str, object]:
    values: dict[str, object] = {}
    for attribute in span.attributes:  # type: ignore[attr-defined]
        value = attribute.value
        values[attribute.key] = getattr(value, value.WhichOneof("value"))
    return values


async def test_one_call_is_one_trace_across_the_services(tmp_path: Path) -> None:
    receiver = await OtlpReceiver().start()
    nats, nats_url = start_nats(tmp_path)
    rtp_min, rtp_max = free_rtp_range()
    http_port = free_port()
    sipp = Sipp("challenge_echo_bye.xml", tmp_path, keys=dict(CHALLENGE_401)).start()
    env = service_env(
        nats_url,
        HTTP_HOST="127.0.0.1",
        HTTP_PORT=str(http_port),
        RTP_PORT_MIN=str(rtp_min),
        RTP_PORT_MAX=str(rtp_max),
        RTP_BIND_HOST="127.0.0.1",
        PUBLIC_IP="127.0.0.1",
        SIP_TRUNK_HOST="127.0.0.1",
        SIP_TRUNK_PORT=str(sipp.port),
        SIP_USERNAME=TRUNK_USER,
        SIP_PASSWORD=TRUNK_PASSWORD,
        SIP_DOMAIN="trunk.test",
        SIP_BIND_HOST="127.0.0.1",
        LOG_FORMAT="json",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver.port}",
        OTEL_BSP_SCHEDULE_DELAY="200",
    )
    processes: list[Process] = [nats]
    processes += [start_service(name, env, tmp_path) for name in ("media", "sipagent", "signaling")]
    client: BridgeClient | None = None
    try:
        assert wait_ready(nats_url, "media", "sipagent", "signaling")
        client = await BridgeClient(f"http://127.0.0.1:{http_port}").connect()
        await client.offer(codec="PCMU")
        await client.accept_answer()
        await client.expect("connected")
        await asyncio.sleep(0.5)
        await client.hangup()
        await client.expect("ended")
        assert await sipp.wait(10) == 0, sipp.messages()

        # Spans arrive in batches every 200 ms; wait for those checked below
        # (stopping a process blocks this loop, so its receiver too).
        deadline = time.monotonic() + 15
        while True:
            roots = [span for s, span in receiver.spans if span.name == "call"]  # type: ignore[attr-defined]
            names = {span.name for _, span in receiver.spans}  # type: ignore[attr-defined]
            if (
                roots
                and receiver.services_in(roots[0].trace_id) >= set(SERVICES)
                and names >= EXPECTED_SPANS
            ):
                break
            assert time.monotonic() < deadline, f"spans so far: {receiver.spans}"
            await asyncio.sleep(0.1)
    finally:
        if client is not None:
            await client.close()
        for process in reversed(processes):
            process.stop(signal.SIGINT)
        sipp.stop()
        await receiver.close()

    # One call, one trace: the call's spans, in every service, share the root's trace id.
    (root,) = roots
    trace_id = root.trace_id
    assert not root.parent_span_id, "the call span is the root of its trace"
    call_id = attributes(root)["bridge.call_id"]
    assert attributes(root)["bridge.destination"] == "+15551234567"
    by_name = {span.name: (service, span) for service, span in receiver.spans}  # type: ignore[attr-defined]
    for name, service in [
        ("media.prepare", "bridge-media"),
        ("media.answer", "bridge-media"),
        ("sipagent.call", "bridge-sipagent"),
        ("sip.invite", "bridge-sipagent"),
    ]:
        assert name in by_name, f"no {name} span: {sorted(by_name)}"
        owner, span = by_name[name]
        assert owner == service and span.trace_id == trace_id, name  # type: ignore[attr-defined]
        assert attributes(span)["bridge.call_id"] == call_id
    assert attributes(by_name["media.answer"][1])["bridge.codec"] == "PCMU"
    sipagent_call = attributes(by_name["sipagent.call"][1])
    assert sipagent_call["bridge.trunk_host"] == "127.0.0.1"
    invite = by_name["sip.invite"][1]
    assert attributes(invite)["sip.status"] == 200
    # Each SIP message of the INVITE transaction is an event: method or status, nothing more.
    events = [(e.name, attributes(e)) for e in invite.events]  # type: ignore[attr-defined]
    names = [name for name, _ in events]
    assert names[:4] == ["sip > INVITE", "sip < 401", "sip > ACK", "sip > INVITE"], names
    assert "sip < 200" in names
    assert {key for _, attrs in events for key in attrs} <= {
        "sip.direction",
        "sip.method",
        "sip.status",
    }

    # The password is nowhere: not in what was exported, not in any log line.
    password = TRUNK_PASSWORD.encode()
    assert all(password not in body for body in receiver.bodies)
    logs = "\n".join(p.log() for p in processes[1:])
    assert TRUNK_PASSWORD not in logs

    # JSON log lines carry the call id and the trace id of the call.
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert lines and all({"ts", "level", "service", "logger", "message"} <= set(x) for x in lines)
    in_call = [x for x in lines if x.get("call_id") == call_id]
    assert {x["service"] for x in in_call} >= {"signaling", "media", "sipagent"}
    assert any(x.get("trace_id") == trace_id.hex() for x in in_call)
