"""REGISTER toward sipp as registrar: digest, refresh, unregister on stop; what operators see."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tests.integration.conftest import SipagentFactory, Stack, TrunkFactory
from tests.integration.harness import TRUNK_PASSWORD, free_port, service_env

SCENARIO = "register_refresh_unregister.xml"


def registers(messages: str) -> list[str]:
    """Each REGISTER sipp received, as text."""
    blocks = re.split(r"\n(?=-+ [0-9-]+\s)", messages)
    return [block for block in blocks if "REGISTER sip:" in block and "received" in block]


def bridge(*args: str, nats_url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("bridge")), *args],
        env=service_env(nats_url),
        cwd=cwd,  # no .env of the repository
        capture_output=True,
        text=True,
        timeout=60,
    )


async def registrations_page(ops_port: int) -> list[dict[str, object]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{ops_port}/registrations") as response,
    ):
        assert response.status == 200
        data = await response.json()
    registrations: list[dict[str, object]] = data["registrations"]
    return registrations


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
async def test_register_refresh_show_and_unregister_on_stop(
    stack: Stack, sipagent: SipagentFactory, trunk: TrunkFactory, tmp_path: Path, stop: int
) -> None:
    sipp = trunk(SCENARIO)
    ops_port = free_port()
    process = sipagent(sipp.port, SIP_REGISTER="true", OPS_PORT=str(ops_port))

    # The refresh is granted an hour: wait for it, through the ops page.
    deadline = time.monotonic() + 30
    while True:
        shown = await registrations_page(ops_port)
        expires_at = shown[0].get("expires_at") if shown else None
        if isinstance(expires_at, float) and expires_at - time.time() > 600:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"no refreshed registration: {shown}\n{sipp.messages()}\n{process.log()}")
        await asyncio.sleep(0.2)
    (default,) = shown
    assert default["trunk"] == "default"
    assert default["state"] == "registered"
    assert default["status_code"] == 200
    assert default["registrar"] == f"127.0.0.1:{sipp.port}"
    assert default["aor"] == "sip:bridge@trunk.test"

    received = registers(sipp.messages())
    assert len(received) == 4, sipp.messages()  # 401, authorized; refresh: 401, authorized
    first, authorized, _, refreshed = received
    call_ids = {re.findall(r"Call-ID: (\S+)", text)[0] for text in received}
    assert len(call_ids) == 1  # one Call-ID across refreshes
    assert "Authorization: Digest" in authorized and "Authorization" not in first
    assert "Authorization: Digest" in refreshed

    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{ops_port}/metrics") as response,
    ):
        metrics = await response.text()
    assert 'bridge_registration_registered{trunk="default"} 1.0' in metrics

    cli = await asyncio.to_thread(
        bridge, "registrations", "--timeout", "1", nats_url=stack.nats_url, cwd=tmp_path
    )
    assert cli.returncode == 0, cli.stdout + cli.stderr
    (line,) = cli.stdout.splitlines()
    assert " default  registered  registrar=127.0.0.1:" in line
    assert "(last: 200 OK)" in line
    as_json = await asyncio.to_thread(
        bridge, "registrations", "--json", nats_url=stack.nats_url, cwd=tmp_path
    )
    (reply,) = json.loads(as_json.stdout)
    assert reply["registrations"][0]["state"] == "registered"

    # SIGTERM (drain) or SIGINT (stop now): the binding is removed before the process exits.
    assert process.stop(stop) == 0
    assert await sipp.wait(15) == 0, sipp.messages()
    received = registers(sipp.messages())
    assert len(received) == 6
    assert all("Expires: 0" in text for text in received[4:])
    assert all("Expires: 0" not in text for text in received[:4])
    assert TRUNK_PASSWORD not in process.log() + cli.stdout + cli.stderr + as_json.stdout


def test_registrations_without_a_sip_agent_exits_non_zero(stack: Stack, tmp_path: Path) -> None:
    result = bridge("registrations", "--timeout", "0.5", nats_url=stack.nats_url, cwd=tmp_path)
    assert result.returncode == 1
    assert "no SIP agent answered" in result.stderr


def test_registrations_without_nats_says_so(tmp_path: Path) -> None:
    result = bridge("registrations", nats_url="nats://127.0.0.1:1", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == "bridge registrations: cannot reach NATS at nats://127.0.0.1:1"
    assert result.stdout == ""
