"""The gateway's HTTP API, worker socket, pages and API documents, and its composition root.

``create_app(settings)`` builds the FastAPI app; its lifespan makes every client (Redis, the
Kafka producer and the fan-out consumer, the pub/sub hub), hands them to ``Gateway`` and closes
them on the way out. Handlers are thin: authenticate, call one ``Gateway`` method, answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request, Response, WebSocket
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles

from consumers.runtime import Publisher, consume, now_ms
from consumers.services import keys_for, redis_client
from gateway import auth
from gateway.asyncapi import document
from gateway.auth import AuthError, Principal
from gateway.fanout import Fanout, sort_batch
from gateway.hub import Hub
from gateway.keys import GatewayKeys
from gateway.service import Conflict, Gateway, Invalid, NotFound
from gateway.sockets import progress, worker_session
from gateway.store import LiveOffers, PostedRequests, RequestHistory
from gateway.wire import (
    Accepted,
    AnswerIn,
    AnswerOut,
    CancelIn,
    CheckInIn,
    DevLoginIn,
    HireRequestIn,
    PrincipalOut,
    RequestView,
    StationLoginIn,
    TokenOut,
)
from infra import pg
from infra.kafka import make_consumer, make_producer
from infra.markets import load_markets
from infra.redis_index import RedisRequestStore
from infra.settings import Settings, get_settings
from schemas import events as ev
from schemas.topics import OFFERS, REQUEST_EVENTS

STATIC = Path(__file__).parent / "static"
API = "/api/v1"


@dataclass
class Parts:
    """What the handlers need, made in the lifespan."""

    gateway: Gateway
    hub: Hub
    keys: GatewayKeys
    dev_login: bool


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    async with contextlib.AsyncExitStack() as stack:
        await _start(app, settings, stack)
        yield


async def _start(app: FastAPI, settings: Settings, stack: contextlib.AsyncExitStack) -> None:
    """Make every client, registering each one's closing on ``stack`` as soon as it exists."""
    keys = GatewayKeys(settings.key_prefix)
    secret = auth.resolve_secret(settings.gateway)
    markets = await pg.market_places(settings.pg_dsn)
    redis = redis_client(settings)
    stack.push_async_callback(redis.aclose)
    kafka = settings.kafka_slice()
    producer = make_producer(kafka)
    await producer.start()
    stack.push_async_callback(producer.stop)
    hub = Hub(redis, keys.hello())
    await hub.start()
    stack.push_async_callback(hub.stop)
    consumer = make_consumer(kafka, OFFERS, REQUEST_EVENTS, group_id=settings.gateway.group)
    await consumer.start()
    stack.push_async_callback(consumer.stop)
    publisher = Publisher(producer)
    gateway = Gateway(
        secret=secret,
        token_ttl_s=settings.gateway.token_ttl_s,
        sink=publisher,
        offers=LiveOffers(redis, keys),
        posted=PostedRequests(redis, keys),
        history=RequestHistory(redis, keys),
        dispatch_state=RedisRequestStore(redis, keys_for(settings)),
        markets=markets,
        clock=now_ms,
    )
    fanout = Fanout(gateway.offers, gateway.history, hub, keys)

    async def handle(records: list[Any]) -> None:
        batch = sort_batch(records, now_ms())
        await fanout.handle(batch)
        await publisher.publish(batch.dead)

    stop = asyncio.Event()
    task = asyncio.create_task(consume(consumer, handle, stop, poll_ms=100), name="gateway-fanout")

    async def stop_fanout() -> None:
        stop.set()
        await task

    stack.push_async_callback(stop_fanout)
    app.state.parts = Parts(gateway, hub, keys, settings.gateway.dev_login)


def parts(request: Request) -> Parts:
    p: Parts = request.app.state.parts
    return p


def socket_parts(ws: WebSocket) -> Parts:
    p: Parts = ws.app.state.parts
    return p


bearer = HTTPBearer(auto_error=False, description="a token from /api/v1/auth/… or gig-token")


def caller(
    p: Annotated[Parts, Depends(parts)],
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    token: Annotated[str | None, Query(description="the token where no header fits")] = None,
) -> Principal:
    """The authenticated caller (401 if the token is missing, expired or forged)."""
    return p.gateway.who(creds.credentials if creds else token)


Caller = Annotated[Principal, Depends(caller)]
P = Annotated[Parts, Depends(parts)]


