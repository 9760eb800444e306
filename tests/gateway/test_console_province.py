"""The console's province view and request search on the real stack (Kafka, Redis,
PostgreSQL, presence, the dispatcher and the archiver): workers check in and requests are
posted, filled and cancelled through the API; the province figures follow; the search finds
the requests; a request's timeline lists every candidate and reason, word for word as
``replay timeline --request`` prints it. A Chromium test does it from the page.

With ``GIG_SCREENSHOTS=docs/screens`` it saves the province and timeline screenshots."""

from __future__ import annotations

import asyncio
import functools
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import httpx
import pytest
from fastapi import HTTPException
from playwright.async_api import Browser, expect

from archive.archiver import run_archiver
from consumers.services import run_dispatcher, run_presence
from gateway.console import province as pv
from gateway.serve import Running, serving
from infra.settings import Settings
from schemas.events import EPOCH_MS_MAX
from tests.conftest import eventually, running
from tests.gateway.conftest import MARKET, bearer, snap, token, with_gateway

API = "/api/v1/console"
CHANGSHA = "4301"
WAIT_MS = 30_000

Stack = tuple[Running, httpx.AsyncClient]


@pytest.fixture
def console_settings(archived: Settings) -> Settings:
    """Gateway settings over a fresh, empty archive."""
    return with_gateway(archived)


@pytest.fixture
async def stack(console_settings: Settings) -> AsyncIterator[Stack]:
    """The gateway, presence, the dispatcher and an archiver, and an HTTP client."""
    s = console_settings
    archiver = functools.partial(run_archiver, group=f"archiver-{s.key_prefix}")
    async with (
        serving(s) as gw,
        running((run_presence, s), (run_dispatcher, s), (archiver, s)),
        httpx.AsyncClient(base_url=gw.url, timeout=60) as http,
    ):
        yield gw, http


# --- driving the service through its API -----------------------------------------------------


async def check_in(http: httpx.AsyncClient, s: Settings, worker: str, skill: str) -> None:
    body = {"market_id": MARKET, "skills": [skill]}
    r = await http.post(
        "/api/v1/worker/check-in", json=body, headers=bearer(token(s, "worker", worker))
    )
    assert r.status_code == 202, r.text


async def post(http: httpx.AsyncClient, s: Settings, rid: str, skill: str) -> None:
    body = {"request_id": rid, "market_id": MARKET, "skill": skill, "headcount": 1}
    r = await http.post("/api/v1/requests", json=body, headers=bearer(token(s, "station", MARKET)))
    assert r.status_code == 202, r.text


async def accept_first_offer(http: httpx.AsyncClient, s: Settings, workers: list[str]) -> str:
    """The first of ``workers`` to get an offer accepts it; who that was."""
    found: list[tuple[str, str]] = []

    async def offered() -> bool:
        for w in workers:
            r = await http.get(f"/api/v1/workers/{w}/offers", headers=bearer(token(s, "worker", w)))
            found.extend((w, o["offer_id"]) for o in r.json())
        return bool(found)

    await eventually(offered, what="an offer")
    worker, offer = found[0]
    body = {"type": "accept", "offer_id": offer}
    r = await http.post("/api/v1/answers", json=body, headers=bearer(token(s, "worker", worker)))
    assert r.status_code == 200, r.text
    return worker


async def province(http: httpx.AsyncClient, who: str, **query: Any) -> dict[str, Any]:
    r = await http.get(f"{API}/province", params=query, headers=bearer(who))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def figures_of(view: dict[str, Any], code: str = CHANGSHA) -> dict[str, int]:
    (found,) = [p["figures"] for p in view["prefectures"] if p["code"] == code]
    return dict(found)


async def shows(http: httpx.AsyncClient, who: str, **want: int) -> dict[str, Any]:
    """The province view, once Changsha's figures include ``want``."""
    seen: list[dict[str, Any]] = [{}]

    async def there() -> bool:
        seen[0] = await province(http, who)
        got = figures_of(seen[0])
        return all(got[k] == v for k, v in want.items())

    await eventually(there, what=lambda: f"Changsha showing {want}, not {figures_of(seen[0])}")
    return seen[0]


async def search(http: httpx.AsyncClient, who: str, **query: Any) -> list[dict[str, Any]]:
    r = await http.get(f"{API}/requests", params=query, headers=bearer(who))
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["requests"]
    return found


