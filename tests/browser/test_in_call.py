"""A person at the page during a call: the keypad, the Hold button, and being held."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.async_api import async_playwright, expect

from tests.browser.chromium import call_from_page, launch
from tests.integration.conftest import SipagentFactory, Stack
from tests.integration.harness import Sipp
from tests.integration.peers import demo_peer

__all__ = ["demo_peer"]

pytestmark = pytest.mark.timeout(120)


async def test_keypad_digits_echo_back_and_hold_goes_to_the_peer(
    stack: Stack, sipagent: SipagentFactory, demo_peer: int, tmp_path: Path
) -> None:
    sipagent(demo_peer)
    async with async_playwright() as pw:
        browser = await launch(pw, tmp_path)
        try:
            page = await browser.new_page()
            await page.goto(stack.base_url)
            keypad = page.locator("#keypad button")
            await expect(keypad).to_have_count(12)
            await expect(page.locator("#keypad button[data-digit='5']")).to_be_disabled()
            await expect(page.locator("#hold")).to_be_disabled()

            await page.fill("#destination", "+15551234567")
            await page.click("#start")
            await expect(page.locator("#status")).to_contain_text("Connected", timeout=20000)

            # Keys pressed on the page come back from the echo peer as RFC 4733 events.
            for digit in "12#":
                await page.click(f"#keypad button[data-digit='{digit}']")
            received = page.locator("#dtmf-received")
            await expect(received).to_have_text("12#", timeout=10000)
            await page.keyboard.press("7")
            await expect(received).to_have_text("12#7", timeout=10000)
            await expect(page.locator("#dtmf-sent")).to_have_text("12#7")

            # Hold: a re-INVITE to the echo peer, shown once the peer accepted it.
            hold = page.locator("#hold")
            state = page.locator("#hold-state")
            await hold.click()
            await expect(state).to_have_text("On hold", timeout=10000)
            await expect(hold).to_have_text("Resume")

            await hold.click()
            await expect(state).to_be_hidden(timeout=10000)
            await expect(hold).to_have_text("Hold")

            # After the resume the media flows again: a key still comes back.
            await page.click("#keypad button[data-digit='9']")
            await expect(received).to_have_text("12#79", timeout=10000)
            await expect(page.locator("#status")).to_contain_text("Connected")

            await page.click("#hangup")
            await expect(page.locator("#status")).to_contain_text("Ended", timeout=10000)
            await expect(page.locator("#keypad button[data-digit='5']")).to_be_disabled()
            await page.screenshot(path=str(tmp_path / "in-call.png"))
        finally:
            await browser.close()


async def test_page_shows_when_the_other_side_holds(
    stack: Stack, sipagent: SipagentFactory, trunk: Callable[..., Sipp], tmp_path: Path
) -> None:
    sipp = trunk("far_end_hold_until_bye.xml")
    sipagent(sipp.port)
    async with async_playwright() as pw:
        browser = await launch(pw, tmp_path)
        try:
            page = await call_from_page(browser, stack.base_url)

            # The trunk's sendonly re-INVITE: the page says so, and its own Hold is untouched.
            state = page.locator("#hold-state")
            await expect(state).to_have_text("Held by the other side", timeout=10000)
            await expect(page.locator("#hold")).to_have_text("Hold")

            await page.click("#hangup")
            await expect(page.locator("#status")).to_contain_text("Ended", timeout=10000)
            await expect(state).to_be_hidden()
            # sipp checked our recvonly answer and got the BYE.
            assert await sipp.wait(10) == 0, f"{sipp.messages()}\n{stack.logs()}"
        finally:
            await browser.close()
