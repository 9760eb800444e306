"""The worker page on a phone (390×844, headless Chromium) over the real gateway, and the
worker socket passing on what the fan-out pushes.

- check-in by the browser's position and by the market picker, with two skills;
- every button, input and skill label at least 44 px tall; errors in red, apart from info;
- an offer with its facts, "you are hired" with the job's, the job's steps, "back in the pool";
- a reload restores login, check-in, offers and the job; offline shows a banner, and the page
  reconnects without showing anything twice.

Offers, Hired and JobChanged are put on the worker's channel here as the fan-out would, so the
page is tested apart from the dispatcher (the whole loop is tests/gateway/test_browser.py's)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, ViewportSize, expect
from websockets.asyncio.client import connect

from dispatch.geo import haversine_km
from gateway.app import Parts
from gateway.market_search import registry
from gateway.serve import Running
from infra.settings import Settings
from schemas import events as ev
from tests.gateway.conftest import MARKET, Recording, token
from tests.gateway.conftest import snap as docs_snap

PHONE: ViewportSize = {"width": 390, "height": 844}
ERROR_RED = "rgb(180, 35, 24)"  # style.css .error
MIN_TAP_PX = 44
HERE = (113.26195, 28.20346)  # lon, lat: a few metres from G4301001
NOTE = "照顾老人，早8点到晚5点 care for an elderly person"


async def snap(page: Page, name: str) -> None:
    await docs_snap(page, f"worker-{name}")


def parts(running: Running) -> Parts:
    p: Parts = running.app.state.parts
    return p


async def push(running: Running, worker: str, *messages: ev.Message) -> None:
    """What the fan-out does: each message on the worker's channel."""
    p = parts(running)
    channel = p.keys.worker_channel(worker)
    await p.hub.publish([(channel, m.model_dump_json()) for m in messages])


@pytest.fixture
async def phone(browser: Browser) -> AsyncIterator[BrowserContext]:
    """A phone that lets the page know where it is."""
    context = await browser.new_context(
        viewport=PHONE, has_touch=True, locale="zh-CN",
        geolocation={"longitude": HERE[0], "latitude": HERE[1]},
        permissions=["geolocation", "notifications"],
    )  # fmt: skip
    yield context
    await context.close()


async def logged_in(context: BrowserContext, url: str, worker: str) -> Page:
    page = await context.new_page()
    await page.goto(f"{url}/worker")
    await page.fill("#worker-id", worker)
    await page.click("#dev-login-btn")
    await expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    return page


async def tick_only(page: Page, *skills: str) -> None:
    for box in await page.locator("#skills input").all():
        want = await box.get_attribute("value") in skills
        if await box.is_checked() != want:
            await box.click()


async def check_ins(recording: Recording, worker: str) -> list[ev.WorkerCheckedIn]:
    sent = [o.message for o in recording.sent if isinstance(o.message, ev.WorkerCheckedIn)]
    return [m for m in sent if m.worker_id == worker]


async def too_small(page: Page) -> list[str]:
    """Every visible button, text input, skill label and phone link under 44 px tall."""
    found: list[str] = await page.evaluate(
        """(min) => [...document.querySelectorAll(
              'button, input:not([type=checkbox]), label.check, a.tel')]
            .filter((e) => e.offsetParent !== null && e.getBoundingClientRect().height < min)
            .map((e) => (e.id || e.className || e.tagName) + ':'
              + e.getBoundingClientRect().height)""",
        MIN_TAP_PX,
    )
    return found


async def colour(page: Page, selector: str) -> str:
    value: str = await page.locator(selector).evaluate("(e) => getComputedStyle(e).color")
    return value


async def assert_error(page: Page, selector: str, text: str) -> None:
    error = page.locator(selector)
    await expect(error).to_contain_text(text)
    await expect(error).to_have_attribute("role", "alert")
    assert await colour(page, selector) == ERROR_RED


