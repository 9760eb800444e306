"""The gateway's HTTP API, worker socket, pages and API documents, and its composition root.

``create_app(settings)`` builds the FastAPI app; its lifespan makes every client (Redis, the
Kafka producer and the fan-out consumer, the pub/sub hub), hands them to ``Gateway`` and closes
them on the way out. Handlers are thin: authenticate, call one ``Gateway`` method, answer.
Every route lists in OpenAPI each status it can answer. The fan-out consumer runs under a
``Supervisor``: if it dies, it is logged and restarted from the last committed offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, FastAPI, Header, Query, Request, WebSocket
from fastapi import Path as PathParam
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway import auth
from gateway.asyncapi import document
from gateway.auth import AuthError, Principal
from gateway.console import dead, province, reports
from gateway.console.deps import ConsoleDeps
from gateway.fanout import Fanout, run_fanout
from gateway.hub import Hub
from gateway.keys import BOARD_MAX, GatewayKeys
from gateway.market_search import LIMIT_MAX, QUERY_MAX, MarketHit, registry, search
from gateway.service import Conflict, Gateway, Invalid, NotFound
from gateway.sockets import progress, worker_session
from gateway.store import Answers, LiveOffers, PostedRequests, RequestHistory, WorkerJobs
from gateway.supervise import Supervisor
from gateway.wire import (
    Accepted,
    AnswerIn,
    AnswerOut,
    CancelIn,
    CheckInIn,
    DevLoginIn,
    HireRequestIn,
    JobStepIn,
    PrincipalOut,
    RequestView,
    StationLoginIn,
    TokenOut,
    WorkerJobOut,
    WorkerJobStepIn,
    refusals,
)
from infra import metrics, pg
from infra.clients import keys_for, redis_client
from infra.clock import now_ms
from infra.health import Health
from infra.kafka import make_producer
from infra.markets import load_markets
from infra.publish import Publisher
from infra.redis_index import RedisRequestStore
from infra.settings import Settings, get_settings
from schemas import events as ev
from schemas.names import SKILL_NAMES_ZH, skill_en

STATIC = Path(__file__).parent / "static"
API = "/api/v1"


@dataclass
class Parts:
    """What the handlers need, made in the lifespan."""

    gateway: Gateway
    hub: Hub
    keys: GatewayKeys
    dev_login: bool
    ws_max_bytes: int
    fanout: Supervisor


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
    publisher = Publisher(producer)
    dispatch_keys = keys_for(settings)
    gateway = Gateway(
        secret=secret,
        token_ttl_s=settings.gateway.token_ttl_s,
        sink=publisher,
        offers=LiveOffers(redis, keys),
        posted=PostedRequests(redis, keys, dispatch_keys.request),
        answers=Answers(redis, keys),
        history=RequestHistory(redis, keys),
        jobs=WorkerJobs(redis, keys),
        dispatch_state=RedisRequestStore(redis, dispatch_keys),
        markets=markets,
        clock=now_ms,
    )
    app.state.health = Health()  # the fan-out consumer's: joining, ok or degraded
    fan = Fanout(gateway.offers, gateway.history, hub, keys, gateway.jobs)
    fanout = _supervised_fanout(settings, fan, publisher, stack, app.state.health)
    g = settings.gateway
    app.state.parts = Parts(gateway, hub, keys, g.dev_login, g.ws_max_bytes, fanout)
    pool = await asyncpg.create_pool(settings.pg_dsn, min_size=1, max_size=4)
    stack.push_async_callback(pool.close)
    app.state.console = ConsoleDeps(settings, pool, redis, publisher)


def _supervised_fanout(
    settings: Settings,
    fanout: Fanout,
    publisher: Publisher,
    stack: contextlib.AsyncExitStack,
    health: Health,
) -> Supervisor:
    """The fan-out consumer as a supervised task: restarted (a fresh member of the group, from
    the committed offsets, so the batch it died on is handled again) whenever it dies; stopped
    gracefully at the end. It joins in the background: the API answers meanwhile."""
    stop = asyncio.Event()

    async def run() -> None:
        await run_fanout(settings, fanout, publisher, stop, health)

    supervisor = Supervisor("gateway-fanout", run)
    supervisor.start()
    stack.push_async_callback(supervisor.stop, stop.set)
    return supervisor


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


PathId = Annotated[str, PathParam(min_length=1, max_length=ev.ID_MAX, pattern=ev.ID_PATTERN)]


def _error(status: int, detail: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _unreadable(_request: Request, e: Exception) -> JSONResponse:
    """422 with where and what, never the input: it may hold NaN or Infinity (bare JSON tokens
    the parser takes but no JSON response can carry) or megabytes the caller sent."""
    assert isinstance(e, RequestValidationError)
    detail = [{"loc": [_text(p) if isinstance(p, str) else p for p in x["loc"]],
               "msg": _text(x["msg"]), "type": x["type"]} for x in e.errors()[:20]]  # fmt: skip
    return JSONResponse({"detail": detail}, status_code=422)


def _text(value: str) -> str:
    """At most 200 characters that UTF-8 can encode (a JSON key may be a lone surrogate)."""
    return value[:200].encode(errors="replace").decode()


async def _http_error(request: Request, e: Exception) -> Response:
    """FastAPI answers 400 for a JSON body that is not UTF-8 (other malformed JSON is 422):
    the same 422 here, so every route's refusals stay the ones it documents."""
    assert isinstance(e, StarletteHTTPException)
    if e.status_code == 400 and e.detail == "There was an error parsing the body":
        problem = {"loc": ["body"], "msg": "the body is not UTF-8 JSON", "type": "json_invalid"}
        return JSONResponse({"detail": [problem]}, status_code=422)
    return await http_exception_handler(request, e)


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
    app.add_exception_handler(RequestValidationError, _unreadable)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(NotFound, lambda _r, e: _error(404, str(e)))
    app.add_exception_handler(Conflict, lambda _r, e: _error(409, str(e)))
    app.add_exception_handler(Invalid, lambda _r, e: _error(422, str(e)))
    _pages(app)
    _auth_routes(app)
    _kiosk_routes(app)
    _worker_routes(app)
    for part in (province, reports, dead):
        app.include_router(part.router)
    _ops_routes(app)
    return app


