"""Debian's Chromium for page tests: a fake microphone playing a tone, no prompts."""

from __future__ import annotations

import wave
from pathlib import Path
from typing import Any

import numpy as np
from playwright.async_api import Browser, Page, expect

from tests.integration.harness import require_tool


def write_tone(path: Path, seconds: float = 10.0, rate: int = 48000) -> None:
    t = np.arange(int(seconds * rate)) / rate
    pcm = (12000 * np.sin(2 * np.pi * 440 * t)).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())


async def launch(pw: Any, tmp_path: Path) -> Browser:
    """Chromium whose microphone plays a 440 Hz tone from a file in ``tmp_path``."""
    chromium = require_tool("chromium")
    microphone = tmp_path / "microphone.wav"
    write_tone(microphone)
    browser: Browser = await pw.chromium.launch(
        executable_path=chromium,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-audio-capture={microphone}",
            "--autoplay-policy=no-user-gesture-required",
            # ICE on 127.0.0.1 too: the bridge under test offers only loopback candidates.
            "--allow-loopback-in-peer-connection",
        ],
    )
    return browser


async def call_from_page(
    browser: Browser, base_url: str, destination: str = "+15551234567"
) -> Page:
    """A page of ``base_url`` whose Start Call to ``destination`` shows "Connected"."""
    page = await browser.new_page()
    await page.goto(base_url)
    await page.fill("#destination", destination)
    await page.click("#start")
    await expect(page.locator("#status")).to_contain_text("Connected", timeout=20000)
    return page
