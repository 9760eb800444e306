"""The whole job loop in headless Chromium on the real stack (Kafka, Redis, PostgreSQL, the
dispatcher and presence): a kiosk posts; the worker's phone gets the offer with its note and
accepts; the phone says hired, with the details; the station marks the worker arrived, then
done, on its board; the worker is back in the pool and gets the next offer.

With ``GIG_SCREENSHOTS=docs/screens`` it saves the screenshots shown in the docs."""

from __future__ import annotations

import uuid

import pytest
from playwright.async_api import Browser, Page, expect

from consumers.services import run_dispatcher, run_presence
from gateway.serve import Running
from infra.settings import Settings
from tests.conftest import running
from tests.gateway.conftest import MARKET, PHONE, Recording, snap

pytestmark = pytest.mark.e2e
NOTE = "修水管，带工具 fix a leaking pipe, bring tools"
CONTACT = "0731-8888 6666"
WAIT_MS = 30_000


async def worker_checks_in(page: Page, url: str, worker: str, *skills: str) -> None:
    """Log in on the worker page and check in at the kiosk's market with ``skills``."""
    await page.goto(f"{url}/worker")
    await page.fill("#worker-id", worker)
    await page.click("#dev-login-btn")
    await expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    for skill in skills:
        await page.locator(f'#skills input[value="{skill}"]').check()
    await page.fill("#market", MARKET)
    await page.click("#checkin-btn")
    await expect(page.locator("#checkin-state")).to_have_attribute("data-state", "checked-in")


async def kiosk_posts(page: Page, skill: str, note: str = "") -> str:
    """Post one worker for ``skill``; the request id the page shows."""
    await page.select_option("#skill", skill)
    await page.fill("#headcount", "1")
    await page.fill("#note", note)
    await page.fill("#contact", CONTACT)
    shown = page.locator("#request-id")
    before = await shown.inner_text()
    await page.click("#post-btn")
    await expect(shown).not_to_have_text(before, timeout=WAIT_MS)
    return await shown.inner_text()


async def test_the_job_loop_from_post_to_back_in_the_pool(
    gw_settings: Settings, gateway: tuple[Running, Recording], browser: Browser
) -> None:
    url = gateway[0].url
    worker = f"W-{uuid.uuid4().hex[:8]}"
    async with running((run_presence, gw_settings), (run_dispatcher, gw_settings)):
        phone = await (await browser.new_context(viewport=PHONE, is_mobile=True)).new_page()
        await worker_checks_in(phone, url, worker, "plumber", "tiler")
        kiosk = await (
            await browser.new_context(viewport={"width": 1024, "height": 900})
        ).new_page()
        await kiosk.goto(f"{url}/kiosk")
        await kiosk.fill("#market", MARKET)
        await kiosk.click("#dev-login-btn")
        await expect(kiosk.locator("#who-text")).to_contain_text(MARKET)
        # Presence may take a moment: post once the worker is surely in the index.
        await phone.wait_for_timeout(500)

        # 1-2. The kiosk posts; the phone gets the offer with the employer's note.
        first = await kiosk_posts(kiosk, "plumber", NOTE)
        offer = phone.locator(".offer").first
        await expect(offer).to_contain_text(NOTE, timeout=WAIT_MS)
        await expect(offer).to_contain_text("长沙市第1零工市场")
        await phone.evaluate("window.scrollTo(0, 0)")
        await snap(phone, "loop-1-offer", full_page=False)

        # 3. The worker accepts and is told they are hired, with the details.
        await offer.locator("button.accept").click()
        job = phone.locator("#job-box")
        await expect(job).to_be_visible(timeout=WAIT_MS)
        await expect(job).to_contain_text(NOTE)
        await expect(job).to_contain_text(CONTACT)
        await expect(job).to_contain_text("Changsha Gig Market 1")
        await snap(phone, "loop-2-hired", full_page=False)

        # 4. The station marks the worker arrived, then done, on its board.
        row = kiosk.locator(
            f'#board-list li[data-request="{first}"] li.job[data-worker="{worker}"]'
        )
        await expect(row).to_have_attribute("data-status", "hired", timeout=WAIT_MS)
        await row.locator('button[data-step="arrived"]').click()
        await expect(row).to_have_attribute("data-status", "arrived", timeout=WAIT_MS)
        await expect(job).to_have_attribute("data-status", "arrived", timeout=WAIT_MS)
        await snap(kiosk, "loop-3-kiosk-board")
        await row.locator('button[data-step="done"]').click()
        await expect(row).to_have_attribute("data-status", "done", timeout=WAIT_MS)
        await expect(phone.locator("#job-state")).to_contain_text(
            "back in the pool", timeout=WAIT_MS
        )
        await phone.evaluate("window.scrollTo(0, 0)")
        await snap(phone, "loop-4-done", full_page=False)

        # 5. Back in the pool: the next request is offered to the same worker, without a
        # new check-in.
        second = await kiosk_posts(kiosk, "tiler")
        nxt = phone.locator(f'.offer[data-offer-id="{second}:{worker}"]')
        await expect(nxt).to_be_visible(timeout=WAIT_MS)
        await snap(kiosk, "loop-5-kiosk-next")