async def settled_timeline(http: httpx.AsyncClient, who: str, rid: str) -> dict[str, Any]:
    """The request's timeline once the archive holds its last event (the hired worker told)."""
    seen: list[dict[str, Any]] = [{}]

    async def complete() -> bool:
        r = await http.get(f"{API}/requests/{rid}/timeline", headers=bearer(who))
        seen[0] = r.json() if r.status_code == 200 else {}
        return any(e["type"] == "Hired" for e in seen[0].get("events", []))

    await eventually(complete, what=f"the timeline of {rid} up to Hired")
    return seen[0]


async def replay_timeline(s: Settings, rid: str) -> str:
    """What ``replay timeline --request`` prints for the request."""
    env = {**os.environ, "GIG_PG_DSN": s.pg_dsn, "GIG_KAFKA_BOOTSTRAP": s.kafka_bootstrap}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "replay.cli", "timeline", "--request", rid, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode().rstrip("\n")


# --- the API ---------------------------------------------------------------------------------


@pytest.mark.integration
async def test_province_figures_search_and_timeline_follow_the_log(
    console_settings: Settings, stack: Stack
) -> None:
    s, (_, http) = console_settings, stack
    sup = token(s, "supervisor", "sup")
    tag = uuid.uuid4().hex[:6]
    workers = [f"W-{tag}-a", f"W-{tag}-b"]
    filled, cancelled = f"R-fill-{tag}", f"R-cancel-{tag}"

    # An empty archive: nothing anywhere, every prefecture listed with its names and seat.
    view = await province(http, sup)
    assert len(view["prefectures"]) == 14 and view["total"] == pv.Figures().model_dump()
    changsha = next(p for p in view["prefectures"] if p["code"] == CHANGSHA)
    assert (changsha["name_zh"], changsha["name_en"]) == ("长沙市", "Changsha")
    assert view["day"] == pv.local_day(int(time.time() * 1000)).isoformat()

    # Two plumbers check in: available.
    for w in workers:
        await check_in(http, s, w, "plumber")
    await shows(http, sup, available=2, busy=0)

    # A request nobody can take stays open; cancelled, it counts as cancelled.
    await post(http, s, cancelled, "cook")
    view = await shows(http, sup, open=1)
    assert view["open_markets"] == {MARKET: 1}
    r = await http.post(f"/api/v1/requests/{cancelled}/cancel", json={},
                        headers=bearer(token(s, "station", MARKET)))  # fmt: skip
    assert r.status_code == 202, r.text
    await shows(http, sup, open=0, cancelled=1)

    # A request for a plumber is filled: one worker busy, the other available again.
    await post(http, s, filled, "plumber")
    hired = await accept_first_offer(http, s, workers)
    view = await shows(http, sup, filled=1, open=0, busy=1, offered=0, available=1)
    assert view["total"]["filled"] == 1 and view["open_markets"] == {}
    drill = await province(http, sup, prefecture=CHANGSHA)
    (market,) = drill["markets"]
    assert market["market_id"] == MARKET and market["name_zh"] == "长沙市第1零工市场"
    assert market["figures"]["filled"] == 1 and market["figures"]["busy"] == 1
    assert drill["archive_lag"] is not None

    # The search finds them, by id, market, skill and outcome.
    (one,) = await search(http, sup, request_id=filled)
    assert (one["status"], one["assigned"], one["skill"]) == ("filled", 1, "plumber")
    assert (
        one["offers"] >= 1
        and one["market_zh"] == "长沙市第1零工市场"
        and one["prefecture"] == CHANGSHA
    )
    assert [f["request_id"] for f in await search(http, sup, market_id=MARKET)] == [
        filled,
        cancelled,
    ]
    assert [f["request_id"] for f in await search(http, sup, status="cancelled")] == [cancelled]
    assert [f["request_id"] for f in await search(http, sup, skill="plumber")] == [filled]
    assert await search(http, sup, status="open") == []
    assert await search(http, sup, market_id="G4301002") == []
    late = int(time.time() * 1000) + 7_200_000
    assert await search(http, sup, **{"from": late, "to": late + 1}) == []
    assert len(await search(http, sup, limit=1)) == 1

    # The timeline: every candidate with its reason, and the command line's very words.
    t = await settled_timeline(http, sup, filled)
    waves = [e for e in t["events"] if e["type"] == "WaveSent"]
    considered = {c["worker_id"]: c for w in waves for c in w["candidates"]}
    assert set(considered) == set(workers)
    assert considered[hired]["outcome"] == "offered"
    assert considered[hired]["verdict"] == "offered: among the nearest workers still free"
    assert any(line.endswith(f"{filled}: {hired} assigned (1 of 1)") for line in t["lines"])
    types = [e["type"] for e in t["events"]]
    for kind in ("HireRequested", "WaveSent", "OfferMade", "OfferAccepted", "WorkerAssigned",
                 "RequestFilled", "Hired"):  # fmt: skip
        assert kind in types
    assert t["text"] == await replay_timeline(s, filled)
    assert t["lines"] == t["text"].splitlines()


