"""The console's province view and request search (see ``gateway.console``).

- ``GET /api/v1/console/map``: the registry the page draws Hunan from (every prefecture's
  seat and names, every market's kind and place); no tiles, nothing from the internet.
- ``GET /api/v1/console/province?day=&prefecture=``: a day's figures (China Standard Time,
  today by default) per prefecture and per market: requests open, filled, expired, cancelled
  and rejected, and workers available, offered and busy.
- ``GET /api/v1/console/requests?request_id=&market_id=&skill=&status=&from=&to=&limit=``:
  requests from the archive, newest first, with their outcome.
- ``GET /api/v1/console/requests/{id}/timeline``: one request's timeline with every candidate
  and reason, as ``replay timeline --request`` prints it (``replay.timeline``), and as data.

Where the figures come from, and why the archive rather than Redis. Requests: those posted
that day (``HireRequested``) with their first terminal event; none yet means open. Workers:
each worker's last hold event of the day (offered, assigned, job arrived; freed by an answer,
a withdrawal, the job's end or a new check-in) and last check-in or going offline. Redis
holds the same facts, but not by place: counting them means reading all 16,384 record
buckets and a hold key per worker, and placing each position in a prefecture, on every poll.
The archive answers with a few index scans of one day's rows grouped by market (about
0.1-0.5 s at province scale), so the answer is kept for ``CACHE_S`` and every supervisor's
page shares it. The price: figures trail the live system by the archiver's lag (shown), and a
worker counts only once they did something that day (Redis keeps a check-in until offline).
A worker who checked in by position counts at the nearest market, as the reports count them.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Final, Literal

import asyncpg
from fastapi import HTTPException, Path, Query
from pydantic import BaseModel

from archive.store import PgEventStore
from gateway.console.deps import ConsoleDeps, Deps, Supervisor, console_router
from gateway.wire import refused
from infra.clock import now_ms
from infra.pg import q
from replay.breakdown import Registry
from replay.recording import parse
from replay.timeline import LOCAL, ORDER, VERDICT, Context, clock, in_order, render, sentence
from schemas import events as ev

router = console_router()

CACHE_S: Final = 2.0  # the province figures are shared by every page polling within this
POLL_S: Final = 3  # how often the page asks again (told to it in each answer)
DAY_MS: Final = 86_400_000
SEARCH_WINDOW_MS: Final = DAY_MS  # the search's window when it names no request and no time
SEARCH_SPAN_MAX_MS: Final = 31 * DAY_MS
LIMIT_MAX: Final = 200
# A request's outcome, by the type of its first terminal event ("" while it has none).
OUTCOME: Final = {
    "": "open",
    "RequestFilled": "filled",
    "RequestExpired": "expired",
    "RequestCancelled": "cancelled",
    "RequestRejected": "rejected",
}
TERMINAL: Final = [t for t in OUTCOME if t]
# The events that take a worker's hold or give it back (see the query).
HOLD_EVENTS: Final = ["WorkerCheckedIn", "OfferMade", "OfferAccepted", "OfferDeclined",
                      "OfferWithdrawn", "WorkerAssigned", "JobChanged"]  # fmt: skip
HOLD_RANKS: Final = [ORDER[t] for t in HOLD_EVENTS]

Status = Literal["open", "filled", "expired", "cancelled", "rejected"]
DayText = Annotated[
    str | None, Query(pattern=r"^\d{4}-\d{2}-\d{2}$", description="YYYY-MM-DD, China time")
]
IdQuery = Annotated[str | None, Query(min_length=1, max_length=ev.ID_MAX, pattern=ev.ID_PATTERN)]
IdPath = Annotated[str, Path(min_length=1, max_length=ev.ID_MAX, pattern=ev.ID_PATTERN)]
PrefectureQuery = Annotated[str | None, Query(pattern=r"^\d{4}$", description="e.g. 4301")]
SkillQuery = Annotated[str | None, Query(max_length=40, json_schema_extra={"enum": ev.SKILLS})]
EpochQuery = Annotated[int | None, Query(ge=0, le=ev.EPOCH_MS_MAX, description="epoch ms")]


# --- answers ---------------------------------------------------------------------------------


class Figures(BaseModel):
    """Requests by outcome, and workers by what holds them."""

    open: int = 0
    filled: int = 0
    expired: int = 0
    cancelled: int = 0
    rejected: int = 0
    available: int = 0
    offered: int = 0  # held by an offer they have not answered yet
    busy: int = 0  # assigned, or at the job

    def add(self, key: str, n: int) -> None:
        setattr(self, key, getattr(self, key) + n)

    def plus(self, other: Figures) -> None:
        for key, n in other.model_dump().items():
            self.add(key, n)


class PrefectureNow(BaseModel):
    code: str
    name_zh: str
    name_en: str
    seat_lon: float
    seat_lat: float
    markets: int  # in the registry
    active: int  # with any figure that day
    figures: Figures


class MarketNow(BaseModel):
    market_id: str
    kind: str
    name_zh: str
    name_en: str
    prefecture: str
    lon: float
    lat: float
    figures: Figures


class ProvinceNow(BaseModel):
    """A day's figures: the whole province, each prefecture, the open requests of each
    market with any (for the map), and with ``prefecture`` its markets' figures."""

    day: str
    from_ms: int
    to_ms: int
    at_ms: int  # when the archive was read
    poll_s: int
    archive_lag: int | None  # records the archiver is behind by (None: no archiver yet)
    total: Figures
    prefectures: list[PrefectureNow]
    open_markets: dict[str, int]  # market id -> open requests, the markets with any
    markets: list[MarketNow]  # the asked-for prefecture's markets with any figure
    unplaced: Figures  # requests for markets the registry does not hold (rejected)


