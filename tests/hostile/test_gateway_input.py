"""Hostile HTTP and WebSocket input against a real gateway: malformed, huge and wrongly typed
bodies, invalid ids in paths, tokens that must not pass, hostile text frames, and races the
edge tests (tests/gateway/test_edges.py) do not run. Every refusal is a 4xx, never a 5xx, and
nothing refused is published. Real Kafka, Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import uuid
import warnings
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway import auth
from gateway.serve import Running
from infra.settings import Settings
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
THIRD_MARKET = "G4301003"


@pytest.fixture(scope="module")
def gw_settings(base_settings: Settings) -> Settings:
    return module_settings(base_settings, "hostile")


@pytest.fixture(scope="module")
async def gateway(gw_settings: Settings) -> AsyncIterator[tuple[Running, Recording]]:
    async with module_gateway(gw_settings) as running:
        yield running


@pytest.fixture(autouse=True)
def nothing_sent_yet(gateway: tuple[Running, Recording]) -> None:
    gateway[1].sent.clear()


@pytest.fixture
async def http(gateway: tuple[Running, Recording]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway[0].url, timeout=30) as client:
        yield client


def rid() -> str:
    return f"R-{uuid.uuid4().hex[:10]}"


def wid() -> str:
    return f"W-{uuid.uuid4().hex[:8]}"


def ws_url(running: Running, tok: str) -> str:
    return running.url.replace("http", "ws") + f"/ws/worker?token={tok}"


async def next_reply(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(20):
        reply: dict[str, Any] = json.loads(await ws.recv())
        return reply


def headers_for(settings: Settings, who: str) -> dict[str, str]:
    if who == "station":
        return bearer(token(settings, "station", MARKET))
    if who == "worker":
        return bearer(token(settings, "worker", "W-hostile"))
    return {}


async def still_up(http: httpx.AsyncClient, settings: Settings) -> None:
    me = await http.get(f"{API}/me", headers=headers_for(settings, "station"))
    assert me.status_code == 200


# --- bodies ----------------------------------------------------------------------------------

# (path, who calls it)
BODY_ROUTES = [
    (f"{API}/requests", "station"),
    (f"{API}/requests/R-hostile/cancel", "station"),
    (f"{API}/answers", "worker"),
    (f"{API}/worker/check-in", "worker"),
    (f"{API}/auth/station", "nobody"),
    (f"{API}/auth/dev", "nobody"),
]
MALFORMED = [
    b"{not json",
    b"",
    b"\xff\xfe\xfd",
    b"null",
    b"[]",
    b'"text"',
    b"42",
    b"{" * 10,
    b"[" * 100_000,
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    b'{"x": NaN}',
    b'{"x": ' + b"9" * 5000 + b"}",
    json.dumps({f"k{i}": i for i in range(20_000)}).encode(),
]


@pytest.mark.parametrize(("path", "who"), BODY_ROUTES, ids=[p for p, _ in BODY_ROUTES])
async def test_malformed_bodies_are_4xx_and_publish_nothing(
    http: httpx.AsyncClient,
    gateway: tuple[Running, Recording],
    gw_settings: Settings,
    path: str,
    who: str,
) -> None:
    for content_type in ("application/json", "text/plain"):
        headers = headers_for(gw_settings, who) | {"Content-Type": content_type}
        for body in MALFORMED:
            r = await http.post(path, content=body, headers=headers)
            assert 400 <= r.status_code < 500, (content_type, body[:40], r.status_code, r.text)
            assert isinstance(r.json()["detail"], str | list)
    assert gateway[1].sent == []
    await still_up(http, gw_settings)


def _request(**changes: Any) -> dict[str, Any]:
    return {"request_id": rid(), "market_id": MARKET, "skill": "cook"} | changes


NAN, INF = float("nan"), float("inf")
# (path, who, body) whose JSON is well formed but whose values the API refuses with 422.
WRONG_TYPES: list[tuple[str, str, dict[str, Any]]] = [
    *[(f"{API}/requests", "station", _request(**c)) for c in (
        {"headcount": "3"}, {"headcount": True}, {"headcount": 3.5}, {"headcount": 2**70},
        {"wage_yuan_per_day": NAN}, {"wage_yuan_per_day": INF}, {"wage_yuan_per_day": -INF},
        {"wage_yuan_per_day": 1e308}, {"deadline_min": 0}, {"deadline_min": NAN},
        {"deadline_min": 1e308}, {"lon": NAN, "lat": 28.2}, {"lon": 28.2, "lat": 113.0},
        {"skill": 5}, {"skill": "astronaut"}, {"request_id": 123}, {"request_id": "a b"},
        {"request_id": "x" * 141}, {"market_id": None}, {"note": "n" * 201},
        {"note": "\x00" * 201}, {"extra": 1}, {"skill": ["cook"]},
    )],
    (f"{API}/requests", "station", {"request_id": rid()}),
    (f"{API}/requests/R-hostile/cancel", "station", {"reason": 5}),
    (f"{API}/requests/R-hostile/cancel", "station", {"reason": "r" * 201}),
    (f"{API}/answers", "worker", {"type": "maybe", "offer_id": "O-1"}),
    (f"{API}/answers", "worker", {"type": "accept", "offer_id": 5}),
    (f"{API}/answers", "worker", {"type": "accept", "offer_id": "a b"}),
    (f"{API}/answers", "worker", {"type": "accept", "offer_id": "O-1", "reason": "r" * 201}),
    (f"{API}/answers", "worker", {"type": "accept"}),
    (f"{API}/worker/check-in", "worker", {"skills": "cook", "market_id": MARKET}),
    (f"{API}/worker/check-in", "worker", {"skills": [], "market_id": MARKET}),
    (f"{API}/worker/check-in", "worker", {"skills": ["cook"] * 6, "market_id": MARKET}),
    (f"{API}/worker/check-in", "worker", {"skills": ["cook"], "lon": NAN, "lat": 28.2}),
    (f"{API}/worker/check-in", "worker", {"skills": ["cook"], "lon": 113.0, "lat": INF}),
    (f"{API}/worker/check-in", "worker", {"skills": ["cook"], "market_id": "G9999999"}),
    (f"{API}/worker/check-in", "worker", {"skills": ["cook"]}),
    (f"{API}/auth/station", "nobody", {"market_id": MARKET, "key": ""}),
    (f"{API}/auth/station", "nobody", {"market_id": "a b", "key": "k"}),
    (f"{API}/auth/station", "nobody", {"market_id": MARKET, "key": "k" * 201}),
    (f"{API}/auth/dev", "nobody", {"role": "admin", "subject": "x"}),
    (f"{API}/auth/dev", "nobody", {"role": "worker", "subject": ""}),
]  # fmt: skip


async def test_wrong_types_and_values_are_422_never_500(
    http: httpx.AsyncClient, gateway: tuple[Running, Recording], gw_settings: Settings
) -> None:
    answers = []
    for path, who, body in WRONG_TYPES:
        raw = json.dumps(body, allow_nan=True).encode()  # NaN and Infinity as bare tokens
        headers = headers_for(gw_settings, who) | {"Content-Type": "application/json"}
        r = await http.post(path, content=raw, headers=headers)
        answers.append((path, raw[:90].decode(), r.status_code))
    assert [a for a in answers if a[2] != 422] == [], "\n".join(map(str, answers))
    assert gateway[1].sent == []


async def test_huge_bodies_are_refused_and_the_gateway_goes_on(
    http: httpx.AsyncClient, gateway: tuple[Running, Recording], gw_settings: Settings
) -> None:
    station = headers_for(gw_settings, "station") | {"Content-Type": "application/json"}
    bodies = [
        json.dumps(_request(note="n" * (1 << 20))).encode(),
        json.dumps(_request(note="\x00" * (200 << 10))).encode(),
        b'{"request_id": "' + b"R" * (8 << 20) + b'"}',
    ]
    for body in bodies:
        r = await http.post(f"{API}/requests", content=body, headers=station)
        assert r.status_code in (413, 422), (len(body), r.status_code)
    assert gateway[1].sent == []
    await still_up(http, gw_settings)


# --- paths -----------------------------------------------------------------------------------

BAD_PATH_IDS = ["a%20b", "x" * 141, "%E5%B7%A5%E4%BA%BA", "R;1", "%00", "R%0D%0AX-Injected:%201",
                "%2E%2E%2F%2E%2E%2Fetc", "R%22%3E%3Cscript%3E"]  # fmt: skip


@pytest.mark.parametrize("bad", BAD_PATH_IDS)
async def test_invalid_ids_in_paths_are_4xx(
    http: httpx.AsyncClient, gateway: tuple[Running, Recording], gw_settings: Settings, bad: str
) -> None:
    station = headers_for(gw_settings, "station")
    sup = bearer(token(gw_settings, "supervisor", "audit"))
    calls = [
        http.get(f"{API}/requests/{bad}", headers=station),
        http.post(f"{API}/requests/{bad}/cancel", json={}, headers=station),
        http.get(f"{API}/requests/{bad}/events", headers=station),
        http.get(f"{API}/markets/{bad}"),
        http.get(f"{API}/workers/{bad}/offers", headers=sup),
    ]
    codes = [(await c).status_code for c in calls]
    assert all(c in (404, 422) for c in codes), codes
    assert gateway[1].sent == []


async def test_unknown_but_valid_ids_are_404(
    http: httpx.AsyncClient, gw_settings: Settings
) -> None:
    station = headers_for(gw_settings, "station")
    assert (await http.get(f"{API}/requests/{rid()}", headers=station)).status_code == 404
    cancel = await http.post(f"{API}/requests/{rid()}/cancel", json={}, headers=station)
    assert cancel.status_code == 404
    assert (await http.get(f"{API}/markets/G9999999")).status_code == 404


# --- tokens ----------------------------------------------------------------------------------


def _b64(part: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()


def bad_tokens(settings: Settings) -> dict[str, str]:
    """Tokens that must all be refused with 401."""
    secret = auth.resolve_secret(settings.gateway)
    now = int(time.time())
    good = {"sub": MARKET, "role": "station", "iat": now, "exp": now + 600}

    def signed(claims: dict[str, Any], algorithm: str = "HS256") -> str:
        with warnings.catch_warnings():  # PyJWT warns of a short key for HS512: that is the point
            warnings.simplefilter("ignore")
            return jwt.encode(claims, secret, algorithm=algorithm)

    return {
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(good)}.",
        "HS512 with the secret": signed(good, "HS512"),
        "no exp": signed({k: v for k, v in good.items() if k != "exp"}),
        "no sub": signed({k: v for k, v in good.items() if k != "sub"}),
        "exp as text": signed(good | {"exp": "never"}),
        "expired a second ago": signed(good | {"exp": now - 1}),
        "role admin": signed(good | {"role": "admin"}),
        "no role": signed({k: v for k, v in good.items() if k != "role"}),
        "sub a number": signed(good | {"sub": 5}),
        "sub with a NUL": signed(good | {"sub": "G43\x0001001"}),
        "payload swapped": _swapped(signed(good), good | {"role": "supervisor"}),
        "three dots": "a.b.c",
        "4 KiB of junk": "x" * 4096,
    }  # fmt: skip


def _swapped(tok: str, claims: dict[str, Any]) -> str:
    """The token's header and signature around other claims."""
    head, _, signature = tok.split(".")
    return f"{head}.{_b64(claims)}.{signature}"


