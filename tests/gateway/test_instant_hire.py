"""Acceptance: a kiosk posts over HTTP, the worker's socket gets the offer, the worker accepts
on the socket, and the kiosk sees the request filled: real Kafka, Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect

from consumers.services import run_dispatcher, run_presence
from gateway.serve import Running
from infra.keys import Keys
from infra.settings import Settings
from tests.conftest import eventually, running
from tests.gateway.conftest import MARKET, Recording, token

pytestmark = pytest.mark.integration


async def next_of(ws: ClientConnection, kind: str, timeout_s: float = 20.0) -> dict[str, Any]:
    """The next socket message of a type, skipping others."""
    async with asyncio.timeout(timeout_s):
        while True:
            msg: dict[str, Any] = json.loads(await ws.recv())
            if msg["type"] == kind:
                return msg


async def test_post_offer_accept_filled(
    gw_settings: Settings, gateway: tuple[Running, Recording], redis: Redis, keys: Keys
) -> None:
    gw, _ = gateway
    worker = f"W-{uuid.uuid4().hex[:8]}"
    station = {"Authorization": f"Bearer {token(gw_settings, 'station', MARKET)}"}
    mine = {"Authorization": f"Bearer {token(gw_settings, 'worker', worker)}"}
    ws_url = (
        gw.url.replace("http", "ws") + f"/ws/worker?token={token(gw_settings, 'worker', worker)}"
    )
    services = ((run_presence, gw_settings), (run_dispatcher, gw_settings))
    async with running(*services), httpx.AsyncClient(base_url=gw.url) as http:
        async with connect(ws_url) as ws:
            assert (await next_of(ws, "Welcome"))["live_offers"] == 0
            checked = await http.post(
                "/api/v1/worker/check-in",
                json={"market_id": MARKET, "skills": ["welder"]},
                headers=mine,
            )
            assert checked.status_code == 202, checked.text

            async def indexed() -> bool:
                return await redis.hget(keys.bucket(worker), worker) is not None

            await eventually(indexed, what="the worker in the index")
            rid = f"R-{uuid.uuid4().hex[:10]}"
            body = {"request_id": rid, "market_id": MARKET, "skill": "welder", "headcount": 1}
            posted = await http.post("/api/v1/requests", json=body, headers=station)
            assert posted.status_code == 202, posted.text
            again = await http.post("/api/v1/requests", json=body, headers=station)
            assert again.status_code == 202 and again.json()["detail"] == "already posted"

            offer = await next_of(ws, "OfferMade")
            assert (offer["request_id"], offer["worker_id"]) == (rid, worker)
            assert offer["expires_at_ms"] > time.time() * 1000
            await ws.send(json.dumps({"type": "accept", "offer_id": offer["offer_id"]}))
            receipt = await next_of(ws, "AnswerSent")
            assert receipt["answer"] == "accept"

        async def filled() -> bool:
            view = (await http.get(f"/api/v1/requests/{rid}", headers=station)).json()
            return bool(view["status"] == "filled")

        await eventually(filled, what="the request filled")
        view = (await http.get(f"/api/v1/requests/{rid}", headers=station)).json()
        assert [a["worker_id"] for a in view["assignments"]] == [worker]
        assert view["assigned"] == 1

        # The progress stream replays the history up to the fill (and stays open: the hired
        # worker's job goes on).
        seen = []
        async with http.stream("GET", f"/api/v1/requests/{rid}/events", headers=station) as sse:
            async for line in sse.aiter_lines():
                if line.startswith("event: "):
                    seen.append(line.removeprefix("event: "))
                if seen[-1:] == ["RequestFilled"]:
                    break
        assert seen[0] == "WaveSent" and seen[-1] == "RequestFilled"
        assert "WorkerAssigned" in seen


async def test_reconnect_gets_live_offers_again(
    gw_settings: Settings, gateway: tuple[Running, Recording]
) -> None:
    """An offer made while the worker was away is sent when they connect, on any process."""
    from schemas import events as ev

    gw, _ = gateway
    worker = f"W-{uuid.uuid4().hex[:8]}"
    now = int(time.time() * 1000)
    live = ev.OfferMade(
        event_id="om:1", at_ms=now, offer_id=f"O-{worker}", request_id="R-1", worker_id=worker,
        market_id=MARKET, skill="cook", wage_yuan_per_day=300.0, lon=113.0, lat=28.0,
        distance_km=1.0, score=1.0, wave=1, expires_at_ms=now + 60_000,
    )  # fmt: skip
    lapsed = live.model_copy(update={"offer_id": f"O2-{worker}", "expires_at_ms": now - 1})
    await gw.gateway.offers.apply([live, lapsed], [])
    url = gw.url.replace("http", "ws") + f"/ws/worker?token={token(gw_settings, 'worker', worker)}"
    async with connect(url) as ws:
        first = json.loads(await ws.recv())
        welcome = json.loads(await ws.recv())
    assert first["offer_id"] == live.offer_id
    assert welcome == {"type": "Welcome", "worker_id": worker, "live_offers": 1}
