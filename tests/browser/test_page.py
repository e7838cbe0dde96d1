"""A person at the page: Debian Chromium, a fake microphone, the real page."""

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
from tests.integration.test_call import CHALLENGE_401

pytestmark = pytest.mark.timeout(120)

INBOUND_AUDIO = """
async () => {
  const pc = window.bridgeCall;
  if (!pc) return null;
  const stats = await pc.getStats();
  for (const report of stats.values()) {
    if (report.type === "inbound-rtp" && report.kind === "audio") {
      return {packetsReceived: report.packetsReceived, audioLevel: report.audioLevel ?? 0};
    }
  }
  return null;
}
"""


async def inbound(page: Any, timeout: float = 5.0) -> dict[str, float]:
    # "Connected" follows the SIP answer; the first RTP packet may come a moment later.
    deadline = asyncio.get_running_loop().time() + timeout
    while (stats := await page.evaluate(INBOUND_AUDIO)) is None:
        assert asyncio.get_running_loop().time() < deadline, "no inbound audio on the page"
        await asyncio.sleep(0.1)
    return dict(stats)


async def test_start_call_hear_trunk_and_hang_up(
    stack: Stack,
    sipagent: SipagentFactory,
    trunk: Callable[..., Sipp],
    tmp_path: Path,
) -> None:
    sipp = trunk("challenge_echo_bye.xml", **CHALLENGE_401)
    sipagent(sipp.port)

    async with async_playwright() as pw:
        browser = await launch(pw, tmp_path)
        try:
            page = await call_from_page(browser, stack.base_url)
            status = page.locator("#status")

            first = await inbound(page)
            await asyncio.sleep(2.0)
            later = await inbound(page)
            assert later["packetsReceived"] > first["packetsReceived"] + 20, (first, later)
            assert later["audioLevel"] > 0, later

            await page.click("#hangup")
            assert await sipp.wait(10) == 0, f"trunk did not get BYE:\n{sipp.messages()}"
            await expect(status).to_contain_text("Ended", timeout=10000)
            await page.screenshot(path=str(tmp_path / "page.png"))
        finally:
            await browser.close()