@pytest.mark.integration
async def test_console_inputs_are_bounded_and_callers_checked(
    console_settings: Settings, stack: Stack
) -> None:
    s, (_, http) = console_settings, stack
    sup = bearer(token(s, "supervisor", "sup"))
    refused: list[tuple[str, dict[str, Any]]] = [
        ("province", {"day": "2026-02-30"}),
        ("province", {"day": "yesterday"}),
        ("province", {"prefecture": "9999"}),
        ("province", {"prefecture": "43"}),
        ("requests", {"limit": 0}),
        ("requests", {"limit": pv.LIMIT_MAX + 1}),
        ("requests", {"from": 2, "to": 1}),
        ("requests", {"from": 0, "to": 40 * pv.DAY_MS}),
        ("requests", {"status": "lost"}),
        ("requests", {"skill": "astronaut"}),
        ("requests", {"request_id": "no spaces"}),
        ("requests", {"market_id": "x" * 141}),
        ("requests", {"from": -1}),
    ]
    for path, query in refused:
        r = await http.get(f"{API}/{path}", params=query, headers=sup)
        assert r.status_code == 422, (path, query, r.text)
    assert (await http.get(f"{API}/requests/R-none/timeline", headers=sup)).status_code == 404
    assert (await http.get(f"{API}/requests/a%20b/timeline", headers=sup)).status_code == 422
    for path in ("province", "map", "requests", "requests/R-1/timeline"):
        assert (await http.get(f"{API}/{path}")).status_code == 401
        worker = bearer(token(s, "worker", "W-1"))
        assert (await http.get(f"{API}/{path}", headers=worker)).status_code == 403
    ok = await http.get(f"{API}/requests", params={"request_id": "R-x", "from": 0}, headers=sup)
    assert ok.status_code == 200 and ok.json()["requests"] == []
    drawn = (await http.get(f"{API}/map", headers=sup)).json()
    assert len(drawn["prefectures"]) == 14 and len(drawn["markets"]) == 5095
    assert {m[1] for m in drawn["markets"]} == {"gig", "micro"}


# --- the pure parts --------------------------------------------------------------------------


@pytest.mark.unit
def test_a_day_is_china_standard_time() -> None:
    start, end = pv.day_bounds(date(2026, 11, 26))
    assert end - start == pv.DAY_MS
    assert start == 1_795_622_400_000  # 2026-11-25T16:00Z
    assert pv.local_day(start) == date(2026, 11, 26) and pv.local_day(start - 1) == date(
        2026, 11, 25
    )


@pytest.mark.unit
def test_figures_by_market_and_prefecture() -> None:
    requests = [
        {"market_id": "G4301001", "ended": "", "n": 2},
        {"market_id": "G4301001", "ended": "RequestFilled", "n": 3},
        {"market_id": "G4302001", "ended": "RequestExpired", "n": 1},
        {"market_id": "G9999999", "ended": "RequestRejected", "n": 1},
    ]
    workers: list[dict[str, Any]] = [
        {"status": "available", "market_id": "G4301001", "lon": None, "lat": None, "n": 4},
        {"status": "busy", "market_id": "G4301001", "lon": None, "lat": None, "n": 3},
        # By position, at Zhuzhou's first gig market: counts there.
        {"status": "available", "market_id": None, "lon": 113.134, "lat": 27.827, "n": 1},
        {"status": "offered", "market_id": None, "lon": None, "lat": None, "n": 5},  # nowhere
    ]
    per = pv.by_market(requests, workers)
    assert per["G4301001"] == pv.Figures(open=2, filled=3, available=4, busy=3)
    near = pv.nearest_market(113.134, 27.827)
    assert per[near].available == 1 and near.startswith(("G4302", "M4302"))
    reg = pv.places_of(
        [
            {"market_id": m, "kind": "gig", "name_zh": m, "name_en": m, "prefecture_code": m[1:5],
             "lon": 113.0, "lat": 28.0, "prefecture_zh": "市", "prefecture_en": "P",
             "seat_lon": 113.0, "seat_lat": 28.0}
            for m in ("G4301001", "G4301002", "G4302001", near)
        ]
    )  # fmt: skip
    t = pv.province(per, reg, "4301")
    assert t.total.open == 2 and t.total.rejected == 1 and t.unplaced.rejected == 1
    sums = {p.code: p for p in t.prefectures}
    assert sums["4301"].figures.filled == 3 and sums["4301"].markets == 2
    assert sums["4301"].active == 1 and sums["4302"].figures.expired == 1
    assert [m.market_id for m in t.markets] == ["G4301001"] and t.open_markets == {"G4301001": 2}
    assert pv.province(per, reg, None).markets == []


