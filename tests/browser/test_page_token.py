"""The page where tokens are required: from the URL fragment, or typed into its field."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.async_api import async_playwright, expect

from services.common.access import load_access
from services.signaling.tokens import mint
from tests.browser.chromium import launch
from tests.integration.conftest import SipagentFactory, Stack, start_stack
from tests.integration.harness import Sipp
from tests.integration.test_call import CHALLENGE_401

pytestmark = pytest.mark.timeout(120)

KEY = "page:" + "5e" * 20


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The usual stack, with client tokens required."""
    yield from start_stack(
        tmp_path_factory.mktemp("secured"), AUTH="required", CLIENT_TOKEN_SECRET=KEY
    )


def token(sub: str) -> str:
    return mint(load_access({"CLIENT_TOKEN_SECRET": KEY}, "127.0.0.1"), sub, 300, dst=["+1*"])


async def test_the_token_comes_in_the_fragment_and_leaves_the_address_bar(
    stack: Stack,
    sipagent: SipagentFactory,
    trunk: Callable[..., Sipp],
    tmp_path: Path,
) -> None:
    sipp = trunk("challenge_echo_bye.xml", **CHALLENGE_401)
    sipagent(sipp.port)
    secret = token("alice")
    async with async_playwright() as pw:
        browser = await launch(pw, tmp_path)
        try:
            page = await browser.new_page()
            await page.goto(f"{stack.base_url}/#token={secret}")
            assert secret not in page.url  # removed at once: not bookmarked, not shared
            await expect(page.locator("#token-row")).to_be_hidden()
            await page.fill("#destination", "+15551234567")
            await page.click("#start")
            await expect(page.locator("#status")).to_contain_text("Connected", timeout=20000)
            await page.click("#hangup")
            await expect(page.locator("#status")).to_contain_text("Ended", timeout=10000)
        finally:
            await browser.close()
    assert await sipp.wait(10) == 0, sipp.messages()
    assert secret not in stack.full_logs()


async def test_without_a_token_the_page_says_so_and_takes_one(
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
            page = await browser.new_page()
            await page.goto(stack.base_url)
            field = page.locator("#token")
            await expect(field).to_be_visible()  # /config.json says tokens are required
            await expect(page.get_by_label("Access token")).to_have_attribute("type", "password")
            await page.fill("#destination", "+15551234567")
            await page.click("#start")
            status = page.locator("#status")
            await expect(status).to_contain_text("Error", timeout=10000)
            await expect(status).to_contain_text("token", timeout=1000)

            await field.fill(token("bob"))
            await page.click("#start")
            await expect(status).to_contain_text("Connected", timeout=20000)
            await page.click("#hangup")
            await expect(status).to_contain_text("Ended", timeout=10000)
        finally:
            await browser.close()
    assert await sipp.wait(10) == 0, sipp.messages()