class MapPrefecture(BaseModel):
    code: str
    name_zh: str
    name_en: str
    seat_lon: float
    seat_lat: float


class ProvinceMap(BaseModel):
    """What the page draws: prefectures, and markets as [id, kind, lon, lat, prefecture]."""

    prefectures: list[MapPrefecture]
    markets: list[tuple[str, str, float, float, str]]


class FoundRequest(BaseModel):
    request_id: str
    market_id: str
    market_zh: str
    market_en: str
    prefecture: str
    skill: str
    headcount: int
    wage_yuan_per_day: float
    posted_at_ms: int
    deadline_at_ms: int
    status: str
    ended_at_ms: int | None
    offers: int
    assigned: int


class Found(BaseModel):
    from_ms: int
    to_ms: int
    limit: int
    requests: list[FoundRequest]


class CandidateOut(BaseModel):
    worker_id: str
    distance_km: float
    score: float
    outcome: str
    verdict: str


class TimelineEvent(BaseModel):
    at_ms: int
    clock: str  # China Standard Time, to the millisecond
    type: str
    lines: list[str]  # as the command line words it
    candidates: list[CandidateOut] | None = None  # a wave's, every one of them
    event: dict[str, Any]


class Timeline(BaseModel):
    request_id: str
    title: str
    text: str  # exactly what ``replay timeline --request`` prints
    lines: list[str]
    events: list[TimelineEvent]


# --- the registry ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Place:
    market_id: str
    kind: str
    name_zh: str
    name_en: str
    prefecture: str
    lon: float
    lat: float


@dataclass(frozen=True, slots=True)
class Places:
    """The registry tables (markets, prefectures) as the console uses them."""

    markets: Mapping[str, Place]
    prefectures: Mapping[str, MapPrefecture]


_PLACES: dict[str, Places] = {}


async def places(pool: asyncpg.Pool, dsn: str) -> Places:
    """The registry tables, read once per database."""
    if dsn not in _PLACES:
        async with pool.acquire() as conn:
            rows = await conn.fetch(q("console_registry"))
        _PLACES[dsn] = places_of(rows)
    return _PLACES[dsn]


def places_of(rows: Iterable[Mapping[str, Any]]) -> Places:
    markets, prefectures = {}, {}
    for r in rows:
        markets[r["market_id"]] = Place(r["market_id"], r["kind"], r["name_zh"], r["name_en"],
                                        r["prefecture_code"], r["lon"], r["lat"])  # fmt: skip
        prefectures[r["prefecture_code"]] = MapPrefecture(
            code=r["prefecture_code"], name_zh=r["prefecture_zh"], name_en=r["prefecture_en"],
            seat_lon=r["seat_lon"], seat_lat=r["seat_lat"],
        )  # fmt: skip
    return Places(markets, prefectures)