@pytest.mark.e2e
async def test_check_in_where_i_am_with_two_skills(
    gateway: tuple[Running, Recording], phone: BrowserContext
) -> None:
    running, recording = gateway
    worker = f"W-{uuid.uuid4().hex[:8]}"
    page = await logged_in(phone, running.url, worker)
    assert await too_small(page) == []

    await tick_only(page)  # no skill at all: refused, in red, apart from the info line
    await page.click("#geo-btn")
    await assert_error(page, "#checkin-error", "choose at least one skill")
    assert await colour(page, "#checkin-state") != ERROR_RED

    await tick_only(page, "bricklayer", "carpenter")
    await expect(page.locator("#skills-count")).to_have_text("2/5")
    await page.click("#geo-btn")
    state = page.locator("#checkin-state")
    await expect(state).to_have_attribute("data-state", "checked-in")
    await expect(state).to_contain_text("瓦工 bricklayer")
    await expect(page.locator("#checkin-error")).to_be_empty()
    [sent] = await check_ins(recording, worker)
    assert sent.skills == ("bricklayer", "carpenter")
    await snap(page, "checked-in")
    assert (sent.lon, sent.lat) == pytest.approx(HERE)

    # The picker lists the nearest markets first, with their distance.
    nearest = min(registry(), key=lambda e: haversine_km(*HERE, e.hit.lon, e.hit.lat)).hit
    first = page.locator("#market-list .choice").first
    await expect(first).to_have_attribute("data-market-id", nearest.market_id)
    await expect(first).to_contain_text(nearest.name_zh)
    await expect(first).to_contain_text("km")

    # At most five skills: the sixth box is disabled.
    await tick_only(page, "bricklayer", "carpenter", "tiler", "painter", "welder")
    assert await page.locator("#skills input:disabled").count() == len(ev.SKILLS) - 5
    assert await too_small(page) == []

    # A reload keeps the login and the check-in.
    await page.reload()
    await expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    await expect(state).to_have_attribute("data-state", "checked-in")
    checked = page.locator("#skills input:checked")
    values = [await b.get_attribute("value") or "" for b in await checked.all()]
    assert sorted(values) == ["bricklayer", "carpenter"]


@pytest.mark.e2e
async def test_check_in_at_a_market_found_by_name(
    gateway: tuple[Running, Recording],
    browser: Browser,
) -> None:
    running, recording = gateway
    worker = f"W-{uuid.uuid4().hex[:8]}"
    context = await browser.new_context(viewport=PHONE, has_touch=True)  # no position allowed
    page = await logged_in(context, running.url, worker)

    await page.click("#geo-btn")  # the browser may not tell: the picker is the way
    await assert_error(page, "#checkin-error", "pick a market below")

    await page.fill("#market", "")
    await page.click("#checkin-btn")
    await assert_error(page, "#checkin-error", "pick a market from the list first")
    await snap(page, "error")

    await page.fill("#market", "湘潭市第3零工")
    choice = page.locator('#market-list .choice[data-market-id="G4303003"]')
    await expect(choice).to_contain_text("Xiangtan Gig Market 3")
    await page.fill("#market", "xiangtan gig market 3")  # English finds it too
    await choice.click()
    await expect(choice).to_have_attribute("aria-selected", "true")
    await tick_only(page, "caregiver", "cook")
    await page.click("#checkin-btn")
    await expect(page.locator("#checkin-state")).to_have_attribute("data-state", "checked-in")
    await expect(page.locator("#checkin-error")).to_be_empty()
    [sent] = await check_ins(recording, worker)
    assert (sent.market_id, sent.skills) == ("G4303003", ("caregiver", "cook"))
    assert await too_small(page) == []

    # A code typed in full is enough, without picking it from the list.
    await page.fill("#market", MARKET)
    await page.click("#checkin-btn")
    await expect(page.locator("#checkin-state")).to_contain_text(MARKET)
    assert [m.market_id for m in await check_ins(recording, worker)] == ["G4303003", MARKET]
    await context.close()


def offer_for(worker: str, request_id: str, now_ms: int) -> ev.OfferMade:
    return ev.OfferMade(
        event_id=f"om:{request_id}:{worker}", at_ms=now_ms, offer_id=f"of-{request_id}",
        request_id=request_id, worker_id=worker, market_id=MARKET, skill="caregiver",
        wage_yuan_per_day=320.0, lon=113.26145, lat=28.20326, distance_km=1.25, score=1.0,
        wave=0, expires_at_ms=now_ms + 120_000, note=NOTE,
        start_at_ms=now_ms + 3_600_000, headcount=3, market_name_zh="长沙市第1零工市场",
        market_name_en="Changsha Gig Market 1", address="芙蓉路 88 号 88 Furong Road",
    )  # fmt: skip


def hired_from(offer: ev.OfferMade) -> ev.Hired:
    fields: dict[str, Any] = {k: getattr(offer, k) for k in (
        "offer_id", "request_id", "worker_id", "market_id", "market_name_zh", "market_name_en",
        "address", "skill", "wage_yuan_per_day", "note", "headcount", "lon", "lat")}  # fmt: skip
    assert offer.start_at_ms is not None
    return ev.Hired(event_id=f"hi:{offer.offer_id}", at_ms=offer.at_ms + 1000,
                    start_at_ms=offer.start_at_ms, contact="0731-8888 6666",
                    others=offer.headcount - 1, **fields)  # fmt: skip