PROTECTED = [
    ("GET", f"{API}/me", None),
    ("POST", f"{API}/requests", {"request_id": "R-tok", "market_id": MARKET, "skill": "cook"}),
    ("GET", f"{API}/requests/R-tok", None),
    ("POST", f"{API}/requests/R-tok/cancel", {}),
    ("GET", f"{API}/requests/R-tok/events", None),
    ("GET", f"{API}/workers/W-1/offers", None),
    ("POST", f"{API}/answers", {"type": "accept", "offer_id": "O-1"}),
    ("POST", f"{API}/worker/check-in", {"skills": ["cook"], "market_id": MARKET}),
    ("POST", f"{API}/worker/offline", None),
]


async def test_tokens_that_must_not_pass_are_401_on_every_route(
    http: httpx.AsyncClient, gateway: tuple[Running, Recording], gw_settings: Settings
) -> None:
    wrong = []
    for name, tok in bad_tokens(gw_settings).items():
        for how in ("header", "query", "basic"):
            for method, path, body in PROTECTED:
                r = await _call(http, method, path, body, tok, how)
                if r.status_code != 401:
                    wrong.append((name, how, method, path, r.status_code))
    assert wrong == []
    assert gateway[1].sent == []


async def _call(
    http: httpx.AsyncClient, method: str, path: str, body: Any, tok: str, how: str
) -> httpx.Response:
    if how == "header":
        return await http.request(method, path, json=body, headers=bearer(tok))
    if how == "query":
        return await http.request(method, path, json=body, params={"token": tok})
    return await http.request(method, path, json=body, headers={"Authorization": f"Basic {tok}"})