def _ops_routes(app: FastAPI) -> None:
    """For operators: alive; ready (the fan-out consumer joined its group and caught up);
    Prometheus metrics. Not in the OpenAPI document (they are not the product's API)."""

    def probe(request: Request) -> metrics.Probe:
        health = getattr(request.app.state, "health", None) or Health()
        return metrics.Probe(health, request.app.state.settings.metrics.ready_max_lag)

    @app.get("/healthz", include_in_schema=False)
    def healthz(request: Request) -> JSONResponse:
        return JSONResponse(probe(request).alive())

    @app.get("/readyz", include_in_schema=False)
    def readyz(request: Request) -> JSONResponse:
        ok, body = probe(request).ready()
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    def prometheus() -> Response:
        kind, body = metrics.metrics_text()
        return Response(body, media_type=kind)


def _pages(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    pages = (("/", "index.html"), ("/kiosk", "kiosk.html"), ("/worker", "worker.html"),
             ("/supervisor", "supervisor.html"))  # fmt: skip
    for path, page in pages:
        app.add_api_route(path, _page(page), include_in_schema=False, methods=["GET"])

    @app.get("/asyncapi.json", tags=["documents"], summary="AsyncAPI document of every topic")
    def asyncapi() -> JSONResponse:
        return JSONResponse(document())

    @app.get(f"{API}/markets/{{market_id}}", tags=["markets"], summary="One market's names",
             responses=refusals(404))  # fmt: skip
    def market(market_id: PathId) -> dict[str, Any]:
        found = _markets().get(market_id)
        if found is None:
            raise NotFound("no such market")
        return found

    @app.get(f"{API}/markets", tags=["markets"], responses=refusals(422),
             summary="Markets by Chinese or English name or code, nearest first")  # fmt: skip
    def find_markets(q: SearchText = "", lon: AnyLon = None, lat: AnyLat = None,
                     limit: Limit = 20) -> list[MarketHit]:  # fmt: skip
        if (lon is None) != (lat is None):
            raise Invalid("give both lon and lat, or neither")
        near = None if lon is None or lat is None else (lon, lat)
        return search(registry(), q, near, limit)

    @app.get(f"{API}/skills", tags=["markets"], summary="The skills, in Chinese and English")
    def skills() -> list[dict[str, str]]:
        return [{"skill": s, "name_zh": SKILL_NAMES_ZH[s], "name_en": skill_en(s)}
                for s in ev.SKILLS]  # fmt: skip


# The market search's inputs: any position on Earth (a phone may be outside the province).
SearchText = Annotated[str, Query(max_length=QUERY_MAX, description="words of a name or code")]
AnyLon = Annotated[float | None, Query(ge=-180, le=180, allow_inf_nan=False)]
AnyLat = Annotated[float | None, Query(ge=-90, le=90, allow_inf_nan=False)]
Limit = Annotated[int, Query(ge=1, le=LIMIT_MAX)]


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
    @app.post(f"{API}/auth/station", tags=["auth"], summary="A station's token for its key",
              responses=refusals(401))  # fmt: skip
    def station_login(body: StationLoginIn, p: P) -> TokenOut:
        token, exp = p.gateway.station_login(body.market_id, body.key)
        return TokenOut(token=token, role="station", subject=body.market_id, expires_at_s=exp)

    @app.post(f"{API}/auth/dev", tags=["auth"], summary="Development only: any token",
              responses=refusals(404))  # fmt: skip
    def dev_login(body: DevLoginIn, p: P) -> TokenOut:
        if not p.dev_login:
            raise NotFound("development login is off")
        token, exp = p.gateway.token_for(body.role, body.subject)
        return TokenOut(token=token, role=body.role, subject=body.subject, expires_at_s=exp)

    @app.get(f"{API}/me", tags=["auth"], summary="Who the token says you are",
             responses=refusals(401))  # fmt: skip
    def me(who: Caller) -> PrincipalOut:
        return PrincipalOut(role=who.role, subject=who.subject)


def _kiosk_routes(app: FastAPI) -> None:
    @app.post(f"{API}/requests", tags=["kiosk"], status_code=202,
              summary="Post a request (idempotent on request_id: a repeat is 202 again)",
              responses=refusals(401, 403, 409, 422))  # fmt: skip
    async def post_request(body: HireRequestIn, who: Caller, p: P) -> Accepted:
        _new, out = await p.gateway.post_request(who, body)
        return out

    @app.get(f"{API}/requests/{{request_id}}", tags=["kiosk"], summary="A request's status",
             responses=refusals(401, 403, 404))  # fmt: skip
    async def request_status(request_id: PathId, who: Caller, p: P) -> RequestView:
        return await p.gateway.view(who, request_id)

    @app.post(f"{API}/requests/{{request_id}}/cancel", tags=["kiosk"], status_code=202,
              summary="Cancel a request; its open offers are withdrawn",
              responses=refusals(401, 403, 404))  # fmt: skip
    async def cancel(request_id: PathId, body: CancelIn, who: Caller, p: P) -> Accepted:
        return await p.gateway.cancel_request(who, request_id, body)

    @app.post(f"{API}/requests/{{request_id}}/jobs/{{worker_id}}", tags=["kiosk"],
              status_code=202, summary="Report a hired worker's job: arrived, done, no-show "
              "or cancelled", responses=refusals(401, 403, 404, 409, 422))  # fmt: skip
    async def job_step(
        request_id: PathId, worker_id: PathId, body: JobStepIn, who: Caller, p: P
    ) -> Accepted:
        return await p.gateway.report_job(who, request_id, worker_id, body)

    @app.get(f"{API}/requests/{{request_id}}/events", tags=["kiosk"],
             summary="Live progress (server-sent events, numbered: resumes after "
             "Last-Event-ID) until the request and all its jobs have ended",
             response_class=StreamingResponse, responses=refusals(401, 403, 404, 422))  # fmt: skip
    async def events(request_id: PathId, who: Caller, p: P, last_id: LastEventId = None,
                     last_event_id: AfterEvent = None) -> StreamingResponse:  # fmt: skip
        await p.gateway.may_follow(who, request_id)
        after = _after(last_id, last_event_id)
        stream = progress(p.gateway, p.hub, p.keys, request_id, after)
        return StreamingResponse(stream, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})  # fmt: skip

    @app.get(f"{API}/requests", tags=["kiosk"],
             summary="Today's requests of a market, newest first (a station: its own; a "
             "supervisor: give market_id)", responses=refusals(401, 403, 422))  # fmt: skip
    async def board(who: Caller, p: P, market_id: MarketQuery = None,
                    limit: BoardLimit = BOARD_MAX) -> list[RequestView]:  # fmt: skip
        return await p.gateway.board(who, market_id, limit)


