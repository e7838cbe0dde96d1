"""A person on a call all day: timer, microphone level, Mute, devices and call quality.

The demo peer echoes the page's own microphone (a 440 Hz tone), so what the
page hears back is what the far end received: silence while muted.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, async_playwright, expect

from tests.browser.chromium import call_from_page, launch
from tests.integration.conftest import SipagentFactory, Stack
from tests.integration.peers import demo_peer

__all__ = ["demo_peer"]

pytestmark = pytest.mark.timeout(120)

INBOUND_ENERGY = """
async () => {
  const pc = window.bridgeCall;
  if (!pc) return null;
  for (const report of (await pc.getStats()).values()) {
    if (report.type === "inbound-rtp" && report.kind === "audio") {
      return {energy: report.totalAudioEnergy ?? 0, packets: report.packetsReceived,
              level: report.audioLevel ?? 0};
    }
  }
  return null;
}
"""

WINDOW = 2.0
"Seconds of echo measured per window."


async def echo_energy(page: Page) -> tuple[float, int]:
    """The echo's audio energy and packets over ``WINDOW`` seconds."""
    first: dict[str, Any] = await page.evaluate(INBOUND_ENERGY)
    await asyncio.sleep(WINDOW)
    last: dict[str, Any] = await page.evaluate(INBOUND_ENERGY)
    assert first is not None and last is not None, "no inbound audio"
    return last["energy"] - first["energy"], last["packets"] - first["packets"]


async def test_timer_level_mute_devices_and_quality_on_a_call(
    stack: Stack, sipagent: SipagentFactory, demo_peer: int, tmp_path: Path
) -> None:
    sipagent(demo_peer)
    async with async_playwright() as pw:
        browser = await launch(pw, tmp_path)
        try:
            # A phone-sized screen: everything below is still there and usable.
            page = await browser.new_page(viewport={"width": 375, "height": 740})
            await page.goto(stack.base_url)
            await expect(page.get_by_label("Microphone", exact=True)).to_be_visible()
            await expect(page.get_by_role("button", name="Mute")).to_be_disabled()
            await expect(page.get_by_role("button", name="Receive calls")).to_be_visible()
            # Nothing sticks out sideways.
            assert await page.evaluate("document.documentElement.scrollWidth") <= 375
            await page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
            await page.close()

            page = await call_from_page(browser, stack.base_url)

            # Device pickers: the fake devices, named once the microphone was granted.
            microphones = page.locator("#mic-select option")
            await expect(microphones.nth(1)).to_be_attached(timeout=5000)
            assert "Fake" in (await microphones.nth(1).text_content() or "")
            await expect(page.get_by_label("Speaker")).to_be_visible()

            # The call timer counts.
            timer = page.locator("#timer")
            await expect(timer).to_have_text(re.compile(r"^0:0[2-9]$"), timeout=10000)

            # The level meter moves with the tone.
            await page.wait_for_function("() => window.bridge.level > 0.05", timeout=5000)
            assert float(await page.locator("#mic-level").get_attribute("value") or 0) >= 0

            # Quality from the media worker's stats: one word, numbers on demand.
            grade = page.locator("#quality-grade")
            await expect(grade).to_have_text(re.compile("^(Good|Fair|Poor)$"), timeout=15000)
            await expect(page.locator("#q-browser-codec")).to_be_hidden()
            await page.click("#quality-details summary")
            await expect(page.locator("#q-browser-codec")).to_have_text(re.compile(r"\w+"))
            await expect(page.locator("#q-browser-mos")).to_have_text(re.compile(r"^\d\.\d$"))
            await expect(page.locator("#q-path")).to_contain_text("Audio")
            assert await page.evaluate("window.bridge.stats.browser.mos") >= 1

            # The echo carries the tone before Mute.
            heard, packets = await echo_energy(page)
            assert heard > 1e-4 and packets > 50, (heard, packets)

            mute = page.get_by_role("button", name="Mute")
            await mute.click()
            await expect(page.locator("#mute")).to_have_attribute("aria-pressed", "true")
            await expect(page.locator("#mute")).to_have_text("Unmute")
            await page.wait_for_function("() => window.bridge.level < 0.01", timeout=5000)
            await asyncio.sleep(0.5)  # what was in flight comes back first
            muted, muted_packets = await echo_energy(page)
            # The far end got silence (or nothing): its echo has no energy.
            assert muted < heard / 100, (heard, muted, muted_packets)

            await page.locator("#mute").click()
            await expect(page.locator("#mute")).to_have_attribute("aria-pressed", "false")
            await asyncio.sleep(0.5)
            again, _ = await echo_energy(page)
            assert again > heard / 4, (heard, again)

            # The keyboard alone: Mute is a real button in the tab order.
            await page.locator("#mute").focus()
            await page.keyboard.press("Enter")
            await expect(page.locator("#mute")).to_have_attribute("aria-pressed", "true")
            await page.keyboard.press("Space")
            await expect(page.locator("#mute")).to_have_attribute("aria-pressed", "false")

            await page.click("#hangup")
            await expect(page.locator("#status")).to_contain_text("Ended", timeout=10000)
            await expect(timer).to_be_hidden()
            await expect(page.locator("#mute")).to_be_disabled()
            await page.screenshot(path=str(tmp_path / "call-controls.png"), full_page=True)
        finally:
            await browser.close()
