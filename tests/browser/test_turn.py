"""A browser that may only relay: Debian coturn with the TURN REST API (``use-auth-secret``).

Signaling mints the page a short-lived credential in ``/config.json`` from
``TURN_SECRET``; the page, forced to ``iceTransportPolicy: "relay"`` by
``?relay=1``, reaches the media worker only through coturn, and the demo
peer's echo comes back that way.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import async_playwright, expect

from services.common.access import load_access
from services.signaling.tokens import mint
from tests.browser.chromium import launch
from tests.integration.conftest import SipagentFactory, Stack, start_stack
from tests.integration.harness import Process, free_rtp_range, free_udp_port, require_tool
from tests.integration.peers import demo_peer

__all__ = ["demo_peer"]

pytestmark = pytest.mark.timeout(120)

KEY = "turn-page:" + "4d" * 20
TURN_SECRET = "coturn-shared-" + "9c" * 16
REALM = "bridge.test"


def start_coturn(tmp: Path) -> tuple[Process, int]:
    """coturn on 127.0.0.1 with free ports, checking TURN REST credentials; its port."""
    port = free_udp_port()
    relay_min, relay_max = free_rtp_range(20)
    argv = [
        require_tool("turnserver"),
        "-n",  # no configuration file
        "--listening-ip=127.0.0.1",
        "--relay-ip=127.0.0.1",
        f"--listening-port={port}",
        f"--min-port={relay_min}",
        f"--max-port={relay_max}",
        "--use-auth-secret",
        f"--static-auth-secret={TURN_SECRET}",
        f"--realm={REALM}",
        "--fingerprint",
        "--no-tls",
        "--no-dtls",
        "--no-cli",
        "--allow-loopback-peers",  # the media worker's candidates are on 127.0.0.1
        f"--userdb={tmp / 'turndb'}",
        f"--pidfile={tmp / 'turnserver.pid'}",
        "--log-file=stdout",
        "--simple-log",
        "--verbose",
    ]
    process = Process("coturn", argv, {"PATH": "/usr/bin:/bin"}, tmp / "coturn.log").start()
    deadline = time.monotonic() + 15
    while f"UDP listener opened on: 127.0.0.1:{port}" not in process.log():
        if not process.alive() or time.monotonic() > deadline:
            process.stop()
            pytest.fail(f"coturn did not start:\n{process.log()}")
        time.sleep(0.05)
    return process, port


@pytest.fixture(scope="module")
def coturn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Process, int]]:
    process, port = start_coturn(tmp_path_factory.mktemp("coturn"))
    yield process, port
    process.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, coturn: tuple[Process, int]) -> Iterator[Stack]:
    """The usual stack with tokens required and TURN credentials for the page."""
    yield from start_stack(
        tmp_path_factory.mktemp("turn"),
        AUTH="required",
        CLIENT_TOKEN_SECRET=KEY,
        TURN_SECRET=TURN_SECRET,
        TURN_URLS=f"turn:127.0.0.1:{coturn[1]}?transport=udp",
        TURN_TTL="600",
    )


def token(sub: str) -> str:
    return mint(load_access({"CLIENT_TOKEN_SECRET": KEY}, "127.0.0.1"), sub, 300, dst=["+1*"])


def config(base_url: str, query: str = "", **headers: str) -> dict[str, Any]:
    request = urllib.request.Request(f"{base_url}/config.json{query}", headers=headers)
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.headers["Cache-Control"] == "no-store"
        body: dict[str, Any] = json.load(response)
        return body


def test_turn_credentials_go_only_to_a_valid_token(
    stack: Stack, coturn: tuple[Process, int]
) -> None:
    anonymous = config(stack.base_url)
    assert anonymous["auth"] is True
    assert anonymous["ice_servers"] == [] and "ice_expires" not in anonymous
    forged = config(stack.base_url, Authorization="Bearer " + token("eve")[:-4] + "AAAA")
    assert forged["ice_servers"] == []

    for got in (
        config(stack.base_url, Authorization=f"Bearer {token('alice')}"),
        config(stack.base_url, f"?token={token('alice')}"),
    ):
        (server,) = got["ice_servers"]
        assert server["urls"] == [f"turn:127.0.0.1:{coturn[1]}?transport=udp"]
        expiry, _, identity = server["username"].partition(":")
        assert identity == "alice"
        assert int(expiry) == got["ice_expires"]
        assert 590 <= int(expiry) - time.time() <= 610  # TURN_TTL
        digest = hmac.new(TURN_SECRET.encode(), server["username"].encode(), hashlib.sha1)
        assert base64.b64decode(server["credential"]) == digest.digest()
        assert got["ice_transport_policy"] == "all"
    assert TURN_SECRET not in stack.full_logs()


SELECTED_PAIR = """
async () => {
  const pc = window.bridgeCall;
  if (!pc) return null;
  const stats = await pc.getStats();
  let pair = null;
  for (const report of stats.values()) {
    if (report.type === "transport" && report.selectedCandidatePairId) {
      pair = stats.get(report.selectedCandidatePairId);
    }
  }
  let audio = null;
  for (const report of stats.values()) {
    if (report.type === "inbound-rtp" && report.kind === "audio") {
      audio = {packets: report.packetsReceived, energy: report.totalAudioEnergy ?? 0};
    }
  }
  if (!pair) return {audio};
  const local = stats.get(pair.localCandidateId);
  return {
    audio,
    state: pair.state,
    local: local ? local.candidateType : null,
    relayProtocol: local ? local.relayProtocol : null,
  };
}
"""


async def test_a_relay_only_browser_connects_through_coturn(
    stack: Stack,
    sipagent: SipagentFactory,
    demo_peer: int,
    coturn: tuple[Process, int],
    tmp_path: Path,
) -> None:
    sipagent(demo_peer)
    async with async_playwright() as pw:
        browser = await launch(pw, tmp_path)
        try:
            page = await browser.new_page()
            await page.goto(f"{stack.base_url}/?relay=1#token={token('alice')}")
            await page.fill("#destination", "+15551234567")
            await page.click("#start")
            await expect(page.locator("#status")).to_contain_text("Connected", timeout=20000)
            rtc = await page.evaluate("window.bridge.rtcConfig")
            assert rtc["iceTransportPolicy"] == "relay"
            assert rtc["iceServers"][0]["username"].endswith(":alice")

            # Only relayed candidates went in the offer.
            offer = await page.evaluate("window.bridgeCall.localDescription.sdp")
            candidates = [line for line in offer.splitlines() if line.startswith("a=candidate")]
            assert candidates and all(" typ relay" in c for c in candidates), candidates

            await page.wait_for_function(
                "() => window.bridgeCall.connectionState === 'connected'", timeout=10000
            )
            first = await page.evaluate(SELECTED_PAIR)
            await asyncio.sleep(2.0)
            later = await page.evaluate(SELECTED_PAIR)
            assert later["local"] == "relay", later
            assert later["relayProtocol"] == "udp", later
            assert later["state"] == "succeeded", later
            # The echo of the page's tone comes back through the relay.
            assert first["audio"] is not None, first
            got = later["audio"]["packets"] - first["audio"]["packets"]
            assert got > 0.8 * 50 * 2, (first, later)
            assert later["audio"]["energy"] > first["audio"]["energy"], (first, later)

            await page.click("#hangup")
            await expect(page.locator("#status")).to_contain_text("Ended", timeout=10000)
        finally:
            await browser.close()
    coturn_log = coturn[0].log()
    # coturn checked the minted credential: an allocation for alice succeeded.
    assert ":alice>" in coturn_log and "ALLOCATE processed, success" in coturn_log, coturn_log[
        -4000:
    ]
    assert TURN_SECRET not in stack.full_logs()
