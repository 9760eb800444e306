"""The console's reports on the real stack (Kafka, Redis, PostgreSQL, the dispatcher, presence,
the archiver and the gateway): a known morning gives the right figures.

Six workers check in (five cooks at Changsha Gig Market 1, a driver at Zhuzhou Gig Market 1)
and five requests are posted: two cooks at 200 ¥ and one at 300 ¥ (both filled, the workers
accept every offer), a bricklayer at 250 ¥ (nobody: it expires), a welder at 280 ¥ (cancelled
by the kiosk) and a cook for a market the registry does not hold (rejected). The report's
figures are checked three ways: against the figures the morning was built to give, against an
independent SQL query on ``event_log`` written here, and in the console page (Chromium). The
CSV export carries the same figures, and a ``replay run`` of the morning shows in the what-if
tab.
"""

from __future__ import annotations

import asyncio
import csv
import functools
import io
import math
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from playwright.async_api import Browser, expect

from archive.archiver import run_archiver
from consumers.services import run_dispatcher, run_presence
from gateway.serve import serving
from infra.clock import now_ms
from infra.publish import Outgoing
from infra.settings import PolicySettings, Settings
from producers.workers import Behaviour
from replay import cli
from replay.reporting import when
from replay.timeline import clock
from schemas import events as ev
from schemas.topics import HIRE_REQUESTS, WORKER_EVENTS
from tests.conftest import eventually, running
from tests.gateway.conftest import bearer, snap, token, with_gateway
from tests.integration.helpers import answering, publisher

pytestmark = pytest.mark.e2e
MARKET, LON, LAT = "G4301001", 113.26145, 28.20326
ZHUZHOU_MARKET = "G4302001"
UNKNOWN_MARKET = "G9999998"
ENDINGS = ("RequestFilled", "RequestExpired", "RequestCancelled", "RequestRejected")
COMPARED = ("requests", "positions", "job_seekers", "positions_per_seeker", "assignments",
            "workers_served", "fill_rate", "expired", "cancelled", "rejected", "wage_mean",
            "wage_median", "first_offer_p50_s", "fill_p50_s", "fill_p90_s")  # fmt: skip


def _checkin(wid: str, market: str, skill: str) -> Outgoing:
    msg = ev.WorkerCheckedIn(event_id=f"ci:{wid}", at_ms=now_ms(), worker_id=wid,
                             market_id=market, lon=LON, lat=LAT, skills=(skill,))  # fmt: skip
    return Outgoing(WORKER_EVENTS, wid, msg)


def _hire(
    rid: str, market: str, skill: str, headcount: int, wage: float, deadline_s: float
) -> Outgoing:
    at = now_ms()
    msg = ev.HireRequested(event_id=f"hr:{rid}", at_ms=at, request_id=rid, market_id=market,
                           skill=skill, headcount=headcount, wage_yuan_per_day=wage,
                           start_at_ms=at, deadline_at_ms=at + int(deadline_s * 1000))  # fmt: skip
    return Outgoing(HIRE_REQUESTS, rid, msg)


def _cancel(rid: str, market: str) -> Outgoing:
    msg = ev.HireCancelled(event_id=f"hc:{rid}", at_ms=now_ms(), request_id=rid, market_id=market,
                           reason="plans changed")  # fmt: skip
    return Outgoing(HIRE_REQUESTS, rid, msg)