def _error(status: int, detail: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _refused(_request: Request, e: Exception) -> JSONResponse:
    assert isinstance(e, AuthError)
    return _error(e.status, e.reason)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The gateway app for ``settings`` (the process-wide settings by default)."""
    app = FastAPI(
        title="Gig-market dispatch gateway",
        version="1",
        summary="Instant hire for station kiosks, pushed offers for workers.",
        description=(
            "Kiosks post instant-hire requests and follow them; workers receive offers on a "
            "WebSocket (`/ws/worker?token=…`) and answer them. Tokens are JWT (HS256): "
            "stations exchange their station key for one, workers and supervisors are issued "
            "one. The Kafka topics behind it are described at `/asyncapi.json`."
        ),
        lifespan=lifespan,
    )
    app.state.settings = settings or get_settings()
    app.add_exception_handler(AuthError, _refused)
    app.add_exception_handler(NotFound, lambda _r, e: _error(404, str(e)))
    app.add_exception_handler(Conflict, lambda _r, e: _error(409, str(e)))
    app.add_exception_handler(Invalid, lambda _r, e: _error(422, str(e)))
    _pages(app)
    _auth_routes(app)
    _kiosk_routes(app)
    _worker_routes(app)
    return app


def _pages(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for path, page in (("/", "index.html"), ("/kiosk", "kiosk.html"), ("/worker", "worker.html")):
        app.add_api_route(path, _page(page), include_in_schema=False, methods=["GET"])

    @app.get("/asyncapi.json", tags=["documents"], summary="AsyncAPI document of every topic")
    def asyncapi() -> JSONResponse:
        return JSONResponse(document())

    @app.get(f"{API}/markets/{{market_id}}", tags=["markets"], summary="One market's names")
    def market(market_id: str) -> dict[str, Any]:
        found = _markets().get(market_id)
        if found is None:
            raise NotFound(f"no market {market_id!r}")
        return found


def _page(name: str) -> Any:
    def page() -> FileResponse:
        return FileResponse(STATIC / name, headers={"Cache-Control": "no-cache"})

    return page


_MARKETS: dict[str, dict[str, Any]] = {}


def _markets() -> dict[str, dict[str, Any]]:
    if not _MARKETS:
        for m in load_markets():
            _MARKETS[m.market_id] = {"market_id": m.market_id, "kind": m.kind,
                                     "name_zh": m.name_zh, "name_en": m.name_en,
                                     "lon": m.lon, "lat": m.lat}  # fmt: skip
    return _MARKETS


def _auth_routes(app: FastAPI) -> None:
    @app.post(f"{API}/auth/station", tags=["auth"], summary="A station's token for its key")
    def station_login(body: StationLoginIn, p: P) -> TokenOut:
        token, exp = p.gateway.station_login(body.market_id, body.key)
        return TokenOut(token=token, role="station", subject=body.market_id, expires_at_s=exp)

    @app.post(f"{API}/auth/dev", tags=["auth"], summary="Development only: any token")
    def dev_login(body: DevLoginIn, p: P) -> TokenOut:
        if not p.dev_login:
            raise NotFound("development login is off")
        token, exp = p.gateway.token_for(body.role, body.subject)
        return TokenOut(token=token, role=body.role, subject=body.subject, expires_at_s=exp)

    @app.get(f"{API}/me", tags=["auth"], summary="Who the token says you are")
    def me(who: Caller) -> PrincipalOut:
        return PrincipalOut(role=who.role, subject=who.subject)


def _kiosk_routes(app: FastAPI) -> None:
    @app.post(f"{API}/requests", tags=["kiosk"], status_code=202,
              summary="Post a request (idempotent on request_id)",
              responses={200: {"model": Accepted, "description": "posted before"}})  # fmt: skip
    async def post_request(body: HireRequestIn, who: Caller, p: P, response: Response) -> Accepted:
        new, out = await p.gateway.post_request(who, body)
        response.status_code = 202 if new else 200
        return out

    @app.get(f"{API}/requests/{{request_id}}", tags=["kiosk"], summary="A request's status")
    async def request_status(request_id: str, who: Caller, p: P) -> RequestView:
        return await p.gateway.view(who, request_id)

    @app.post(f"{API}/requests/{{request_id}}/cancel", tags=["kiosk"], status_code=202,
              summary="Cancel a request; its open offers are withdrawn")  # fmt: skip
    async def cancel(request_id: str, body: CancelIn, who: Caller, p: P) -> Accepted:
        return await p.gateway.cancel_request(who, request_id, body)

    @app.get(f"{API}/requests/{{request_id}}/events", tags=["kiosk"],
             summary="Live progress (server-sent events) until the request ends",
             response_class=StreamingResponse)  # fmt: skip
    async def events(request_id: str, who: Caller, p: P) -> StreamingResponse:
        await p.gateway.may_follow(who, request_id)
        stream = progress(p.gateway, p.hub, p.keys, request_id)
        return StreamingResponse(stream, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})  # fmt: skip


def _worker_routes(app: FastAPI) -> None:
    @app.get(f"{API}/workers/{{worker_id}}/offers", tags=["worker"],
             summary="A worker's open offers")  # fmt: skip
    async def offers(worker_id: str, who: Caller, p: P) -> list[ev.OfferMade]:
        return await p.gateway.live_offers(who, worker_id)

    @app.post(f"{API}/answers", tags=["worker"], summary="Accept or decline one of your offers")
    async def answer(body: AnswerIn, who: Caller, p: P) -> AnswerOut:
        return await p.gateway.answer(who, body)

    @app.post(f"{API}/worker/check-in", tags=["worker"], status_code=202,
              summary="Become available for offers at a market or a position")  # fmt: skip
    async def check_in(body: CheckInIn, who: Caller, p: P) -> dict[str, str]:
        await p.gateway.check_in(who, body)
        return {"status": "checked in"}

    @app.post(f"{API}/worker/offline", tags=["worker"], status_code=202,
              summary="Stop taking offers")  # fmt: skip
    async def offline(who: Caller, p: P) -> dict[str, str]:
        await p.gateway.go_offline(who)
        return {"status": "offline"}

    @app.websocket("/ws/worker")
    async def worker_socket(ws: WebSocket, token: str | None = None) -> None:
        p = socket_parts(ws)
        try:
            who = p.gateway.who(token)
            auth.must_be_worker(who)
        except AuthError as e:
            await _deny(ws, e)
            return
        await worker_session(ws, p.gateway, p.hub, p.keys, who)


async def _deny(ws: WebSocket, e: AuthError) -> None:
    """Refuse the handshake with 401/403 where the server can, else close it."""
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        await ws.send_denial_response(_error(e.status, e.reason))
    else:
        await ws.close(code=4000 + e.status, reason=e.reason)
