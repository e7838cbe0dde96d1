"""`bridge up`, the embedded default: NATS, three services and the demo peer."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.client import BridgeClient
from tests.integration.harness import Process, free_port, free_rtp_range, wait_tcp

pytestmark = pytest.mark.timeout(90)

BRIDGE = str(Path(sys.executable).with_name("bridge"))


def up_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SIP_", "RTP_", "HTTP_", "NATS_", "PUBLIC_IP"))
    }
    rtp_min, rtp_max = free_rtp_range()
    env.update(
        HTTP_PORT=str(free_port()),
        NATS_URL=f"nats://127.0.0.1:{free_port()}",
        DATA_DIR=str(tmp / "data"),
        RTP_PORT_MIN=str(rtp_min),
        RTP_PORT_MAX=str(rtp_max),
        # Two media workers, whatever the cores: 10 RTP port pairs each, room for 5 calls.
        MEDIA_WORKERS="2",
        MAX_CALLS="5",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


async def test_demo_call_hears_itself_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    env = up_env(tmp_path)
    # cwd without a .env: the test must not read the developer's settings.
    up = Process("bridge-up", [BRIDGE, "up"], env, tmp_path / "up.log", cwd=tmp_path).start()
    port = int(env["HTTP_PORT"])
    try:
        # The supervisor prints the URL once every service takes work.
        deadline = time.monotonic() + 60
        while f"http://localhost:{port}" not in up.log():
            assert up.alive() and time.monotonic() < deadline, up.log()
            await asyncio.sleep(0.1)
        client = await BridgeClient(f"http://127.0.0.1:{port}").connect()
        try:
            await client.offer(codec="opus", destination=None)
            await client.accept_answer()
            await client.expect("connected", 20)
            await asyncio.sleep(1.0)
            client.clear_audio()
            await asyncio.sleep(2.0)
            peak, _ = client.dominant_frequency()
            assert abs(peak - 1000) < 40, f"no echo from the demo peer:\n{up.log()}"
            await client.hangup()
            await client.expect("ended")
        finally:
            await client.close()
        assert "demo" in up.log()
        assert re.search(r"media worker \S+-w1 ready", up.log()), up.log()
    finally:
        code = up.stop(signal.SIGINT, timeout=20)
    assert code == 0, up.log()
    # Nothing left behind: the NATS port is free again.
    with pytest.raises(OSError):
        wait_tcp(int(env["NATS_URL"].rsplit(":", 1)[1]), 0.5)


def test_bad_setting_gives_one_line_and_non_zero_exit(tmp_path: Path) -> None:
    env = up_env(tmp_path, SIP_TRUNK_HOST="sip.example.com", SIP_TRUNK_PORT="fifty")
    result = subprocess.run(
        [BRIDGE, "up"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "SIP_TRUNK_PORT" in lines[0], result.stderr
