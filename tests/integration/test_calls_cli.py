"""An operator's view of live calls: ``bridge calls``, ``GET /calls``, ``bridge calls hangup``.

A real ``bridge up`` (NATS with its locked bus, the three services, two media
workers, the demo echo peer as the trunk) and a real aiortc browser: the
command runs as the operator (the ``admin`` NATS user of ``bridge up``), as
people run it.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.client import BridgeClient
from tests.integration.harness import Process
from tests.integration.test_up import BRIDGE, up_env

pytestmark = pytest.mark.timeout(120)

STATS_WAIT = 20.0
"Media workers report a call's figures every 5 s; the first report may take that long."
# Figures that move while the call lasts: not compared between two reads.
MOVING = {"duration", "talking", "measured_at", "browser", "trunk_leg"}


async def bridge(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        BRIDGE,
        *args,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def listed(env: dict[str, str], cwd: Path) -> list[dict[str, Any]]:
    code, out, err = await bridge(env, cwd, "calls", "--json")
    assert code == 0, err
    calls: list[dict[str, Any]] = json.loads(out)
    return calls


async def measured_call(env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """The one live call, once its media worker has measured both legs."""
    deadline = time.monotonic() + STATS_WAIT
    while True:
        calls = await listed(env, cwd)
        if len(calls) == 1 and calls[0]["trunk_codec"] and calls[0]["state"] == "confirmed":
            return calls[0]
        assert time.monotonic() < deadline, f"no measured call listed: {calls}"
        await asyncio.sleep(0.5)


def ops_port(log: str) -> int:
    found = re.search(r"ops endpoints: .*\bsignaling http://127\.0\.0\.1:(\d+)", log)
    assert found, log
    return int(found.group(1))


async def start_up(tmp_path: Path, env: dict[str, str]) -> Process:
    up = Process("bridge-up", [BRIDGE, "up"], env, tmp_path / "up.log", cwd=tmp_path).start()
    deadline = time.monotonic() + 60
    while f"http://localhost:{env['HTTP_PORT']}" not in up.log():
        assert up.alive() and time.monotonic() < deadline, up.log()
        await asyncio.sleep(0.1)
    return up


async def test_live_call_is_listed_shown_on_ops_and_hung_up_by_the_operator(
    tmp_path: Path,
) -> None:
    env = up_env(tmp_path)
    up = await start_up(tmp_path, env)
    try:
        code, out, err = await bridge(env, tmp_path, "calls")
        assert (code, out.strip()) == (0, "no live calls"), err

        client = await BridgeClient(f"http://127.0.0.1:{env['HTTP_PORT']}").connect()
        try:
            await client.offer(codec="opus", destination=None)
            await client.accept_answer()
            await client.expect("connected", 20)

            call = await measured_call(env, tmp_path)
            assert call["direction"] == "outbound" and call["registered"] and call["measured"]
            assert call["browser_codec"] == "opus"
            assert call["trunk_codec"] in ("PCMU", "PCMA", "opus", "G722")
            passthrough = call["trunk_codec"] == call["browser_codec"]
            assert call["path"] == ("passthrough" if passthrough else "transcode")
            assert re.fullmatch(r".+-w[01]", call["media_id"]), call
            assert call["signaling_id"] and call["sipagent_id"]
            assert call["started_at"] and call["answered_at"] >= call["started_at"]
            assert call["duration"] > 0 and call["callee"]
            assert 1.0 <= call["browser"]["mos"] <= 4.5 and call["browser"]["packets_in"] > 0
            assert call["trunk_leg"]["codec"] == call["trunk_codec"]

            # The ops port of signaling serves the same list.
            url = f"http://127.0.0.1:{ops_port(up.log())}/calls"
            async with aiohttp.ClientSession() as http, http.get(url) as response:
                assert response.status == 200
                page = await response.json()
            assert [{k: v for k, v in c.items() if k not in MOVING} for c in page] == [
                {k: v for k, v in call.items() if k not in MOVING}
            ]

            # People get a table with the same call.
            code, out, err = await bridge(env, tmp_path, "calls")
            assert code == 0, err
            header, line = out.strip().splitlines()
            assert header.split()[:2] == ["CALL", "IDENTITY"]
            assert line.split()[0] == call["call_id"]
            assert f"opus/{call['trunk_codec']}" in line and "confirmed" in line

            # The operator ends it: the browser is told why, the trunk gets BYE.
            code, out, err = await bridge(env, tmp_path, "calls", "hangup", call["call_id"])
            assert code == 0, err
            assert call["call_id"] in out
            ended = await client.expect("ended", 10)
            assert ended["cause"] == "operator", ended
        finally:
            await client.close()

        deadline = time.monotonic() + 10
        while not re.search(r"demo call \S+ ended \(remote BYE\)", up.log()):
            assert time.monotonic() < deadline, f"the demo peer got no BYE:\n{up.log()}"
            await asyncio.sleep(0.1)

        # Gone from the registry and from media; hanging it up again says so.
        deadline = time.monotonic() + 10
        while await listed(env, tmp_path):
            assert time.monotonic() < deadline, "the ended call is still listed"
            await asyncio.sleep(0.2)
        code, out, err = await bridge(env, tmp_path, "calls", "hangup", call["call_id"])
        assert code == 1 and f"no live call {call['call_id']}" in err, (code, out, err)
        code, _, err = await bridge(env, tmp_path, "calls", "hangup", "not.a.call")
        assert code == 2 and "is not a call id" in err
        # Everything above ran on each user's own permissions.
        assert "violation" not in up.log().lower(), up.log()
    finally:
        stopped = up.stop(signal.SIGINT, timeout=20)
    assert stopped == 0, up.log()
