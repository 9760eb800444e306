"""The kiosk's board: ``GET /api/v1/requests`` lists a market's requests of today, newest first,
with where each stands; a station sees its own market's only, a supervisor names the market.
The list lives in Redis, so a fresh client (a reloaded page) gets it again."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from playwright.async_api import Browser, Page, expect
from redis.asyncio import Redis

from consumers.services import run_dispatcher, run_presence
from dispatch.model import Job, RequestState
from gateway.keys import day_of
from gateway.serve import Running, serving
from infra.clients import keys_for
from infra.settings import Settings
from infra.state_codec import dump_state
from tests.conftest import eventually, running
from tests.gateway.conftest import (
    MARKET,
    OTHER_MARKET,
    Recording,
    bearer,
    module_gateway,
    module_settings,
    snap,
    token,
    with_gateway,
)

API = "/api/v1"


@pytest.fixture(scope="module")
def gw_settings(base_settings: Settings) -> Settings:
    return module_settings(base_settings, "board")


@pytest.fixture(scope="module")
async def gateway(gw_settings: Settings) -> AsyncIterator[tuple[Running, Recording]]:
    async with module_gateway(gw_settings) as running:
        yield running


def client(gateway: tuple[Running, Recording]) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=gateway[0].url, timeout=60)


async def post(http: httpx.AsyncClient, market: str, station: dict[str, str]) -> str:
    request_id = f"R-{uuid.uuid4().hex[:10]}"
    body = {"request_id": request_id, "market_id": market, "skill": "cook", "headcount": 2}
    answer = await http.post(f"{API}/requests", json=body, headers=station)
    assert answer.status_code == 202, answer.text
    return request_id


@pytest.mark.integration
async def test_the_board_lists_the_stations_own_requests_newest_first_for_a_fresh_client(
    gateway: tuple[Running, Recording], gw_settings: Settings
) -> None:
    own = bearer(token(gw_settings, "station", MARKET))
    other = bearer(token(gw_settings, "station", OTHER_MARKET))
    async with client(gateway) as http:
        mine = [await post(http, MARKET, own) for _ in range(3)]
        theirs = await post(http, OTHER_MARKET, other)
        repeat = {"request_id": mine[0], "market_id": MARKET, "skill": "cook", "headcount": 2}
        again = await http.post(f"{API}/requests", headers=own, json=repeat)
        assert again.json()["detail"] == "already posted"  # listed once all the same
    # The dispatcher has taken the newest: the board shows its state.
    now = int(time.time() * 1000)
    job = Job(mine[-1], MARKET, "cook", 2, 250.0, 112.9, 28.2, now, now, now + 600_000)
    state = RequestState(job=job)
    redis = Redis.from_url(gw_settings.redis_url, decode_responses=True)
    try:
        key = keys_for(gw_settings).request(mine[-1])
        await redis.hset(key, mapping={"v": 1, "s": dump_state(state)})
    finally:
        await redis.aclose()

    # A fresh client with a fresh token: a reloaded page.
    async with client(gateway) as http:
        fresh = bearer(token(gw_settings, "station", MARKET))
        board = await http.get(f"{API}/requests", headers=fresh)
        assert board.status_code == 200, board.text
        rows = board.json()
        assert [r["request_id"] for r in rows][:3] == mine[::-1]
        assert theirs not in {r["request_id"] for r in rows}
        assert {r["market_id"] for r in rows} == {MARKET}
        assert rows[0]["status"] == state.status.value and rows[1]["status"] == "submitted"
        assert rows[0]["headcount"] == 2 and rows[0]["jobs"] == []
        newest = (await http.get(f"{API}/requests?limit=1", headers=own)).json()
        assert [r["request_id"] for r in newest] == [mine[-1]]
        other_board = (await http.get(f"{API}/requests", headers=other)).json()
        assert theirs in {r["request_id"] for r in other_board}
        assert not {r["request_id"] for r in other_board} & set(mine)


@pytest.mark.integration
async def test_who_may_read_which_board(
    gateway: tuple[Running, Recording], gw_settings: Settings
) -> None:
    own = bearer(token(gw_settings, "station", MARKET))
    sup = bearer(token(gw_settings, "supervisor", "audit"))
    worker = bearer(token(gw_settings, "worker", "W-1"))
    async with client(gateway) as http:
        request_id = await post(http, MARKET, own)
        assert (await http.get(f"{API}/requests")).status_code == 401
        assert (await http.get(f"{API}/requests", headers=worker)).status_code == 403
        theirs = f"{API}/requests?market_id={OTHER_MARKET}"
        assert (await http.get(theirs, headers=own)).status_code == 403
        assert (await http.get(f"{API}/requests", headers=sup)).status_code == 422
        assert (await http.get(f"{API}/requests?limit=0", headers=own)).status_code == 422
        as_sup = await http.get(f"{API}/requests?market_id={MARKET}", headers=sup)
        assert request_id in {r["request_id"] for r in as_sup.json()}


@pytest.mark.unit
def test_the_stations_day_is_china_standard_time() -> None:
    # 2024-03-01 15:59:59.999 UTC is 23:59:59.999 in China; a millisecond later is the 2nd.
    before_midnight = 1709308799999
    assert day_of(before_midnight) == "20240301"
    assert day_of(before_midnight + 1) == "20240302"


# --- the kiosk page in Chromium ------------------------------------------------------------------


@pytest.fixture
async def own(settings: Settings) -> AsyncIterator[tuple[Running, Settings]]:
    """A gateway of the test's own, started after its topics were made anew."""
    s = with_gateway(settings)
    async with serving(s) as running_gateway:
        yield running_gateway, s