@functools.cache
def registry() -> Registry:
    """The replay registry: names as the command line prints them, and the nearest market."""
    return Registry()


def nearest_market(lon: float, lat: float) -> str:
    """Where a worker who checked in by position counts: as in the reports
    (``Registry.market_of``), the nearest registered market."""
    at = ev.WorkerCheckedIn.model_construct(  # only its place is read
        event_id="", at_ms=0, worker_id="", market_id=None, lon=lon, lat=lat, skills=()
    )
    return registry().market_of(at)


# --- the figures (pure) ----------------------------------------------------------------------


def day_bounds(day: date) -> tuple[int, int]:
    """Epoch ms of a China Standard Time day's first instant, and of the next day's."""
    start = datetime(day.year, day.month, day.day, tzinfo=LOCAL)
    return int(start.timestamp() * 1000), int((start + timedelta(days=1)).timestamp() * 1000)


def local_day(at_ms: int) -> date:
    return datetime.fromtimestamp(at_ms / 1000, UTC).astimezone(LOCAL).date()


def by_market(
    requests: Iterable[Mapping[str, Any]], workers: Iterable[Mapping[str, Any]]
) -> dict[str, Figures]:
    """Each market's figures from the two queries' rows (a worker without a market counts
    at the market nearest their position)."""
    out: dict[str, Figures] = {}
    for r in requests:
        out.setdefault(r["market_id"], Figures()).add(OUTCOME.get(r["ended"], "open"), r["n"])
    for w in workers:
        market = w["market_id"]
        if market is None and w["lon"] is not None and w["lat"] is not None:
            market = nearest_market(w["lon"], w["lat"])
        if market is not None:
            out.setdefault(market, Figures()).add(w["status"], w["n"])
    return out


@dataclass(frozen=True, slots=True)
class Tally:
    total: Figures
    prefectures: list[PrefectureNow]
    open_markets: dict[str, int]
    markets: list[MarketNow]
    unplaced: Figures


def province(figures: Mapping[str, Figures], reg: Places, prefecture: str | None) -> Tally:
    """Totals, each prefecture's sums, each market's open requests, ``prefecture``'s markets
    (busiest first), and what no registered market holds."""
    total, unplaced = Figures(), Figures()
    sums = {code: Figures() for code in reg.prefectures}
    active = dict.fromkeys(reg.prefectures, 0)
    markets = []
    for market_id, f in figures.items():
        total.plus(f)
        place = reg.markets.get(market_id)
        if place is None:
            unplaced.plus(f)
            continue
        sums[place.prefecture].plus(f)
        active[place.prefecture] += 1
        if place.prefecture == prefecture:
            markets.append(_market_now(place, f))
    markets.sort(key=lambda m: (-m.figures.open, -m.figures.available, m.market_id))
    count = _count_markets(reg)
    prefs = [PrefectureNow(**p.model_dump(), markets=count[c], active=active[c], figures=sums[c])
             for c, p in reg.prefectures.items()]  # fmt: skip
    opened = {m: f.open for m, f in figures.items() if f.open and m in reg.markets}
    return Tally(total, prefs, opened, markets, unplaced)


def _market_now(p: Place, f: Figures) -> MarketNow:
    return MarketNow(market_id=p.market_id, kind=p.kind, name_zh=p.name_zh, name_en=p.name_en,
                     prefecture=p.prefecture, lon=p.lon, lat=p.lat, figures=f)  # fmt: skip


def _count_markets(reg: Places) -> dict[str, int]:
    count = dict.fromkeys(reg.prefectures, 0)
    for m in reg.markets.values():
        count[m.prefecture] += 1
    return count


# --- the province ----------------------------------------------------------------------------


_CACHE: dict[tuple[str, str], tuple[float, dict[str, Figures], int | None]] = {}