async def _fetchval(dsn: str, sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


async def _ended(dsn: str, rids: list[str]) -> bool:
    n = await _fetchval(
        dsn,
        "SELECT count(DISTINCT request_id) FROM event_log WHERE request_id = ANY($1) "
        "AND type = ANY($2)",
        rids,
        list(ENDINGS),
    )
    return bool(n == len(rids))


async def _settled(dsn: str, seen: list[int]) -> bool:
    """The archive stopped growing (one more poll with the same count)."""
    n = int(await _fetchval(dsn, "SELECT count(*) FROM event_log"))
    seen.append(n)
    await asyncio.sleep(1.0)
    return len(seen) > 1 and seen[-2] == n


async def _offered(dsn: str, rid: str) -> bool:
    n = await _fetchval(dsn, "SELECT count(*) FROM event_log WHERE request_id = $1", rid)
    return bool(n)


async def known_morning(s: Settings, tag: str) -> dict[str, str]:
    """Run the morning on the live services; the request ids by what happens to them."""
    rids = {k: f"{tag}-{k}" for k in ("cooks", "cook", "bricklayer", "welder", "unknown")}
    archiver = functools.partial(run_archiver, group=f"archiver-{tag}")
    async with running((archiver, s), (run_presence, s), (run_dispatcher, s)):
        async with publisher(s) as pub:
            cooks = [_checkin(f"{tag}w{i}", MARKET, "cook") for i in range(5)]
            await pub.publish([*cooks, _checkin(f"{tag}w9", ZHUZHOU_MARKET, "driver")])
            await eventually(lambda: _indexed(s, tag), what="the check-ins archived")
            await asyncio.sleep(1.0)  # presence indexes them meanwhile
            always = Behaviour(accept=1.0, silent=0.0, min_delay_ms=50, max_delay_ms=150)
            async with answering(s, pub, always, seed=1):
                await pub.publish([
                    _hire(rids["cooks"], MARKET, "cook", 2, 200.0, 30.0),
                    _hire(rids["cook"], MARKET, "cook", 1, 300.0, 30.0),
                    _hire(rids["bricklayer"], MARKET, "bricklayer", 1, 250.0, 3.0),
                    _hire(rids["welder"], MARKET, "welder", 1, 280.0, 120.0),
                    _hire(rids["unknown"], UNKNOWN_MARKET, "cook", 1, 260.0, 30.0),
                ])  # fmt: skip
                await eventually(lambda: _offered(s.pg_dsn, rids["welder"]), 30, "the welder")
                await pub.publish([_cancel(rids["welder"], MARKET)])
                await eventually(lambda: _ended(s.pg_dsn, list(rids.values())), 60, "the ends")
        seen: list[int] = []
        await eventually(lambda: _settled(s.pg_dsn, seen), 30, "the archive to catch up")
    return rids


async def _indexed(s: Settings, tag: str) -> bool:
    n = await _fetchval(
        s.pg_dsn,
        "SELECT count(*) FROM event_log WHERE type = 'WorkerCheckedIn' AND worker_id LIKE $1",
        f"{tag}w%",
    )
    return bool(n == 6)


# --- the independent check: the same figures straight from event_log in SQL ----------------

REQUESTS_SQL = """
WITH req AS (
    SELECT DISTINCT ON (request_id) request_id, market_id, at_ms,
           (payload ->> 'headcount')::int AS headcount,
           (payload ->> 'wage_yuan_per_day')::float8 AS wage
    FROM event_log
    WHERE type = 'HireRequested' AND error IS NULL AND at_ms BETWEEN $1 AND $2
), grp AS (
    SELECT req.*, coalesce(m.prefecture_code, 'unregistered') AS g
    FROM req LEFT JOIN markets m USING (market_id)
), later AS (
    SELECT e.request_id, e.type, e.worker_id, e.at_ms, e.payload ->> 'offer_id' AS offer_id
    FROM event_log e
    WHERE e.error IS NULL AND e.request_id IN (SELECT request_id FROM req)
), firsts AS (
    SELECT grp.g, min(later.at_ms) - grp.at_ms AS ms
    FROM grp JOIN later USING (request_id) WHERE later.type = 'OfferMade'
    GROUP BY grp.g, grp.request_id, grp.at_ms
), fills AS (
    SELECT grp.g, min(later.at_ms) - grp.at_ms AS ms
    FROM grp JOIN later USING (request_id) WHERE later.type = 'RequestFilled'
    GROUP BY grp.g, grp.request_id, grp.at_ms
), positions AS (
    SELECT g, wage FROM grp, generate_series(1, grp.headcount)
)
SELECT g, count(*) AS requests, sum(headcount) AS positions,
       sum(wage * headcount) / sum(headcount) AS wage_mean,
       (SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY wage)
        FROM positions p WHERE p.g = grp.g) AS wage_median,
       (SELECT count(DISTINCT offer_id) FROM later JOIN grp x USING (request_id)
        WHERE x.g = grp.g AND type = 'WorkerAssigned') AS assignments,
       (SELECT count(DISTINCT worker_id) FROM later JOIN grp x USING (request_id)
        WHERE x.g = grp.g AND type = 'WorkerAssigned') AS workers_served,
       count(*) FILTER (WHERE request_id IN
           (SELECT request_id FROM later WHERE type = 'RequestFilled')) AS filled,
       count(*) FILTER (WHERE request_id IN
           (SELECT request_id FROM later WHERE type = 'RequestExpired')) AS expired,
       count(*) FILTER (WHERE request_id IN
           (SELECT request_id FROM later WHERE type = 'RequestCancelled')) AS cancelled,
       count(*) FILTER (WHERE request_id IN
           (SELECT request_id FROM later WHERE type = 'RequestRejected')) AS rejected,
       (SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY ms) FROM firsts f WHERE f.g = grp.g)
           AS first_offer_p50_ms,
       (SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY ms) FROM fills f WHERE f.g = grp.g)
           AS fill_p50_ms,
       (SELECT percentile_disc(0.9) WITHIN GROUP (ORDER BY ms) FROM fills f WHERE f.g = grp.g)
           AS fill_p90_ms
FROM grp GROUP BY g
"""
SEEKERS_SQL = """
SELECT coalesce(m.prefecture_code, 'unregistered') AS g, count(DISTINCT e.worker_id) AS n
FROM event_log e LEFT JOIN markets m ON m.market_id = e.market_id
WHERE e.type = 'WorkerCheckedIn' AND e.error IS NULL AND e.at_ms BETWEEN $1 AND $2
GROUP BY 1
"""
ALL_SEEKERS_SQL = """
SELECT count(DISTINCT worker_id) FROM event_log
WHERE type = 'WorkerCheckedIn' AND error IS NULL AND at_ms BETWEEN $1 AND $2
"""


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def _seconds(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000


async def by_sql(dsn: str, from_ms: int, to_ms: int) -> dict[str, dict[str, Any]]:
    """Every prefecture's figures by SQL on event_log alone (and the registry's markets)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(REQUESTS_SQL, from_ms, to_ms)
        seekers = {r["g"]: r["n"] for r in await conn.fetch(SEEKERS_SQL, from_ms, to_ms)}
        everyone = await conn.fetchval(ALL_SEEKERS_SQL, from_ms, to_ms)
    finally:
        await conn.close()
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        out[r["g"]] = dict(r) | {
            "job_seekers": seekers.get(r["g"], 0),
            "positions_per_seeker": _ratio(r["positions"], seekers.get(r["g"], 0)),
            "fill_rate": _ratio(r["filled"], r["requests"]),
            "first_offer_p50_s": _seconds(r["first_offer_p50_ms"]),
            "fill_p50_s": _seconds(r["fill_p50_ms"]),
            "fill_p90_s": _seconds(r["fill_p90_ms"]),
        }
    for g, n in seekers.items():
        out.setdefault(g, {"requests": 0, "positions": 0, "job_seekers": n})
    out["all"] = {"job_seekers": everyone}
    return out


def _same(api: Any, sql: Any) -> bool:
    if api is None or sql is None:
        return api is None and sql is None
    return math.isclose(float(api), float(sql), rel_tol=1e-9, abs_tol=1e-9)


# --- the test --------------------------------------------------------------------------------


async def test_a_known_morning_reported_by_api_csv_and_page(
    archived: Settings,
    browser: Browser,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GIG_REPLAY_RESULTS", str(tmp_path / "replays"))
    s = with_gateway(archived).model_copy(
        update={"policy": PolicySettings(offer_ttl_s=5.0, retry_idle_s=0.5, radii_km=(3.0, 6.0))}
    )
    tag = uuid.uuid4().hex[:6]
    start = now_ms() - 60_000
    rids = await known_morning(s, tag)
    # Whole minutes, as the page's fields give them (the database is this test's own).
    window = (clock(start, True)[:16].replace(" ", "T"), clock(now_ms() + 60_000, True)[:16])
    window = (window[0], window[1].replace(" ", "T"))
    from_ms, to_ms = when(window[0]), when(window[1])

    async with serving(s) as gw:
        supervisor = token(s, "supervisor", "sup-reports")
        async with httpx.AsyncClient(base_url=gw.url, headers=bearer(supervisor)) as http:
            got = await http.get(
                "/api/v1/console/reports",
                params={"by": "prefecture", "from": window[0], "to": window[1]},
            )
            assert got.status_code == 200, got.text
            doc = got.json()
            rows = {r["group"]: r for r in doc["rows"]} | {"all": doc["total"]}

            # 1. The figures the morning was built to give.
            cs = rows["4301"]
            assert (cs["requests"], cs["positions"], cs["job_seekers"]) == (4, 5, 5)
            assert cs["positions_per_seeker"] == 1.0 and cs["assignments"] == 3
            assert cs["workers_served"] == 3 and cs["fill_rate"] == 0.5
            assert (cs["expired"], cs["cancelled"], cs["rejected"]) == (1, 1, 0)
            assert cs["wage_mean"] == pytest.approx((2 * 200 + 300 + 250 + 280) / 5)
            assert cs["wage_median"] == 250.0 and cs["name_zh"] == "长沙市"
            bad = rows["unregistered"]
            assert (bad["requests"], bad["rejected"]) == (1, 1)
            assert "rejected" in bad["name_en"] and "未登记市场" in bad["name_zh"]
            assert rows["4302"]["job_seekers"] == 1 and rows["4302"]["requests"] == 0
            total = rows["all"]
            assert (total["requests"], total["positions"], total["job_seekers"]) == (5, 6, 6)
            assert total["positions_per_seeker"] == 1.0 and total["rejected"] == 1

            # 2. The same figures by an independent SQL query on event_log.
            sql = await by_sql(s.pg_dsn, from_ms, to_ms)
            assert set(sql) == set(rows)
            for g, expected in sql.items():
                for k, v in expected.items():
                    if k in COMPARED:
                        assert _same(rows[g][k], v), (g, k, rows[g][k], v)

            # 3. The CSV export: every group and the total, the same figures.
            got = await http.get(
                "/api/v1/console/reports",
                params={"by": "prefecture", "from": window[0], "to": window[1], "format": "csv"},
            )
            assert got.status_code == 200 and got.headers["content-type"].startswith("text/csv")
            assert "attachment" in got.headers["content-disposition"]
            table = list(csv.DictReader(io.StringIO(got.text.lstrip("\ufeff"))))
            assert [r["group"] for r in table] == [*(r["group"] for r in doc["rows"]), "all"]
            by_group = {r["group"]: r for r in table}
            assert by_group["4301"]["name_zh"] == "长沙市"
            assert by_group["4301"]["job_seekers"] == "5"
            assert float(by_group["4301"]["positions_per_seeker"]) == 1.0
            assert by_group["unregistered"]["rejected"] == "1"

            # Other groupings add up to the same totals.
            for by in ("county", "market", "skill", "day", "month"):
                other = (
                    await http.get(
                        "/api/v1/console/reports",
                        params={"by": by, "from": window[0], "to": window[1]},
                    )
                ).json()
                assert other["total"]["positions"] == 6 and other["total"]["job_seekers"] == 6
                assert sum(r["requests"] for r in other["rows"]) == 5
            skills = (
                await http.get(
                    "/api/v1/console/reports",
                    params={
                        "by": "skill",
                        "from": window[0],
                        "to": window[1],
                        "prefecture": "4301",
                    },
                )
            ).json()
            cook = next(r for r in skills["rows"] if r["group"] == "cook")
            assert (cook["requests"], cook["positions"], cook["job_seekers"]) == (2, 3, 5)
            assert cook["name_zh"] == "厨师"

            # 4. Windows the API refuses, each with one clear sentence.
            for params, said in (
                ({"from": window[1], "to": window[0]}, "ends before it starts"),
                ({"from": window[0], "to": window[0]}, "the window is empty"),
                ({"from": "2020-01-01T07:00", "to": "2020-01-01T08:00"}, "nothing archived"),
                ({"from": "2020-01-01T07:00", "to": "2021-01-01T08:00"}, "longer than 92 days"),
                ({"from": "soon"}, "cannot read the time"),
            ):
                got = await http.get("/api/v1/console/reports", params=params)
                assert got.status_code == 422 and said in got.json()["detail"], got.text
            got = await http.get("/api/v1/console/reports", params={"by": "planet"})
            assert got.status_code == 422

            # 5. A what-if replay of the morning shows in the what-if results.
            args = cli.parser().parse_args(
                ["run", "--from", str(from_ms), "--to", str(to_ms), "--lookback-h", "0.1",
                 "--policy", "recorded", "--policy", "batch"]
            )  # fmt: skip
            text = await cli.run(args, s)
            assert "reproduced identically" in text and "results saved to" in text
            latest = (await http.get("/api/v1/console/whatif")).json()["results"]
            assert [r["policy"] for r in latest[0]["runs"]] == ["greedy", "greedy", "batch"]
            recorded = next(r for r in latest[0]["runs"][0]["rows"] if r["group"] == "all")
            assert recorded["positions"] == 6 and recorded["job_seekers"] == 6

        # 6. The console page shows the same figures, charts and a CSV download.
        page = await (
            await browser.new_context(viewport={"width": 1400, "height": 1000})
        ).new_page()
        await page.goto(f"{gw.url}/supervisor#reports")
        await page.select_option("#dev-role", "supervisor")
        await page.click("#dev-login-btn")
        await page.click('#tabs button[data-tab="reports"]')
        await expect(page.locator("#rep-form")).to_be_visible()
        await page.fill("#rep-from", window[0])
        await page.fill("#rep-to", window[1])
        await page.click("#rep-run")
        cell = page.locator('#rep-table td[data-group="4301"][data-key="positions"]')
        await expect(cell).to_have_text("5")
        ratio = page.locator('#rep-table td[data-group="4301"][data-key="positions_per_seeker"]')
        await expect(ratio).to_have_text("1.00")
        for key, text in (("job_seekers", "5"), ("assignments", "3"), ("fill_rate", "50.0%"),
                          ("expired", "1"), ("cancelled", "1"), ("wage_mean", "¥246")):  # fmt: skip
            await expect(page.locator(f'#rep-table td[data-group="4301"][data-key="{key}"]')) \
                .to_have_text(text)  # fmt: skip
        await expect(
            page.locator('#rep-table td[data-group="unregistered"][data-key="rejected"]')
        ).to_have_text("1")
        await expect(page.locator('#rep-table tr.total td[data-key="job_seekers"]')).to_have_text(
            "6"
        )
        await expect(page.locator("#rep-table")).to_contain_text("未登记市场")
        await expect(page.locator('figure[data-indicator="positions"] svg rect')).to_have_count(3)
        await snap(page, "console-report")
        async with page.expect_download() as download:
            await page.click("#rep-csv")
        saved = tmp_path / "report.csv"
        await (await download.value).save_as(saved)
        assert "长沙市" in saved.read_text(encoding="utf-8-sig")

        # A reversed window is refused on the page, in words.
        await page.fill("#rep-from", window[1])
        await page.fill("#rep-to", window[0])
        await page.click("#rep-run")
        await expect(page.locator("#rep-error")).to_contain_text("ends before it starts")

        await page.click('#tabs button[data-tab="whatif"]')
        await expect(page.locator(".rep-whatif")).to_have_count(1)
        await expect(page.locator(".rep-whatif-table")).to_contain_text("batch")
        await snap(page, "console-whatif")
    assert rids  # the morning's requests, for a reader of a failure
