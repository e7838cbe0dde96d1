"""A call longer than ICE consent's 30 s: Debian Chromium stays connected and keeps hearing.

Chromium checks consent to send every few seconds and stops after 30 s
without an answer (RFC 7675); the bridge's ICE agent must answer those checks
while its media path takes the SRTP packets off the same connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import async_playwright, expect

from tests.browser.chromium import call_from_page, launch
from tests.integration.conftest import SipagentFactory, Stack
from tests.integration.harness import Sipp

pytestmark = pytest.mark.timeout(120)

CALL_SECONDS = 42.0
"Past consent's 30 s expiry, with margin (RFC 7675 section 5.1)."
WINDOW_START = 35.0
"When the last audio window opens; it closes at ``CALL_SECONDS``."

PAGE_STATE = """
() => {
  const pc = window.bridgeCall;
  return {
    state: window.bridge.state,
    status: document.getElementById("status").textContent,
    connection: pc ? pc.connectionState : null,
    ice: pc ? pc.iceConnectionState : null,
  };
}
"""

MEDIA_STATS = """
async () => {
  const pc = window.bridgeCall;
  if (!pc) return null;
  const stats = await pc.getStats();
  const out = {audio: null, pair: null};
  let pairId = null;
  for (const report of stats.values()) {
    if (report.type === "transport" && report.selectedCandidatePairId) {
      pairId = report.selectedCandidatePairId;
    }
  }
  for (const report of stats.values()) {
    if (report.type === "inbound-rtp" && report.kind === "audio") {
      out.audio = {
        packetsReceived: report.packetsReceived,
        packetsLost: report.packetsLost,
        audioLevel: report.audioLevel ?? 0,
        totalAudioEnergy: report.totalAudioEnergy ?? 0,
      };
    }
    if (report.type === "candidate-pair" && report.id === pairId) {
      out.pair = {
        state: report.state,
        requestsReceived: report.requestsReceived ?? 0,
        responsesReceived: report.responsesReceived ?? 0,
        consentRequestsSent: report.consentRequestsSent ?? 0,
      };
    }
  }
  return out;
}
"""


async def media_stats(page: Any) -> dict[str, Any]:
    stats = await page.evaluate(MEDIA_STATS)
    assert stats is not None and stats["audio"] is not None, f"no inbound audio: {stats}"
    return dict(stats)


async def test_call_outlives_ice_consent_expiry_and_keeps_its_audio(
    stack: Stack, sipagent: SipagentFactory, trunk: Callable[..., Sipp], tmp_path: Path
) -> None:
    # An echo trunk that also answers the SIP agent's in-dialog OPTIONS keep-alive
    # (every 30 s by default): challenge_echo_bye.xml would abort the call on it.
    sipp = trunk("answer_echo_long_call.xml")
    sipagent(sipp.port)
    async with async_playwright() as pw:
        browser = await launch(pw, tmp_path)
        try:
            page = await call_from_page(browser, stack.base_url)
            status = page.locator("#status")
            # The page says Connected on the bridge's word; its own DTLS may finish a
            # moment later. From then on, nothing may waver.
            await page.wait_for_function(
                "() => window.bridgeCall && window.bridgeCall.connectionState === 'connected'",
                timeout=5000,
            )
            loop = asyncio.get_running_loop()
            connected_at = loop.time()

            # Look at the page once a second for the whole call: it must never waver.
            seen: list[tuple[float, dict[str, Any]]] = []
            window: dict[str, Any] | None = None
            while (elapsed := loop.time() - connected_at) < CALL_SECONDS:
                seen.append((round(elapsed, 1), await page.evaluate(PAGE_STATE)))
                if window is None and elapsed >= WINDOW_START:
                    window = await media_stats(page)
                await asyncio.sleep(min(1.0, max(0.0, CALL_SECONDS - elapsed)))
            assert window is not None
            end = await media_stats(page)
            last = await page.evaluate(PAGE_STATE)

            wavered = [
                (t, s)
                for t, s in seen
                if (s["state"], s["connection"]) != ("connected", "connected")
                or s["ice"] not in ("connected", "completed")
                or "Connected" not in s["status"]
            ]
            assert not wavered, f"the call did not stay connected: {wavered}\n{stack.logs()}"
            assert last["state"] == "connected" and last["connection"] == "connected", last
            await expect(status).to_contain_text("Connected")

            # The echo of the page's own microphone still arrives, and is not silence.
            seconds = CALL_SECONDS - WINDOW_START
            got = end["audio"]["packetsReceived"] - window["audio"]["packetsReceived"]
            assert got > 0.8 * 50 * seconds, (
                f"{got} packets in the last {seconds:.0f} s: {window} -> {end}\n{stack.logs()}"
            )
            energy = end["audio"]["totalAudioEnergy"] - window["audio"]["totalAudioEnergy"]
            assert energy > 0 and end["audio"]["audioLevel"] > 0, (window, end)
            # Consent is still being granted: the bridge answered Chromium's checks lately.
            assert window["pair"] is not None and end["pair"] is not None, (window, end)
            assert end["pair"]["state"] == "succeeded", end
            answered = end["pair"]["responsesReceived"] - window["pair"]["responsesReceived"]
            assert answered > 0, f"no consent check answered in the last window: {window} {end}"

            await page.click("#hangup")
            assert await sipp.wait(10) == 0, f"trunk did not get BYE:\n{sipp.messages()}"
            await expect(status).to_contain_text("Ended", timeout=10000)
        finally:
            await browser.close()