async def test_an_oversized_authorization_header_is_refused(
    http: httpx.AsyncClient, gateway: tuple[Running, Recording]
) -> None:
    r = await http.get(f"{API}/me", headers=bearer("x" * (64 << 10)))
    assert r.status_code in (400, 401, 431)
    assert gateway[1].sent == []


# --- the worker socket ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "status"),
    [("expired", 401), ("alg none", 401), ("a station's", 403), ("a supervisor's", 403)],
)
async def test_socket_handshakes_that_must_not_pass(
    gateway: tuple[Running, Recording], gw_settings: Settings, name: str, status: int
) -> None:
    secret = auth.resolve_secret(gw_settings.gateway)
    now = int(time.time())
    claims = {"sub": wid(), "role": "worker", "iat": now, "exp": now + 600}
    tok = {
        "expired": auth.issue_token(secret, "worker", wid(), now - 3600, 60),
        "alg none": f"{_b64({'alg': 'none'})}.{_b64(claims)}.",
        "a station's": token(gw_settings, "station", MARKET),
        "a supervisor's": token(gw_settings, "supervisor", "audit"),
    }[name]
    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url(gateway[0], tok)):
            pass
    assert refused.value.response.status_code == status


def _frames(limit: int) -> list[str]:
    """Text frames the socket must answer with an error, staying open."""
    at_limit = json.dumps({"type": "accept", "offer_id": "O-1", "reason": ""})
    at_limit = at_limit[:-2] + "r" * (limit - len(at_limit)) + '"}'
    return [
        "{not json",
        "",
        "null",
        "[]",
        '"accept"',
        '{"type": "accept"}',
        '{"type": "maybe", "offer_id": "O-1"}',
        '{"type": "accept", "offer_id": "a b"}',
        '{"type": "accept", "offer_id": 5}',
        '{"type": "accept", "offer_id": "O-1", "reason": NaN}',
        '{"type": "accept", "offer_id": "O-1", "extra": 1}',
        "[" * 4000,
        "\x00" * 100,
        at_limit,  # exactly the socket's limit: refused for its content, not its size
    ]


