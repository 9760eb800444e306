"""The gateway's edges, one finding each: a request id claimed for one market atomically, an
offer answered once, frames bounded, invalid ids refused with 4xx, the kiosk CLI through the
HTTP API. Real Kafka, Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from dispatch.model import Job, RequestState
from gateway import auth
from gateway.serve import Running
from infra.clients import keys_for
from infra.settings import Settings
from infra.state_codec import dump_state
from producers import kiosk
from schemas import events as ev
from schemas.topics import HIRE_REQUESTS, OFFER_RESPONSES
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
API = "/api/v1"


@pytest.fixture(scope="module")
def gw_settings(base_settings: Settings) -> Settings:
    return module_settings(base_settings, "edge")


@pytest.fixture(scope="module")
async def gateway(gw_settings: Settings) -> AsyncIterator[tuple[Running, Recording]]:
    async with module_gateway(gw_settings) as running:
        yield running


@pytest.fixture(autouse=True)
def nothing_sent_yet(gateway: tuple[Running, Recording]) -> None:
    gateway[1].sent.clear()


@pytest.fixture
async def http(gateway: tuple[Running, Recording]) -> AsyncIterator[httpx.AsyncClient]:
    # A fresh broker may take seconds to elect its first leaders: be patient with publishes.
    async with httpx.AsyncClient(base_url=gateway[0].url, timeout=60) as client:
        yield client


def rid() -> str:
    return f"R-{uuid.uuid4().hex[:10]}"


def ws_url(running: Running, tok: str) -> str:
    return running.url.replace("http", "ws") + f"/ws/worker?token={tok}"


async def next_of(ws: ClientConnection, kind: str) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while True:
            msg: dict[str, Any] = json.loads(await ws.recv())
            if msg["type"] == kind:
                return msg


def sent_of(recording: Recording, topic: str) -> list[Any]:
    return [o.message for o in recording.sent if o.topic == topic]


# --- a request id belongs to one market ------------------------------------------------------


async def test_two_markets_posting_one_id_at_once_one_wins(
    http: httpx.AsyncClient, gateway: tuple[Running, Recording], gw_settings: Settings
) -> None:
    stations = [bearer(token(gw_settings, "station", m)) for m in (MARKET, OTHER_MARKET)]
    for _ in range(5):
        request_id = rid()
        bodies = [{"request_id": request_id, "market_id": m, "skill": "cook"}
                  for m in (MARKET, OTHER_MARKET)]  # fmt: skip
        answers = await asyncio.gather(*(
            http.post(f"{API}/requests", json=b, headers=h)
            for b, h in zip(bodies, stations, strict=True)
        ))  # fmt: skip
        assert sorted(a.status_code for a in answers) == [202, 409]
        winner = 0 if answers[0].status_code == 202 else 1
        published = sent_of(gateway[1], HIRE_REQUESTS)
        assert [m.market_id for m in published] == [bodies[winner]["market_id"]]
        assert answers[1 - winner].json()["detail"] == "this request id is already in use"
        again = await http.post(f"{API}/requests", json=bodies[winner], headers=stations[winner])
        assert again.status_code == 202 and again.json()["detail"] == "already posted"
        gateway[1].sent.clear()


async def test_an_id_the_dispatcher_holds_for_another_market_cannot_be_claimed(
    http: httpx.AsyncClient, gateway: tuple[Running, Recording], gw_settings: Settings
) -> None:
    """The request reached Kafka without the gateway (or Redis lost the claim): the dispatcher's
    state says whose it is, and another station can neither claim, read nor cancel it."""
    request_id = rid()
    now = int(time.time() * 1000)
    job = Job(request_id, MARKET, "cook", 1, 250.0, 112.9, 28.2, now, now, now + 600_000)
    redis = Redis.from_url(gw_settings.redis_url, decode_responses=True)
    try:  # the dispatcher's record of it, as its request store keeps it
        key = keys_for(gw_settings).request(request_id)
        await redis.hset(key, mapping={"v": 1, "s": dump_state(RequestState(job=job))})
    finally:
        await redis.aclose()
    intruder = bearer(token(gw_settings, "station", OTHER_MARKET))
    body = {"request_id": request_id, "market_id": OTHER_MARKET, "skill": "cook"}
    assert (await http.post(f"{API}/requests", json=body, headers=intruder)).status_code == 409
    assert (await http.get(f"{API}/requests/{request_id}", headers=intruder)).status_code == 403
    follow = await http.get(f"{API}/requests/{request_id}/events", headers=intruder)
    assert follow.status_code == 403
    cancel = await http.post(f"{API}/requests/{request_id}/cancel", json={}, headers=intruder)
    assert cancel.status_code == 403
    owner = bearer(token(gw_settings, "station", MARKET))
    assert (await http.get(f"{API}/requests/{request_id}", headers=owner)).status_code == 200
    assert gateway[1].sent == []


# --- an offer is answered once -------------------------------------------------------------------


async def live_offer(running: Running, worker: str) -> ev.OfferMade:
    now = int(time.time() * 1000)
    offer_id = f"{rid()}:{worker}"
    offer = ev.OfferMade(
        event_id=f"om:{offer_id}", at_ms=now, offer_id=offer_id, request_id=offer_id.split(":")[0],
        worker_id=worker, market_id=MARKET, skill="cook", wage_yuan_per_day=300.0, lon=113.0,
        lat=28.0, distance_km=1.0, score=1.0, wave=1, expires_at_ms=now + 60_000,
    )  # fmt: skip
    await running.gateway.offers.apply([offer], [])
    return offer


async def test_three_answers_on_three_sockets_at_once_one_passes(
    gateway: tuple[Running, Recording], gw_settings: Settings
) -> None:
    running, recording = gateway
    worker = f"W-{uuid.uuid4().hex[:8]}"
    offer = await live_offer(running, worker)
    tok = token(gw_settings, "worker", worker)
    async with contextlib.AsyncExitStack() as stack:
        sockets = [await stack.enter_async_context(connect(ws_url(running, tok))) for _ in "abc"]
        for ws in sockets:
            await next_of(ws, "Welcome")
        answers = [{"type": t, "offer_id": offer.offer_id} for t in ("accept", "decline", "accept")]
        await asyncio.gather(
            *(ws.send(json.dumps(a)) for ws, a in zip(sockets, answers, strict=True))
        )
        replies = [json.loads(await ws.recv()) for ws in sockets]
    assert sorted(r["type"] for r in replies) == ["AnswerRefused", "AnswerRefused", "AnswerSent"]
    assert len(sent_of(recording, OFFER_RESPONSES)) == 1


async def test_three_answers_over_http_at_once_one_passes_the_rest_409(
    http: httpx.AsyncClient, gateway: tuple[Running, Recording], gw_settings: Settings
) -> None:
    running, recording = gateway
    worker = f"W-{uuid.uuid4().hex[:8]}"
    offer = await live_offer(running, worker)
    mine = bearer(token(gw_settings, "worker", worker))
    answers = await asyncio.gather(*(
        http.post(f"{API}/answers", json={"type": t, "offer_id": offer.offer_id}, headers=mine)
        for t in ("accept", "decline", "accept")
    ))  # fmt: skip
    assert sorted(a.status_code for a in answers) == [200, 409, 409]
    assert len(sent_of(recording, OFFER_RESPONSES)) == 1
    late = await http.post(f"{API}/answers", json={"type": "accept", "offer_id": offer.offer_id},
                           headers=mine)  # fmt: skip
    assert late.status_code == 409


async def test_a_stored_offer_that_no_longer_parses_breaks_nothing(
    http: httpx.AsyncClient, gateway: tuple[Running, Recording], gw_settings: Settings
) -> None:
    """An offer stored with a NaN became ``"distance_km": null``: every read of the worker's
    offers failed until it expired. Now it is skipped."""
    running, _ = gateway
    worker = f"W-{uuid.uuid4().hex[:8]}"
    good = await live_offer(running, worker)
    broken = json.loads(good.model_dump_json()) | {"offer_id": "R-x:" + worker, "distance_km": None}
    redis = Redis.from_url(gw_settings.redis_url, decode_responses=True)
    try:
        await redis.hset(running.gateway.offers.keys.offers(worker), "R-x", json.dumps(broken))
    finally:
        await redis.aclose()
    mine = bearer(token(gw_settings, "worker", worker))
    listed = await http.get(f"{API}/workers/{worker}/offers", headers=mine)
    assert listed.status_code == 200 and [o["offer_id"] for o in listed.json()] == [good.offer_id]
    async with connect(ws_url(running, mine["Authorization"][7:])) as ws:
        assert (await next_of(ws, "Welcome"))["live_offers"] == 1
    answer = {"type": "decline", "offer_id": "R-x"}
    assert (await http.post(f"{API}/answers", json=answer, headers=mine)).status_code == 200


# --- frames ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "code"),
    [(b"\x00\x01binary", 1003), ("x" * 5000, 1009), ("x" * 200_000, 1009)],
    ids=["binary", "over-4-KiB", "over-the-protocol-limit"],
)
async def test_binary_and_oversized_frames_close_the_socket(
    gateway: tuple[Running, Recording], gw_settings: Settings, frame: str | bytes, code: int
) -> None:
    tok = token(gw_settings, "worker", f"W-{uuid.uuid4().hex[:8]}")
    async with connect(ws_url(gateway[0], tok), max_size=None) as ws:
        await next_of(ws, "Welcome")
        await ws.send(frame)
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(20):
                while True:
                    await ws.recv()
    assert ws.close_code == code
    assert gateway[1].sent == []


# --- invalid ids ---------------------------------------------------------------------------------


@pytest.mark.parametrize("subject", ["W 1", "W-1;DROP", "x" * 141, "工人"])
async def test_a_token_for_an_invalid_worker_id_is_401_never_500(
    http: httpx.AsyncClient, gateway: tuple[Running, Recording], gw_settings: Settings,
    subject: str,
) -> None:  # fmt: skip
    secret = auth.resolve_secret(gw_settings.gateway)
    now = int(time.time())
    claims = {"sub": subject, "role": "worker", "iat": now, "exp": now + 600}
    bad = bearer(jwt.encode(claims, secret, algorithm="HS256"))
    check_in = {"market_id": MARKET, "skills": ["cook"]}
    assert (
        await http.post(f"{API}/worker/check-in", json=check_in, headers=bad)
    ).status_code == 401
    assert (await http.post(f"{API}/worker/offline", headers=bad)).status_code == 401
    answer = {"type": "accept", "offer_id": "O-1"}
    assert (await http.post(f"{API}/answers", json=answer, headers=bad)).status_code == 401
    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url(gateway[0], bad["Authorization"][7:])):
            pass
    assert refused.value.response.status_code == 401
    assert gateway[1].sent == []


@pytest.mark.parametrize("worker_id", ["W%201", "x" * 141, "W;1"])
async def test_an_invalid_worker_id_in_the_path_is_422(
    http: httpx.AsyncClient, gw_settings: Settings, worker_id: str
) -> None:
    sup = bearer(token(gw_settings, "supervisor", "audit"))
    assert (await http.get(f"{API}/workers/{worker_id}/offers", headers=sup)).status_code == 422


async def test_dev_login_issues_no_token_for_an_invalid_id(http: httpx.AsyncClient) -> None:
    r = await http.post(f"{API}/auth/dev", json={"role": "worker", "subject": "W 1"})
    assert r.status_code == 422


# --- the kiosk CLI goes through the gateway ------------------------------------------------------


async def kiosk_cli(*argv: str) -> int:
    """Run ``gig-kiosk`` as a person would (its own event loop, in a thread); its exit code."""
    with pytest.raises(SystemExit) as done:
        await asyncio.to_thread(kiosk.main, list(argv))
    code = done.value.code
    return code if isinstance(code, int) else 2


async def test_kiosk_cli_posts_and_follows_through_the_gateway(
    gateway: tuple[Running, Recording], gw_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    running, recording = gateway
    key = auth.station_key(auth.resolve_secret(gw_settings.gateway), MARKET)
    request_id = rid()
    now = int(time.time() * 1000)
    filled = ev.RequestFilled(event_id=f"rf:{request_id}", at_ms=now, request_id=request_id,
                              headcount=1, offers_made=1)  # fmt: skip
    await running.gateway.history.add([(request_id, filled)])
    common = ("--market", MARKET, "--gateway", running.url, "--key", key)
    code = await kiosk_cli("post", *common, "--skill", "cook", "--request", request_id)
    assert code == 0, capsys.readouterr()
    assert "招满 / filled" in capsys.readouterr().out
    posted = sent_of(recording, HIRE_REQUESTS)
    assert [(m.type, m.request_id, m.market_id) for m in posted] == [
        ("HireRequested", request_id, MARKET)
    ]
    assert await kiosk_cli("cancel", *common, "--request", request_id) == 0
    assert [m.type for m in sent_of(recording, HIRE_REQUESTS)][-1] == "HireCancelled"


async def test_kiosk_cli_with_a_wrong_key_or_another_markets_id_is_refused(
    gateway: tuple[Running, Recording], gw_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    running, recording = gateway
    secret = auth.resolve_secret(gw_settings.gateway)
    wrong = ("--market", MARKET, "--gateway", running.url, "--key", "not-the-key")
    assert await kiosk_cli("post", *wrong, "--skill", "cook", "--no-watch") == 2
    assert "401" in capsys.readouterr().err
    request_id = rid()
    own = ("--market", MARKET, "--gateway", running.url, "--key",
           auth.station_key(secret, MARKET))  # fmt: skip
    assert await kiosk_cli("post", *own, "--skill", "cook", "--request", request_id,
                           "--no-watch") == 0  # fmt: skip
    other = ("--market", OTHER_MARKET, "--gateway", running.url, "--key",
             auth.station_key(secret, OTHER_MARKET))  # fmt: skip
    assert await kiosk_cli("post", *other, "--skill", "cook", "--request", request_id,
                           "--no-watch") == 2  # fmt: skip
    assert "409" in capsys.readouterr().err
    assert await kiosk_cli("cancel", *other, "--request", request_id) == 2
    assert [m.market_id for m in sent_of(recording, HIRE_REQUESTS)] == [MARKET]