async def _figures(deps: ConsoleDeps, day: date) -> tuple[dict[str, Figures], int | None, float]:
    """Each market's figures for ``day`` and the archiver's lag, read at most every
    ``CACHE_S`` per database and day (every page polling shares one reading)."""
    key = (deps.settings.pg_dsn, day.isoformat())
    hit = _CACHE.get(key)
    if hit is not None and time.monotonic() - hit[0] < CACHE_S:
        return hit[1], hit[2], hit[0]
    start, end = day_bounds(day)
    async with deps.pg.acquire() as conn:
        requests = await conn.fetch(q("console_requests_by_market"), start, end, TERMINAL)
        workers = await conn.fetch(
            q("console_workers_by_place"), start, end, HOLD_EVENTS, HOLD_RANKS
        )
        lag = await _archive_lag(conn)
    figures = await asyncio.to_thread(by_market, requests, workers)  # the nearest: numpy
    if len(_CACHE) > 32:
        _CACHE.clear()
    _CACHE[key] = (time.monotonic(), figures, lag)
    return figures, lag, time.monotonic()


async def _archive_lag(conn: asyncpg.Connection) -> int | None:
    rows = await PgEventStore(conn).progress()
    lags = [r["lag"] for r in rows if r["lag"] is not None]
    return int(sum(lags)) if rows else None


def _day(text: str | None) -> date:
    if text is None:
        return local_day(now_ms())
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise HTTPException(422, f"no such day {text!r}") from None


@router.get("/map", response_model=ProvinceMap, summary="The registry the map is drawn from")
async def province_map(deps: Deps, _who: Supervisor) -> ProvinceMap:
    """Every prefecture (seat, names) and market (kind, place), for drawing Hunan offline."""
    reg = await places(deps.pg, deps.settings.pg_dsn)
    return ProvinceMap(
        prefectures=list(reg.prefectures.values()),
        markets=[(m.market_id, m.kind, m.lon, m.lat, m.prefecture) for m in reg.markets.values()],
    )


@router.get("/province", response_model=ProvinceNow, summary="A day's figures per prefecture",
            responses=refused(422, "no such day, or an unknown prefecture"))  # fmt: skip
async def province_now(
    deps: Deps, _who: Supervisor, day: DayText = None, prefecture: PrefectureQuery = None
) -> ProvinceNow:
    """Requests open, filled, expired, cancelled and rejected (posted that day, China Standard
    Time), and workers available, offered and busy, per prefecture;
    each market's open requests; with ``prefecture``, its markets' figures, busiest first."""
    the_day = _day(day)
    reg = await places(deps.pg, deps.settings.pg_dsn)
    if prefecture is not None and prefecture not in reg.prefectures:
        raise HTTPException(422, f"unknown prefecture {prefecture!r}")
    figures, lag, read = await _figures(deps, the_day)
    t = province(figures, reg, prefecture)
    start, end = day_bounds(the_day)
    at = now_ms() - int((time.monotonic() - read) * 1000)
    return ProvinceNow(day=the_day.isoformat(), from_ms=start, to_ms=end, at_ms=at, poll_s=POLL_S,
                       archive_lag=lag, total=t.total, prefectures=t.prefectures,
                       open_markets=t.open_markets, markets=t.markets,
                       unplaced=t.unplaced)  # fmt: skip


# --- request search --------------------------------------------------------------------------


def window(request_id: str | None, start: int | None, end: int | None, now: int) -> tuple[int, int]:
    """The search's window: as given; without one, the last day (everything when a request
    id is given). Refused: reversed, or longer than a month without a request id."""
    if request_id is not None:
        return start or 0, ev.EPOCH_MS_MAX if end is None else end
    end = now + 3_600_000 if end is None else end  # a kiosk's clock may run a little ahead
    start = end - SEARCH_WINDOW_MS if start is None else start
    if start > end:
        raise HTTPException(422, "from must not be after to")
    if end - start > SEARCH_SPAN_MAX_MS:
        raise HTTPException(422, "the window may span at most 31 days (or give a request_id)")
    return start, end


