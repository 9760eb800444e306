"""Both pages in headless Chromium: a kiosk posts, a worker's phone gets the offer and accepts
it, and the kiosk shows the request filled. Real Kafka, Redis, PostgreSQL and dispatcher."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from consumers.services import run_dispatcher, run_presence
from gateway.serve import Running
from infra.settings import Settings
from tests.conftest import running
from tests.gateway.conftest import MARKET, Recording

pytestmark = pytest.mark.e2e
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not shutil.which(CHROMIUM):
        pytest.skip("Chromium is not installed (make system-deps installs it)")
    # Playwright gives each launch a fresh temporary profile (its own --user-data-dir).
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            await b.close()


async def worker_checks_in(page: Page, url: str, worker: str) -> None:
    await page.goto(f"{url}/worker")
    await page.fill("#worker-id", worker)
    await page.click("#dev-login-btn")
    await expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    await page.fill("#market", MARKET)
    await page.select_option("#skill", "tiler")
    await page.click("#checkin-btn")
    await expect(page.locator("#checkin-state")).to_have_attribute("data-state", "checked-in")


async def test_kiosk_and_worker_pages(
    gw_settings: Settings, gateway: tuple[Running, Recording], browser: Browser
) -> None:
    url = gateway[0].url
    worker = f"W-{uuid.uuid4().hex[:8]}"
    async with running((run_presence, gw_settings), (run_dispatcher, gw_settings)):
        phone = await (await browser.new_context()).new_page()
        await worker_checks_in(phone, url, worker)
        kiosk = await (await browser.new_context()).new_page()
        await kiosk.goto(f"{url}/kiosk")
        await kiosk.fill("#market", MARKET)
        await kiosk.click("#dev-login-btn")
        await kiosk.select_option("#skill", "tiler")
        await kiosk.fill("#headcount", "1")
        # Presence may take a moment: post once the worker is surely in the index.
        await phone.wait_for_timeout(500)
        await kiosk.click("#post-btn")
        accept = phone.locator(".offer button.accept")
        await expect(accept).to_be_visible(timeout=20_000)
        await accept.click()
        status = kiosk.locator("#status")
        await expect(status).to_have_attribute("data-status", "filled", timeout=20_000)
        await expect(status).to_contain_text("已招满")
        await expect(kiosk.locator("#assignments")).to_contain_text(worker)