async def kiosk_page(browser: Browser, url: str) -> Page:
    page = await (await browser.new_context(viewport={"width": 1024, "height": 900})).new_page()
    await page.goto(f"{url}/kiosk")
    await page.fill("#market", OTHER_MARKET)
    await page.click("#dev-login-btn")
    await expect(page.locator("#who-text")).to_contain_text(OTHER_MARKET)
    return page


@pytest.mark.e2e
async def test_the_kiosk_page_explains_errors_advises_after_an_expiry_and_keeps_its_board(
    own: tuple[Running, Settings], browser: Browser
) -> None:
    gw_settings, url = own[1], own[0].url
    async with running((run_dispatcher, gw_settings)):
        page = await kiosk_page(browser, url)
        # A form error is a sentence in both languages next to its field, not pydantic's JSON.
        await page.fill("#headcount", "0")
        await page.fill("#wage", "9000")
        await page.click("#post-btn")
        await expect(page.locator("#headcount-error")).to_contain_text("不能小于 1")
        await expect(page.locator("#headcount-error")).to_contain_text("must be at least 1")
        await expect(page.locator("#wage-error")).to_contain_text("不能大于 5000")
        await expect(page.locator("#post-error")).to_contain_text("日薪")
        await expect(page.locator("#post-error")).not_to_contain_text("loc")
        # No worker has this skill here: the request expires, and the page says what next.
        await page.fill("#headcount", "2")
        await page.fill("#wage", "200")
        await page.fill("#deadline", "0.1")
        await page.select_option("#skill", "farmhand")
        await page.click("#post-btn")
        status = page.locator("#status")
        await expect(status).to_have_attribute("data-status", "expired", timeout=30_000)
        outcome = page.locator("#outcome")
        await expect(outcome).to_contain_text("没有招到人")
        await expect(page.locator("#log li").last).to_contain_text("已过期")
        events = await page.locator("#log li").count()
        times = await page.locator("#log li time").all_inner_texts()
        assert len(times) == events and all(len(t) == 8 and t[2] == ":" for t in times)
        await page.click("#again-wage-btn")
        assert await page.input_value("#wage") == "240"
        assert await page.input_value("#headcount") == "2"
        assert await page.input_value("#skill") == "farmhand"
        # The board has the row; after a reload the board and the log are back, once each.
        request_id = await page.inner_text("#request-id")
        row = page.locator(f'#board-list li[data-request="{request_id}"]')
        await expect(row).to_have_attribute("data-status", "expired")
        await page.reload()
        await expect(row).to_have_attribute("data-status", "expired")
        await expect(page.locator("#request-id")).to_have_text(request_id)
        await expect(page.locator("#stream-state")).to_have_attribute("data-state", "ended")
        ids = [await li.get_attribute("data-id") for li in await page.locator("#log li").all()]
        assert len(ids) == events and ids == [str(n) for n in range(1, events + 1)]
        await snap(page, "kiosk-expired")


@pytest.mark.e2e
async def test_the_kiosk_marks_a_hired_worker_arrived_then_done_from_its_board(
    own: tuple[Running, Settings], browser: Browser, redis: Redis
) -> None:
    gw_settings, url = own[1], own[0].url
    worker = f"W-{uuid.uuid4().hex[:8]}"
    mine = bearer(token(gw_settings, "worker", worker))
    services = ((run_presence, gw_settings), (run_dispatcher, gw_settings))
    async with running(*services), httpx.AsyncClient(base_url=url, timeout=60) as http:
        here = {"market_id": OTHER_MARKET, "skills": ["plumber"]}
        checked = await http.post(f"{API}/worker/check-in", headers=mine, json=here)
        assert checked.status_code == 202, checked.text
        bucket = keys_for(gw_settings).bucket(worker)

        async def indexed() -> bool:
            return await redis.hget(bucket, worker) is not None

        await eventually(indexed, what="the worker in the index")
        page = await kiosk_page(browser, url)
        await page.select_option("#skill", "plumber")
        await page.fill("#note", "修水管 fix a pipe")
        await page.click("#post-btn")
        offers: list[dict[str, str]] = []

        async def offered() -> bool:
            offers[:] = (await http.get(f"{API}/workers/{worker}/offers", headers=mine)).json()
            return bool(offers)

        await eventually(offered, what="the offer")
        answer = {"type": "accept", "offer_id": offers[0]["offer_id"]}
        assert (await http.post(f"{API}/answers", json=answer, headers=mine)).status_code == 200
        job = page.locator(f'#board-list li.job[data-worker="{worker}"]')
        await expect(job).to_have_attribute("data-status", "hired", timeout=30_000)
        await job.locator('button[data-step="arrived"]').click()
        await expect(job).to_have_attribute("data-status", "arrived", timeout=30_000)
        await job.locator('button[data-step="done"]').click()
        await expect(job).to_have_attribute("data-status", "done", timeout=30_000)
        await expect(job.locator("button")).to_have_count(0)
        log = page.locator("#log")
        await expect(log).to_contain_text("已完工")
        await expect(page.locator("#stream-state")).to_have_attribute("data-state", "ended")
        await snap(page, "kiosk-done")