async def test_hostile_text_frames_get_an_error_and_the_socket_stays_open(
    gateway: tuple[Running, Recording], gw_settings: Settings
) -> None:
    running, recording = gateway
    tok = token(gw_settings, "worker", wid())
    frames = _frames(gw_settings.gateway.ws_max_bytes)
    assert len(frames[-1].encode()) == gw_settings.gateway.ws_max_bytes
    async with connect(ws_url(running, tok)) as ws:
        assert (await next_reply(ws))["type"] == "Welcome"
        replies = []
        for frame in frames:
            await ws.send(frame)
            replies.append((frame[:40], (await next_reply(ws))["type"]))
        assert [r for r in replies if r[1] != "Error"] == []
        await ws.send(json.dumps({"type": "accept", "offer_id": "O-nobody"}))
        assert (await next_reply(ws))["type"] == "AnswerRefused"  # still serving answers
    assert recording.sent == []


async def test_a_frame_over_the_limit_in_multibyte_characters_closes_1009(
    gateway: tuple[Running, Recording], gw_settings: Settings
) -> None:
    """Counted in bytes, not characters: 2 000 CJK characters are 6 000 bytes."""
    tok = token(gw_settings, "worker", wid())
    async with connect(ws_url(gateway[0], tok)) as ws:
        assert (await next_reply(ws))["type"] == "Welcome"
        await ws.send("工" * 2000)
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(20):
                while True:
                    await ws.recv()
    assert ws.close_code == 1009
    assert gateway[1].sent == []


