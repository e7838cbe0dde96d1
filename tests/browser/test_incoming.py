"""A person at the page receiving calls: sipp, as the trunk, calls alice; Chromium rings.

The page listens as ``alice`` (tokens are off), rings with the caller's name
and number, and Accept (from the keyboard: focus is on it when the call rings)
connects the call; sipp echoes the page's tone, so Mute is heard as silence.
Decline gives the trunk 486; CANCEL from the trunk stops the ringing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, async_playwright, expect

from tests.browser.chromium import launch
from tests.integration.conftest import SipagentFactory, Stack
from tests.integration.test_inbound import CALLER, CALLER_NAME, DID, Inbound

pytestmark = pytest.mark.timeout(120)

ECHO_ENERGY = """
async () => {
  const pc = window.bridgeCall;
  if (!pc) return null;
  for (const report of (await pc.getStats()).values()) {
    if (report.type === "inbound-rtp" && report.kind === "audio") {
      return {energy: report.totalAudioEnergy ?? 0, packets: report.packetsReceived};
    }
  }
  return null;
}
"""


@pytest.fixture
def inbound(sipagent: SipagentFactory, tmp_path: Path) -> Iterator[Inbound]:
    setup = Inbound(sipagent, tmp_path)
    setup.start_agent()
    yield setup
    setup.stop()


@pytest.fixture
async def page(tmp_path: Path, stack: Stack) -> AsyncIterator[Page]:
    """The page, receiving calls as alice."""
    async with async_playwright() as pw:
        browser = await launch(pw, tmp_path)
        try:
            page = await browser.new_page()
            await page.goto(stack.base_url)
            await page.get_by_label("Receive calls as").fill("alice")
            await page.get_by_role("button", name="Receive calls").click()
            await expect(page.locator("#listen-state")).to_have_text(
                "Receiving calls as alice", timeout=10000
            )
            await expect(page.locator("#listen")).to_have_attribute("aria-pressed", "true")
            yield page
        finally:
            await browser.close()


async def rings(page: Page) -> None:
    """The incoming panel shows the call, rings, and has the keyboard's focus on Accept."""
    panel = page.locator("#incoming")
    await expect(panel).to_be_visible(timeout=15000)
    await expect(page.locator("#incoming-from")).to_have_text(CALLER)
    await expect(page.locator("#incoming-name")).to_have_text(CALLER_NAME)
    await expect(page.locator("#incoming-to")).to_have_text(DID)
    await expect(page.locator("#accept")).to_be_focused()
    await expect(page.locator("#announcer")).to_contain_text(f"Incoming call from {CALLER_NAME}")
    assert await page.evaluate("window.bridge.rings.ringer.ringing")


async def echo(page: Page, seconds: float = 2.0) -> float:
    first: dict[str, Any] = await page.evaluate(ECHO_ENERGY)
    await asyncio.sleep(seconds)
    last: dict[str, Any] = await page.evaluate(ECHO_ENERGY)
    assert first is not None and last is not None, "no inbound audio"
    assert last["packets"] - first["packets"] > 0.5 * 50 * seconds, (first, last)
    return float(last["energy"] - first["energy"])


async def test_the_page_rings_enter_accepts_audio_flows_and_mute_silences_the_trunk(
    stack: Stack, inbound: Inbound, page: Page
) -> None:
    sipp = inbound.call("call_in_answered.xml")
    await rings(page)

    await page.keyboard.press("Enter")  # Accept, from the keyboard
    await expect(page.locator("#status")).to_contain_text("Connected", timeout=20000)
    await expect(page.locator("#incoming")).to_be_hidden()
    assert not await page.evaluate("window.bridge.rings.ringer.ringing")
    await page.wait_for_function(
        "() => window.bridgeCall && window.bridgeCall.connectionState === 'connected'",
        timeout=10000,
    )

    heard = await echo(page)
    assert heard > 1e-4, heard
    await page.click("#mute")
    await asyncio.sleep(0.5)
    # The trunk received silence: its echo has no energy.
    assert await echo(page) < heard / 100

    await page.click("#hangup")
    await expect(page.locator("#status")).to_contain_text("Ended", timeout=10000)
    assert await sipp.wait(10) == 0, f"the trunk got no BYE:\n{sipp.messages()}"
    await expect(page.locator("#listen-state")).to_have_text("Receiving calls as alice")


async def test_decline_gives_the_trunk_486(stack: Stack, inbound: Inbound, page: Page) -> None:
    sipp = inbound.call("call_in_refused.xml", status="486")
    await rings(page)
    await page.get_by_role("button", name="Decline").click()
    await expect(page.locator("#incoming")).to_be_hidden()
    assert not await page.evaluate("window.bridge.rings.ringer.ringing")
    assert await sipp.wait(15) == 0, sipp.messages()
    await expect(page.locator("#listen-state")).to_have_text("Receiving calls as alice")


async def test_cancel_from_the_trunk_stops_the_ringing(
    stack: Stack, inbound: Inbound, page: Page
) -> None:
    sipp = inbound.call("call_in_cancel.xml", ring_ms="2000")
    await rings(page)
    await expect(page.locator("#incoming")).to_be_hidden(timeout=15000)
    assert not await page.evaluate("window.bridge.rings.ringer.ringing")
    await expect(page.locator("#status")).to_contain_text(f"Missed call from {CALLER_NAME}")
    assert await sipp.wait(15) == 0, sipp.messages()