def changed(offer: ev.OfferMade, status: ev.JobStepName, at_ms: int) -> ev.JobChanged:
    return ev.JobChanged(event_id=f"jc:{offer.request_id}:{status}", at_ms=at_ms,
                         request_id=offer.request_id, worker_id=offer.worker_id,
                         offer_id=offer.offer_id, status=status, by="station")  # fmt: skip


@pytest.mark.e2e
async def test_offer_hired_job_steps_and_back_in_the_pool(
    gateway: tuple[Running, Recording], phone: BrowserContext
) -> None:
    running, _ = gateway
    worker = f"W-{uuid.uuid4().hex[:8]}"
    page = await logged_in(phone, running.url, worker)
    now = int(time.time() * 1000)
    offer = offer_for(worker, f"R-{uuid.uuid4().hex[:8]}", now)
    await running.gateway.offers.apply([offer], [])  # what the fan-out stores, then pushes
    await push(running, worker, offer)

    card = page.locator(".offer")
    await expect(card).to_have_count(1)
    for fact in ("320", "care for an elderly person", "长沙市第1零工市场", "Changsha Gig Market 1",
                 "88 Furong Road", "3 workers needed", "1.3 km", "s left to answer"):  # fmt: skip
        await expect(card).to_contain_text(fact)
    assert await too_small(page) == []
    await snap(page, "offer")

    # A reload (and the socket's resend on connect) shows the offer once.
    await page.reload()
    await expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    await expect(card).to_have_count(1)
    await push(running, worker, offer)  # pushed twice: still one card
    await expect(card).to_have_count(1)

    await push(running, worker, hired_from(offer))
    job = page.locator("#job-box")
    await expect(job).to_be_visible()
    await expect(page.locator("#job-title")).to_have_text("你被录用了 You are hired")
    for fact in ("care for an elderly person", "长沙市第1零工市场", "88 Furong Road",
                 "2 others coming too", "320"):  # fmt: skip
        await expect(job).to_contain_text(fact)
    await expect(job.locator("a.tel")).to_have_attribute("href", "tel:073188886666")
    await expect(card).to_have_count(0)  # the offer became the job
    assert await too_small(page) == []
    await snap(page, "hired")

    async with page.expect_request(f"**/api/v1/worker/jobs/{offer.request_id}") as sent:
        await page.click("#arrived-btn")
    assert json.loads((await sent.value).post_data or "{}") == {"step": "arrived"}

    await push(running, worker, changed(offer, "arrived", now + 2000))
    await expect(job).to_have_attribute("data-status", "arrived")
    await expect(page.locator("#arrived-btn")).to_be_hidden()
    await expect(page.locator("#done-btn")).to_be_visible()
    await push(running, worker, changed(offer, "done", now + 3000))
    state = page.locator("#job-state")
    await expect(state).to_contain_text("back in the pool — you will get new offers")
    await expect(page.locator("#done-btn")).to_be_hidden()
    await snap(page, "done")

    # After a reload the ended job is still told (from the API, or what the page kept).
    await page.reload()
    await expect(state).to_contain_text("back in the pool")
    await expect(page.locator("#job-error")).to_be_empty()

    # Offline: a banner; back online: reconnected, the banner gone, nothing twice.
    await phone.set_offline(True)
    banner = page.locator("#offline-banner")
    await expect(banner).to_be_visible()
    await expect(banner).to_contain_text("offline")
    await snap(page, "offline")
    await phone.set_offline(False)
    await expect(banner).to_be_hidden(timeout=20_000)
    await expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    # The socket resends the offer still in the store (nothing answered it here): it is a job.
    await expect(page.locator(".offer")).to_have_count(0)


@pytest.mark.integration
async def test_socket_passes_on_hired_and_job_changed(
    gateway: tuple[Running, Recording], gw_settings: Settings
) -> None:
    running, _ = gateway
    worker = f"W-{uuid.uuid4().hex[:8]}"
    offer = offer_for(worker, f"R-{uuid.uuid4().hex[:8]}", int(time.time() * 1000))
    ws_url = running.url.replace("http", "ws") + "/ws/worker?token="
    async with connect(ws_url + token(gw_settings, "worker", worker)) as ws:
        assert json.loads(await ws.recv())["type"] == "Welcome"
        sent = [hired_from(offer), changed(offer, "arrived", offer.at_ms + 1),
                changed(offer, "done", offer.at_ms + 2)]  # fmt: skip
        await push(running, worker, *sent)
        got = [json.loads(await ws.recv()) for _ in sent]
    assert got == [json.loads(m.model_dump_json()) for m in sent]