# The progress stream resumes after the last event its client saw: the ``Last-Event-ID`` header
# an EventSource sends when it reconnects, or ``?last_event_id=`` where no header can be set
# (a page opening the stream again). The header wins: it is the later one.
LastEventId = Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)]
AfterEvent = Annotated[int | None, Query(ge=0, le=10**12, description="resume after this event")]
MarketQuery = Annotated[str | None, Query(min_length=1, max_length=ev.ID_MAX,
                                          pattern=ev.ID_PATTERN)]  # fmt: skip
BoardLimit = Annotated[int, Query(ge=1, le=BOARD_MAX)]


def _after(header: str | None, query: int | None) -> int:
    if header is None or not header.strip():
        return query or 0
    if not (header.strip().isascii() and header.strip().isdigit()):
        raise Invalid("Last-Event-ID must be an event number")
    return int(header.strip())


def _worker_routes(app: FastAPI) -> None:
    @app.get(f"{API}/workers/{{worker_id}}/offers", tags=["worker"],
             summary="A worker's open offers", responses=refusals(401, 403))  # fmt: skip
    async def offers(worker_id: PathId, who: Caller, p: P) -> list[ev.OfferMade]:
        return await p.gateway.live_offers(who, worker_id)

    @app.get(f"{API}/workers/{{worker_id}}/jobs", tags=["worker"],
             summary="A worker's jobs of the last day, newest first",
             responses=refusals(401, 403))  # fmt: skip
    async def jobs(worker_id: PathId, who: Caller, p: P) -> list[WorkerJobOut]:
        return await p.gateway.worker_jobs(who, worker_id)

    @app.post(f"{API}/worker/jobs/{{request_id}}", tags=["worker"], status_code=202,
              summary="Report your own job: arrived at it, or done",
              responses=refusals(401, 403, 404, 409, 422))  # fmt: skip
    async def my_job_step(request_id: PathId, body: WorkerJobStepIn, who: Caller, p: P) -> Accepted:
        return await p.gateway.worker_job_step(who, request_id, body)

    @app.post(f"{API}/answers", tags=["worker"], summary="Accept or decline one of your offers",
              responses=refusals(401, 403, 409))  # fmt: skip
    async def answer(body: AnswerIn, who: Caller, p: P) -> AnswerOut:
        return await p.gateway.answer(who, body)

    @app.post(f"{API}/worker/check-in", tags=["worker"], status_code=202,
              summary="Become available for offers at a market or a position",
              responses=refusals(401, 403, 422))  # fmt: skip
    async def check_in(body: CheckInIn, who: Caller, p: P) -> dict[str, str]:
        await p.gateway.check_in(who, body)
        return {"status": "checked in"}

    @app.post(f"{API}/worker/offline", tags=["worker"], status_code=202,
              summary="Stop taking offers", responses=refusals(401, 403))  # fmt: skip
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
        await worker_session(ws, p.gateway, p.hub, p.keys, who, p.ws_max_bytes)


async def _deny(ws: WebSocket, e: AuthError) -> None:
    """Refuse the handshake with 401/403 where the server can, else close it."""
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        await ws.send_denial_response(_error(e.status, e.reason))
    else:
        await ws.close(code=4000 + e.status, reason=e.reason)