def found_request(row: Mapping[str, Any], reg: Places) -> FoundRequest:
    m = ev.HireRequested.model_validate_json(row["payload"])
    place = reg.markets.get(m.market_id)
    return FoundRequest(
        request_id=m.request_id, market_id=m.market_id,
        market_zh=place.name_zh if place else "未登记市场",
        market_en=place.name_en if place else "unregistered market",
        prefecture=place.prefecture if place else "", skill=m.skill, headcount=m.headcount,
        wage_yuan_per_day=m.wage_yuan_per_day, posted_at_ms=m.at_ms,
        deadline_at_ms=m.deadline_at_ms, status=OUTCOME.get(row["ended"] or "", "open"),
        ended_at_ms=row["ended_ms"], offers=row["offers"], assigned=row["assigned"],
    )  # fmt: skip


_ENDED_BY: Final = {status: t for t, status in OUTCOME.items()}


@router.get("/requests", response_model=Found, summary="Requests from the archive",
            responses=refused(422, "an input out of bounds"))  # fmt: skip
async def search_requests(
    deps: Deps,
    _who: Supervisor,
    request_id: IdQuery = None,
    market_id: IdQuery = None,
    skill: SkillQuery = None,
    status: Status | None = None,
    from_ms: Annotated[EpochQuery, Query(alias="from")] = None,
    to_ms: Annotated[EpochQuery, Query(alias="to")] = None,
    limit: Annotated[int, Query(ge=1, le=LIMIT_MAX)] = 50,
) -> Found:
    """Requests posted in the window (default: the last day; any time with ``request_id``),
    newest first, by id, market, skill and outcome, with their offers and assignments."""
    if skill is not None and skill not in ev.SKILLS:
        raise HTTPException(422, f"unknown skill {skill!r}")
    start, end = window(request_id, from_ms, to_ms, now_ms())
    ended = None if status is None else _ENDED_BY[status]
    reg = await places(deps.pg, deps.settings.pg_dsn)
    async with deps.pg.acquire() as conn:
        rows = await conn.fetch(q("console_search_requests"), request_id, market_id, skill,
                                start, end, TERMINAL, ended, limit)  # fmt: skip
    return Found(from_ms=start, to_ms=end, limit=limit,
                 requests=[found_request(r, reg) for r in rows])  # fmt: skip


# --- a request's timeline --------------------------------------------------------------------


def timeline_of(
    request_id: str, messages: Sequence[BaseModel], names: Mapping[str, str]
) -> Timeline:
    """The request's timeline: the command line's text (``replay.timeline.render``, with the
    context ``replay timeline`` gives it) and each event with its sentences and candidates."""
    requested = {m.request_id: m.at_ms for m in messages if isinstance(m, ev.HireRequested)}
    ctx = Context(names, None, requested)
    title = f"Timeline of request {request_id}"
    text = render(title, messages, ctx)
    events = [_event(m, ctx) for m in in_order(messages)]
    return Timeline(request_id=request_id, title=title, text=text, lines=text.splitlines(),
                    events=[e for e in events if e.lines])  # fmt: skip


def _event(m: BaseModel, ctx: Context) -> TimelineEvent:
    at: int = getattr(m, "at_ms", 0)
    candidates = None
    if isinstance(m, ev.WaveSent):
        candidates = [CandidateOut(worker_id=c.worker_id, distance_km=c.distance_km,
                                   score=c.score, outcome=c.outcome, verdict=VERDICT[c.outcome])
                      for c in m.candidates]  # fmt: skip
    return TimelineEvent(at_ms=at, clock=clock(at), type=type(m).__name__,
                         lines=sentence(m, ctx), candidates=candidates,
                         event=m.model_dump(mode="json"))  # fmt: skip


@router.get("/requests/{request_id}/timeline", response_model=Timeline,
            summary="A request's timeline, every candidate and reason",
            responses=refused(404, "the archive holds nothing about it")
            | refused(422, "not a request id"))  # fmt: skip
async def request_timeline(deps: Deps, _who: Supervisor, request_id: IdPath) -> Timeline:
    """Every archived event of the request in order, in words, as ``replay timeline
    --request`` prints it, and as data (each wave with every candidate it considered)."""
    async with deps.pg.acquire() as conn:
        stored = await PgEventStore(conn).of_request(request_id)
    messages = [m for _, m in parse(stored)]
    if not messages:
        raise HTTPException(404, f"the archive holds nothing about {request_id}")
    reg = await asyncio.to_thread(registry)
    return timeline_of(request_id, messages, reg.names())