@pytest.mark.unit
def test_the_search_window() -> None:
    now = 10 * pv.DAY_MS
    assert pv.window(None, None, None, now) == (now + 3_600_000 - pv.DAY_MS, now + 3_600_000)
    assert pv.window("R-1", None, None, now) == (0, EPOCH_MS_MAX)
    assert pv.window(None, 5, 9, now) == (5, 9)
    for start, end in ((9, 5), (0, 32 * pv.DAY_MS)):
        with pytest.raises(HTTPException) as e:
            pv.window(None, start, end, now)
        assert e.value.status_code == 422


# --- the page --------------------------------------------------------------------------------


@pytest.mark.e2e
async def test_the_province_view_updates_after_a_fill_and_the_timeline_shows_candidates(
    console_settings: Settings, stack: Stack, browser: Browser
) -> None:
    s, (gw, http) = console_settings, stack
    tag = uuid.uuid4().hex[:6]
    workers, rid = [f"W-{tag}-a", f"W-{tag}-b"], f"R-fill-{tag}"
    page = await (await browser.new_context(viewport={"width": 1400, "height": 1000})).new_page()
    await page.goto(f"{gw.url}/supervisor")
    await page.select_option("#dev-role", "supervisor")
    await page.click("#dev-login-btn")
    row = page.locator(f'#prov-table tr[data-code="{CHANGSHA}"]')
    await expect(row.locator('td[data-figure="filled"]')).to_have_text("0", timeout=WAIT_MS)
    await expect(page.locator("svg.prov-map .prov-dot")).to_have_count(5095)
    await expect(page.locator("svg.prov-map .prov-label")).to_have_count(14)
    await expect(page.locator('.prov-label[data-code="4301"]')).to_contain_text("长沙市")

    for w in workers:
        await check_in(http, s, w, "plumber")
    await expect(row.locator('td[data-figure="available"]')).to_have_text("2", timeout=WAIT_MS)
    # A request nobody can take stays open: its market turns orange on the map.
    await post(http, s, f"R-open-{tag}", "cook")
    await expect(row.locator('td[data-figure="open"]')).to_have_text("1", timeout=WAIT_MS)
    await expect(page.locator(f'.prov-open[data-market="{MARKET}"]')).to_have_attribute(
        "data-open", "1"
    )
    await post(http, s, rid, "plumber")
    await accept_first_offer(http, s, workers)

    # The page asks again by itself: the fill shows without a reload.
    await expect(row.locator('td[data-figure="filled"]')).to_have_text("1", timeout=WAIT_MS)
    await expect(row.locator('td[data-figure="busy"]')).to_have_text("1", timeout=WAIT_MS)
    await expect(page.locator('#prov-total [data-figure="filled"] .n')).to_have_text("1")
    await page.locator(f'.prov-label[data-code="{CHANGSHA}"]').click()
    market = page.locator(f'#prov-drill tr[data-market="{MARKET}"]')
    await expect(market).to_contain_text("长沙市第1零工市场")
    await expect(market.locator('td[data-figure="filled"]')).to_have_text("1")
    await snap(page, "console-province")

    # Its requests, then the request's timeline with every candidate and reason.
    await market.click()
    found = page.locator(f'#rq-results tr[data-request="{rid}"]')
    await expect(found).to_have_attribute("data-status", "filled", timeout=WAIT_MS)
    await found.click()
    timeline = page.locator("#rq-timeline")
    for w in workers:
        await expect(timeline.locator(f'tr[data-worker="{w}"]').first).to_be_visible()
    await expect(timeline.locator('tr[data-outcome="offered"]').first).to_contain_text(
        "offered: among the nearest workers still free"
    )
    await expect(timeline.locator('.tl-event[data-type="RequestFilled"]')).to_contain_text(
        f"{rid}: filled"
    )
    await snap(page, "console-timeline")
