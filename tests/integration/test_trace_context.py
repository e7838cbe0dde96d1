"""W3C trace context travels in the NATS headers of every message of a call."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest
from nats.aio.msg import Msg

from tests.integration.client import BridgeClient
from tests.integration.conftest import SipagentFactory, Stack, TrunkFactory

pytestmark = pytest.mark.timeout(60)


async def test_every_message_of_a_call_carries_one_trace(
    stack: Stack, sipagent: SipagentFactory, trunk: TrunkFactory
) -> None:
    sipp = trunk("busy.xml")
    sipagent(sipp.port)
    seen: list[Msg] = []
    nc = await nats.connect(stack.nats_url)

    async def record(msg: Msg) -> None:
        seen.append(msg)

    await nc.subscribe("bridge.v1.work.>", cb=record)
    await nc.subscribe("bridge.v1.call.>", cb=record)
    await nc.flush()
    client = await BridgeClient(stack.base_url).connect()
    try:
        await client.offer()
        ended = await client.expect("ended", 15)
        assert ended["status"] == 486
        await asyncio.sleep(0.3)
    finally:
        await client.close()
        await nc.close()

    kinds = [json.loads(m.data)["type"] for m in seen]
    for wanted in ("call.requested", "media.prepared", "dial.requested", "call.ended"):
        assert wanted in kinds, kinds
    trace_ids = set()
    for msg in seen:
        parent = (msg.headers or {}).get("traceparent")
        assert parent, f"no traceparent on {msg.subject}: {msg.data[:80]!r}"
        version, trace_id, span_id, _flags = parent.split("-")
        assert version == "00" and len(trace_id) == 32 and len(span_id) == 16
        trace_ids.add(trace_id)
    assert len(trace_ids) == 1, f"one call, one trace: {trace_ids}"
