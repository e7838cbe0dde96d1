"""A person at the page during a call to the demo echo peer: the keypad and the Hold button."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from playwright.async_api import async_playwright, expect

from proto import subjects
from proto.events import AnyEvent, CallAnswered, HoldRequested, SessionUpdated
from services.common.bus import Bus
from tests.browser.chromium import launch
from tests.integration.conftest import SipagentFactory, Stack
from tests.integration.peers import demo_peer

__all__ = ["demo_peer"]

pytestmark = pytest.mark.timeout(120)


class BusWatch:
    """Reads the calls' events off NATS: the trunk's answer and the page's hold requests."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.answers: dict[str, str] = {}
        self.holds: asyncio.Queue[HoldRequested] = asyncio.Queue()

    @classmethod
    async def open(cls, url: str) -> BusWatch:
        watch = cls(await Bus.connect(url, "browser-test"))
        await watch.bus.subscribe(f"{subjects.PREFIX}.call.*.sipagent", watch._on_event)
        await watch.bus.subscribe(f"{subjects.PREFIX}.call.*.signaling", watch._on_event)
        return watch

    async def _on_event(self, event: AnyEvent) -> None:
        if isinstance(event, CallAnswered):
            self.answers[event.call_id] = event.answer_sdp
        elif isinstance(event, HoldRequested):
            await self.holds.put(event)

    async def next_hold(self) -> HoldRequested:
        async with asyncio.timeout(10):
            return await self.holds.get()

    async def session_updated(self, call_id: str, local: bool, remote: bool) -> None:
        """What the SIP agent says once a re-INVITE settled the hold state."""
        await self.bus.publish(
            subjects.call_events(call_id, "sipagent"),
            SessionUpdated(
                call_id=call_id,
                remote_sdp=self.answers[call_id],
                local_hold=local,
                remote_hold=remote,
            ),
        )


async def test_keypad_digits_echo_back_and_hold_state_shows(
    stack: Stack, sipagent: SipagentFactory, demo_peer: int, tmp_path: Path
) -> None:
    sipagent(demo_peer)
    watch = await BusWatch.open(stack.nats_url)
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

            # Hold: the page asks, and shows the state once the SIP side confirms it.
            hold = page.locator("#hold")
            state = page.locator("#hold-state")
            await hold.click()
            request = await watch.next_hold()
            assert request.held
            await expect(hold).to_have_text("Hold")  # not yet confirmed
            await watch.session_updated(request.call_id, local=True, remote=False)
            await expect(state).to_have_text("On hold", timeout=10000)
            await expect(hold).to_have_text("Resume")
            await watch.session_updated(request.call_id, local=True, remote=True)
            await expect(state).to_contain_text("Held by the other side", timeout=10000)

            await hold.click()
            resume = await watch.next_hold()
            assert not resume.held
            await watch.session_updated(request.call_id, local=False, remote=False)
            await expect(state).to_be_hidden(timeout=10000)
            await expect(hold).to_have_text("Hold")

            await page.click("#hangup")
            await expect(page.locator("#status")).to_contain_text("Ended", timeout=10000)
            await expect(page.locator("#keypad button[data-digit='5']")).to_be_disabled()
            await page.screenshot(path=str(tmp_path / "in-call.png"))
        finally:
            await browser.close()
            await watch.bus.close()