# --- races the edge tests do not run ---------------------------------------------------------


async def test_answers_over_two_sockets_and_http_at_once_one_passes(
    http: httpx.AsyncClient, gateway: tuple[Running, Recording], gw_settings: Settings
) -> None:
    running, recording = gateway
    worker = wid()
    offer = await _live_offer(running, worker)
    tok = token(gw_settings, "worker", worker)
    async with contextlib.AsyncExitStack() as stack:
        sockets = [await stack.enter_async_context(connect(ws_url(running, tok))) for _ in "ab"]
        for ws in sockets:
            while (await next_reply(ws))["type"] != "Welcome":
                pass
        answer = {"type": "accept", "offer_id": offer.offer_id}
        posted, *_ = await asyncio.gather(
            http.post(f"{API}/answers", json=answer, headers=bearer(tok)),
            *(ws.send(json.dumps(answer)) for ws in sockets),
        )
        assert isinstance(posted, httpx.Response)
        replies = [await next_reply(ws) for ws in sockets]
    passed = [r["type"] for r in replies].count("AnswerSent")
    passed += posted.status_code == 200 and posted.json()["type"] == "AnswerSent"
    assert passed == 1, (posted.status_code, posted.text, replies)
    assert len([o for o in recording.sent if o.topic == OFFER_RESPONSES]) == 1


async def _live_offer(running: Running, worker: str) -> ev.OfferMade:
    now = int(time.time() * 1000)
    offer_id = f"{rid()}:{worker}"
    offer = ev.OfferMade(
        event_id=f"om:{offer_id}", at_ms=now, offer_id=offer_id, request_id=offer_id.split(":")[0],
        worker_id=worker, market_id=MARKET, skill="cook", wage_yuan_per_day=300.0, lon=113.0,
        lat=28.0, distance_km=1.0, score=1.0, wave=1, expires_at_ms=now + 60_000,
    )  # fmt: skip
    await running.gateway.offers.apply([offer], [])
    return offer


async def test_three_markets_racing_for_one_request_id_one_wins(
    http: httpx.AsyncClient, gateway: tuple[Running, Recording], gw_settings: Settings
) -> None:
    markets = (MARKET, OTHER_MARKET, THIRD_MARKET)
    for _ in range(3):
        request_id = rid()
        answers = await asyncio.gather(*(
            http.post(f"{API}/requests", json={"request_id": request_id, "market_id": m,
                                               "skill": "cook"},
                      headers=bearer(token(gw_settings, "station", m)))
            for m in markets
        ))  # fmt: skip
        assert sorted(a.status_code for a in answers) == [202, 409, 409]
        published = [o.message for o in gateway[1].sent if o.topic == HIRE_REQUESTS]
        winner = markets[[a.status_code for a in answers].index(202)]
        assert [(m.request_id, m.market_id) for m in published] == [(request_id, winner)]  # type: ignore[attr-defined]
        gateway[1].sent.clear()


async def test_one_station_posting_one_id_two_ways_at_once_one_wins(
    http: httpx.AsyncClient, gateway: tuple[Running, Recording], gw_settings: Settings
) -> None:
    station = bearer(token(gw_settings, "station", MARKET))
    for _ in range(3):
        request_id = rid()
        bodies = [{"request_id": request_id, "market_id": MARKET, "skill": "cook",
                   "headcount": n} for n in (1, 2)]  # fmt: skip
        answers = await asyncio.gather(
            *(http.post(f"{API}/requests", json=b, headers=station) for b in bodies)
        )
        assert sorted(a.status_code for a in answers) == [202, 409]
        published = [o.message for o in gateway[1].sent if o.topic == HIRE_REQUESTS]
        assert len(published) == 1
        gateway[1].sent.clear()
