"""The job after the hire over HTTP and the worker's socket, on the real stack: the worker is
told they are hired with the job's details, the station and the worker report its steps, the
kiosk's view and the worker's job list follow, and the worker is offered the next job."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import connect

from consumers.services import run_dispatcher, run_presence
from gateway.serve import Running
from infra.keys import Keys
from infra.settings import Settings
from tests.conftest import eventually, running
from tests.gateway.conftest import MARKET, OTHER_MARKET, Recording, bearer, token
from tests.gateway.test_instant_hire import next_of

pytestmark = pytest.mark.integration


async def test_hired_then_arrived_done_and_offered_again(
    gw_settings: Settings, gateway: tuple[Running, Recording], redis: Redis, keys: Keys
) -> None:
    gw, _ = gateway
    worker = f"W-{uuid.uuid4().hex[:8]}"
    station = bearer(token(gw_settings, "station", MARKET))
    mine = bearer(token(gw_settings, "worker", worker))
    ws_url = (
        gw.url.replace("http", "ws") + "/ws/worker?token=" + token(gw_settings, "worker", worker)
    )
    services = ((run_presence, gw_settings), (run_dispatcher, gw_settings))
    async with (
        running(*services),
        httpx.AsyncClient(base_url=gw.url) as http,
        connect(ws_url) as ws,
    ):
        await next_of(ws, "Welcome")
        where = {"market_id": MARKET, "skills": ["caregiver", "cook"]}
        checked = await http.post("/api/v1/worker/check-in", headers=mine, json=where)
        assert checked.status_code == 202, checked.text

        async def indexed() -> bool:
            return await redis.hget(keys.bucket(worker), worker) is not None

        await eventually(indexed, what="the worker in the index")
        rid = await post(http, station, "caregiver", note="照顾老人，8点到17点",
                         contact="0731-5555", start_in_min=30)  # fmt: skip
        offer = await next_of(ws, "OfferMade")
        assert offer["note"] == "照顾老人，8点到17点" and offer["headcount"] == 1
        assert offer["market_name_zh"] == "长沙市第1零工市场"
        assert offer["start_at_ms"] - offer["at_ms"] == pytest.approx(30 * 60_000, abs=5_000)
        await ws.send(json.dumps({"type": "accept", "offer_id": offer["offer_id"]}))
        hired = await next_of(ws, "Hired")
        assert (hired["request_id"], hired["contact"], hired["others"]) == (rid, "0731-5555", 0)
        assert hired["market_name_en"] == "Changsha Gig Market 1" and hired["address"]
        jobs = (await http.get(f"/api/v1/workers/{worker}/jobs", headers=mine)).json()
        assert [(j["hired"]["request_id"], j["status"]) for j in jobs] == [(rid, "hired")]

        step = await http.post(f"/api/v1/requests/{rid}/jobs/{worker}", headers=station,
                               json={"step": "arrived"})  # fmt: skip
        assert step.status_code == 202, step.text
        assert (await next_of(ws, "JobChanged"))["status"] == "arrived"
        done = await http.post(f"/api/v1/worker/jobs/{rid}", headers=mine, json={"step": "done"})
        assert done.status_code == 202, done.text
        changed = await next_of(ws, "JobChanged")
        assert (changed["status"], changed["by"]) == ("done", "worker")

        view = (await http.get(f"/api/v1/requests/{rid}", headers=station)).json()
        assert [(j["worker_id"], j["status"]) for j in view["jobs"]] == [(worker, "done")]
        assert view["status"] == "filled" and view["assigned"] == 1
        jobs = (await http.get(f"/api/v1/workers/{worker}/jobs", headers=mine)).json()
        assert [j["status"] for j in jobs] == ["done"]

        # Back in the pool: the next request near by is offered to the same worker.
        nxt = await post(http, station, "cook")
        assert (await next_of(ws, "OfferMade"))["request_id"] == nxt


async def test_job_steps_are_refused_with_reasons(
    gw_settings: Settings, gateway: tuple[Running, Recording], redis: Redis, keys: Keys
) -> None:
    gw, recording = gateway
    worker, stranger = f"W-{uuid.uuid4().hex[:8]}", f"W-{uuid.uuid4().hex[:8]}"
    station = bearer(token(gw_settings, "station", MARKET))
    other = bearer(token(gw_settings, "station", OTHER_MARKET))
    mine = bearer(token(gw_settings, "worker", worker))
    services = ((run_presence, gw_settings), (run_dispatcher, gw_settings))
    async with running(*services), httpx.AsyncClient(base_url=gw.url) as http:
        ws_url = (
            gw.url.replace("http", "ws")
            + f"/ws/worker?token={token(gw_settings, 'worker', worker)}"
        )
        async with connect(ws_url) as ws:
            await next_of(ws, "Welcome")
            await http.post("/api/v1/worker/check-in", headers=mine,
                            json={"market_id": MARKET, "skills": ["tiler"]})  # fmt: skip

            async def indexed() -> bool:
                return await redis.hget(keys.bucket(worker), worker) is not None

            await eventually(indexed, what="the worker in the index")
            rid = await post(http, station, "tiler")
            offer = await next_of(ws, "OfferMade")
            await ws.send(json.dumps({"type": "accept", "offer_id": offer["offer_id"]}))
            await next_of(ws, "Hired")

        async def at(path: str, body: dict[str, Any], headers: dict[str, str]) -> int:
            return (await http.post(path, json=body, headers=headers)).status_code

        job = f"/api/v1/requests/{rid}/jobs/{worker}"
        assert await at(job, {"step": "arrived"}, other) == 403  # another station's request
        assert await at(f"/api/v1/requests/{rid}/jobs/{stranger}", {"step": "done"}, station) == 404
        assert await at(f"/api/v1/worker/jobs/{rid}", {"step": "no_show"}, mine) == 422
        assert await at(job, {"step": "later"}, station) == 422
        sent = len(recording.sent)
        assert await at(job, {"step": "no_show", "reason": "没来"}, station) == 202

        async def no_show() -> bool:
            view = (await http.get(f"/api/v1/requests/{rid}", headers=station)).json()
            return bool(view["jobs"] and view["jobs"][0]["status"] == "no_show")

        await eventually(no_show, what="the no-show in the request's view")
        refused = await http.post(job, json={"step": "done"}, headers=station)
        assert refused.status_code == 409
        assert refused.json()["detail"] == "the job is no_show, it cannot become done"
        # Only the one accepted step was published.
        steps = [o.message for o in recording.sent[sent:] if o.message.type == "JobReported"]  # type: ignore[attr-defined]
        assert [(s.step, s.by, s.reason) for s in steps] == [("no_show", "station", "没来")]


async def post(http: httpx.AsyncClient, station: dict[str, str], skill: str, **extra: Any) -> str:
    rid = f"R-{uuid.uuid4().hex[:10]}"
    body = {"request_id": rid, "market_id": MARKET, "skill": skill, "headcount": 1, **extra}
    posted = await http.post("/api/v1/requests", json=body, headers=station)
    assert posted.status_code == 202, posted.text
    return rid
