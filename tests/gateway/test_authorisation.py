"""Every refusal, one test each: the right status, and nothing published to Kafka."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from gateway import auth
from gateway.serve import Running
from infra.settings import Settings
from schemas import events as ev
from tests.gateway.conftest import (
    MARKET,
    OTHER_MARKET,
    Recording,
    bearer,
    module_gateway,
    module_settings,
    token,
)

pytestmark = pytest.mark.integration

REQUEST = {"market_id": MARKET, "skill": "cook", "headcount": 1}


@pytest.fixture(scope="module")
def gw_settings(base_settings: Settings) -> Settings:
    return module_settings(base_settings, "gw")


@pytest.fixture(scope="module")
async def gateway(gw_settings: Settings) -> AsyncIterator[tuple[Running, Recording]]:
    async with module_gateway(gw_settings) as running:
        yield running


@pytest.fixture(autouse=True)
def nothing_sent_yet(gateway: tuple[Running, Recording]) -> None:
    gateway[1].sent.clear()


@pytest.fixture
async def http(gateway: tuple[Running, Recording]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway[0].url) as client:
        yield client


def new_request() -> dict[str, object]:
    return {"request_id": f"R-{uuid.uuid4().hex[:10]}", **REQUEST}


async def test_no_token(http: httpx.AsyncClient, gateway: tuple[Running, Recording]) -> None:
    response = await http.post("/api/v1/requests", json=new_request())
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(gateway[0].url.replace("http", "ws") + "/ws/worker"):
            pass
    assert refused.value.response.status_code == 401
    assert gateway[1].sent == []


async def test_expired_token(
    http: httpx.AsyncClient, gateway: tuple[Running, Recording], gw_settings: Settings
) -> None:
    secret = auth.resolve_secret(gw_settings.gateway)
    old = auth.issue_token(secret, "station", MARKET, int(time.time()) - 3600, 60)
    response = await http.post("/api/v1/requests", json=new_request(), headers=bearer(old))
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]
    assert gateway[1].sent == []


async def test_forged_signature(
    http: httpx.AsyncClient, gateway: tuple[Running, Recording]
) -> None:
    forged = auth.issue_token(secrets.token_urlsafe(32), "station", MARKET, int(time.time()), 600)
    response = await http.post("/api/v1/requests", json=new_request(), headers=bearer(forged))
    assert response.status_code == 401
    worker = auth.issue_token(secrets.token_urlsafe(32), "worker", "W-1", int(time.time()), 600)
    with pytest.raises(InvalidStatus) as refused:
        async with connect(gateway[0].url.replace("http", "ws") + f"/ws/worker?token={worker}"):
            pass
    assert refused.value.response.status_code == 401
    assert gateway[1].sent == []


async def test_another_markets_request(
    http: httpx.AsyncClient, gateway: tuple[Running, Recording], gw_settings: Settings
) -> None:
    own = bearer(token(gw_settings, "station", MARKET))
    other = bearer(token(gw_settings, "station", OTHER_MARKET))
    body = new_request()
    assert (await http.post("/api/v1/requests", json=body, headers=own)).status_code == 202
    gateway[1].sent.clear()
    rid = body["request_id"]
    assert (await http.post("/api/v1/requests", json=body, headers=other)).status_code == 403
    cancel = await http.post(f"/api/v1/requests/{rid}/cancel", json={}, headers=other)
    assert cancel.status_code == 403
    assert (await http.get(f"/api/v1/requests/{rid}", headers=other)).status_code == 403
    follow = await http.get(f"/api/v1/requests/{rid}/events", headers=other)
    assert follow.status_code == 403
    assert gateway[1].sent == []


async def test_answering_another_workers_offer(
    http: httpx.AsyncClient, gateway: tuple[Running, Recording], gw_settings: Settings
) -> None:
    running, recording = gateway
    now = int(time.time() * 1000)
    theirs = ev.OfferMade(
        event_id="om:x", at_ms=now, offer_id=f"O-{uuid.uuid4().hex[:8]}", request_id="R-x",
        worker_id="W-owner", market_id=MARKET, skill="cook", wage_yuan_per_day=300.0,
        lon=113.0, lat=28.0, distance_km=1.0, score=1.0, wave=1, expires_at_ms=now + 60_000,
    )  # fmt: skip
    await running.gateway.offers.apply([theirs], [])
    intruder = token(gw_settings, "worker", "W-intruder")
    answer = {"type": "accept", "offer_id": theirs.offer_id}
    async with connect(running.url.replace("http", "ws") + f"/ws/worker?token={intruder}") as ws:
        assert json.loads(await ws.recv())["type"] == "Welcome"
        await ws.send(json.dumps(answer))
        refused = json.loads(await ws.recv())
    assert refused["type"] == "AnswerRefused"
    posted = await http.post("/api/v1/answers", json=answer, headers=bearer(intruder))
    assert posted.json()["type"] == "AnswerRefused"
    peek = await http.get("/api/v1/workers/W-owner/offers", headers=bearer(intruder))
    assert peek.status_code == 403
    assert recording.sent == []


@pytest.mark.parametrize("role", ["supervisor", "operator"])
async def test_supervisor_reads_but_never_writes(
    http: httpx.AsyncClient, gateway: tuple[Running, Recording], gw_settings: Settings, role: str
) -> None:
    """Supervisors and operators read every request and worker; outside the console's
    requeue (operators only) they write nothing."""
    body = new_request()
    own = bearer(token(gw_settings, "station", MARKET))
    assert (await http.post("/api/v1/requests", json=body, headers=own)).status_code == 202
    gateway[1].sent.clear()
    sup = bearer(token(gw_settings, role, "audit"))  # type: ignore[arg-type]
    rid = body["request_id"]
    assert (await http.get(f"/api/v1/requests/{rid}", headers=sup)).status_code == 200
    assert (await http.get("/api/v1/workers/W-1/offers", headers=sup)).status_code == 200
    assert (await http.post("/api/v1/requests", json=new_request(), headers=sup)).status_code == 403
    cancel = await http.post(f"/api/v1/requests/{rid}/cancel", json={}, headers=sup)
    assert cancel.status_code == 403
    answer = {"type": "accept", "offer_id": "O-1"}
    assert (await http.post("/api/v1/answers", json=answer, headers=sup)).status_code == 403
    check_in = {"market_id": MARKET, "skills": ["cook"]}
    assert (
        await http.post("/api/v1/worker/check-in", json=check_in, headers=sup)
    ).status_code == 403
    with pytest.raises(InvalidStatus) as refused:
        url = gateway[0].url.replace("http", "ws") + f"/ws/worker?token={sup['Authorization'][7:]}"
        async with connect(url):
            pass
    assert refused.value.response.status_code == 403
    assert gateway[1].sent == []


async def test_station_login_with_its_key(
    http: httpx.AsyncClient, gw_settings: Settings, gateway: tuple[Running, Recording]
) -> None:
    key = auth.station_key(auth.resolve_secret(gw_settings.gateway), MARKET)
    good = await http.post("/api/v1/auth/station", json={"market_id": MARKET, "key": key})
    assert good.status_code == 200
    me = await http.get("/api/v1/me", headers=bearer(good.json()["token"]))
    assert me.json() == {"role": "station", "subject": MARKET}
    wrong = await http.post("/api/v1/auth/station", json={"market_id": OTHER_MARKET, "key": key})
    assert wrong.status_code == 401
    assert gateway[1].sent == []


async def test_invalid_and_conflicting_posts(
    http: httpx.AsyncClient, gateway: tuple[Running, Recording], gw_settings: Settings
) -> None:
    own = bearer(token(gw_settings, "station", MARKET))
    bad = {**new_request(), "headcount": 0}
    assert (await http.post("/api/v1/requests", json=bad, headers=own)).status_code == 422
    half = {**new_request(), "lon": 113.0}
    assert (await http.post("/api/v1/requests", json=half, headers=own)).status_code == 422
    assert gateway[1].sent == []
    body = new_request()
    assert (await http.post("/api/v1/requests", json=body, headers=own)).status_code == 202
    changed = {**body, "headcount": 3}
    assert (await http.post("/api/v1/requests", json=changed, headers=own)).status_code == 409
    assert len(gateway[1].sent) == 1
