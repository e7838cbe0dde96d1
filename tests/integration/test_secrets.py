"""Secrets stay secret: one call with every secret in play, then every log line, every
exported span and every event on the bus is searched for them.

The call uses a client token (signed with CLIENT_TOKEN_SECRET), a trunk that
challenges for its SIP password, and DTMF digits sent from the page. None of
the token, the token key or the SIP password may appear anywhere; the digits
appear only where they are the payload (the ``DtmfRequested`` event that
carries them to the media worker), never in a log line or a span.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import nats
import pytest

from services.common.access import load_access
from services.signaling.tokens import mint
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
from tests.integration.test_tracing import OtlpReceiver

pytestmark = pytest.mark.timeout(90)

TOKEN_KEY = "key-2026:" + "9f" * 24
DIGITS = "9#7*31#5"


async def test_no_secret_in_logs_spans_or_events(tmp_path: Path) -> None:
    receiver = await OtlpReceiver().start()
    nats_process, nats_url = start_nats(tmp_path)
    rtp_min, rtp_max = free_rtp_range()
    http_port = free_port()
    audit_file = tmp_path / "audit.log"
    sipp = Sipp("challenge_echo_bye.xml", tmp_path, keys=dict(CHALLENGE_401)).start()
    env = service_env(
        nats_url,
        HTTP_HOST="127.0.0.1",
        HTTP_PORT=str(http_port),
        AUTH="required",
        CLIENT_TOKEN_SECRET=TOKEN_KEY,
        AUDIT_LOG=str(audit_file),
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
        LOG_LEVEL="DEBUG",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver.port}",
        OTEL_BSP_SCHEDULE_DELAY="200",
    )
    token = mint(load_access(env, "127.0.0.1"), "alice", 300, dst=["+1*"])
    events: list[bytes] = []
    processes: list[Process] = [nats_process]
    processes += [start_service(name, env, tmp_path) for name in ("media", "sipagent", "signaling")]
    watcher = await nats.connect(nats_url)
    client: BridgeClient | None = None
    try:

        async def keep(msg: nats.aio.msg.Msg) -> None:
            events.append(msg.subject.encode() + b" " + msg.data + repr(msg.headers).encode())

        await watcher.subscribe(">", cb=keep)
        assert wait_ready(nats_url, "media", "sipagent", "signaling")
        client = await BridgeClient(f"http://127.0.0.1:{http_port}").connect(token=token)
        await client.offer(codec="PCMU")
        await client.accept_answer()
        await client.expect("connected")
        await client.send({"type": "dtmf", "digits": DIGITS})
        await asyncio.sleep(1.5)  # the digits play out (RFC 4733 events at the trunk)
        await client.hangup()
        await client.expect("ended")
        assert await sipp.wait(10) == 0, sipp.messages()
        deadline = time.monotonic() + 15
        while not {s for s, _ in receiver.spans} >= {"bridge-signaling", "bridge-sipagent"}:
            assert time.monotonic() < deadline, "no spans exported"
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
    finally:
        if client is not None:
            await client.close()
        await watcher.close()
        for process in reversed(processes):
            process.stop(signal.SIGINT)
        sipp.stop()
        await receiver.close()

    secret_key = TOKEN_KEY.split(":", 1)[1]
    logs = "\n".join(p.log() for p in processes[1:]) + audit_file.read_text()
    spans = b"".join(receiver.bodies)
    bus = b"\n".join(events)
    assert logs and spans and bus
    assert b"dtmf.requested" in bus  # the bus was watched
    for name, secret in {
        "client token": token,
        "token key": secret_key,
        "SIP password": TRUNK_PASSWORD,
    }.items():
        assert secret not in logs, f"the {name} is in a log line"
        assert secret.encode() not in spans, f"the {name} is in an exported span"
        assert secret.encode() not in bus, f"the {name} is in an event on the bus"
    # A signature alone would let nobody in, but no part of the token is kept anywhere.
    assert token.rsplit(".", 1)[1] not in logs
    assert DIGITS not in logs, "DTMF digits are in a log line"
    assert DIGITS.encode() not in spans, "DTMF digits are in an exported span"
    assert '"identity": "alice"' in audit_file.read_text()
