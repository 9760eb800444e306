"""The PostgreSQL + PostGIS peer: the dispatcher many teams would build instead of ours.

``python -m bench.postgis --workers 100000 --requests 5000``

One decision is one statement, one round trip, one autocommitted transaction: a KNN search on
a GiST index over ``(skill, geom)`` (``btree_gist`` for the text column), the workers with the
request's skill within the first radius (3 km) nearest first, ``FOR UPDATE SKIP LOCKED``, and
the hold written in the same statement (a CTE that selects, then an ``UPDATE`` of the hold
columns). It has the project's first-wave "fill or not" semantics: a decision holds up to
``headcount`` free workers with the skill within 3 km (``PolicySettings.radii_km[0]``,
``over_offer`` 1.0); a worker another request holds is skipped. A request is *offered* if it
held at least one worker and *filled* if it held ``headcount``. It does not save a request
state or schedule a timer, as the project's full decision does.

Layout (database ``gig_bench_postgis`` by default, never the project's):

- ``worker(id, held_by, held_until_ms)``: one row per worker, its hold (``held_until_ms`` as
  the hold's TTL, like the project's ``PX``); ``fillfactor`` 70 so hold updates stay HOT.
- ``worker_skill(worker, skill, geom)``: one row per (worker, skill); ``geom`` a point in UTM
  49N (EPSG:32649, metres, Hunan lies in zone 49's 108-114 degrees E give or take a
  degree), rows written in (skill, geohash) order; index ``gist (skill, geom)``.

Distances are planar UTM metres: ``ST_DWithin`` and ``<->`` use the index. The projection's
scale factor in Hunan is 0.9996-1.001, so the radius agrees with a great-circle 3 km to within
0.1 % (Redis GEO, which the project uses, computes haversine on a sphere; the two differ by
about as much again).

Durability: the tables are logged (crash safe) and the database commits with
``synchronous_commit = off``: a crash may lose the last few hundred milliseconds of holds, the
same promise as the project's Redis (AOF, ``appendfsync everysec``). ``--sync-commit`` measures
with a WAL flush on every commit instead.

Every decision runs the same prepared statement with the database's ``plan_cache_mode =
force_generic_plan`` (planned once per connection; the generic plan is the same KNN scan, and
replanning each time cost 10-25 % of the throughput). Its plan, from ``EXPLAIN (ANALYZE,
BUFFERS) EXECUTE`` of a request for two, rolled back: one KNN index scan that stops after the
two free workers it holds (``$0``/``$1`` are the InitPlans' point, the rest bind parameters)::

    Update on worker w (actual time=0.141..0.161 rows=2 loops=1)
      Buffers: shared hit=22
      CTE picked
        ->  Limit (actual time=0.118..0.133 rows=2 loops=1)
              ->  LockRows (actual time=0.118..0.132 rows=2 loops=1)
                    ->  Nested Loop (actual time=0.113..0.127 rows=2 loops=1)
                          ->  Subquery Scan on near (actual time=0.091..0.094 rows=2 loops=1)
                                ->  Index Scan using worker_skill_knn on worker_skill s
                                      Index Cond: ((skill = $1) AND (geom && st_expand($1, $4)))
                                      Order By: (geom <-> $0)
                                      Filter: st_dwithin(geom, $1, $4)
                                      Buffers: shared hit=4
                          ->  Index Scan using worker_pkey on worker w_1 (... loops=2)
                                Index Cond: (id = near.worker)
                                Filter: (held_until_ms <= $6)
      ->  Nested Loop  ->  CTE Scan on picked; Index Scan using worker_pkey on worker w
    Planning Time: 0.020 ms
    Execution Time: 0.198 ms

Median over the first 50 requests: 26 shared buffers (all hits) and 0.30 ms at 100 k workers;
32 buffers and 0.5-0.7 ms at 1 M (``measure`` returns these as ``plan``).

Reloading: the database keeps a one-row ``peer_meta`` table (worker count, worker seed, layout
version). When it already holds the requested workers from the same seed and layout, the
workers are not loaded again (a million take a while); ``--reload`` forces it. The load copies
the check-ins with ``COPY`` (asyncpg ``copy_records_to_table``) into a staging table, writes
the two tables from it, then builds the indexes and runs ``VACUUM ANALYZE``.

Between rounds every hold is released (one ``UPDATE``) and the workers table vacuumed, so each
round sees the same index, as the project's benchmark does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bench.population import REQUEST_SEED, WORKER_SEED, Province, check_ins, jobs
from dispatch.model import Job
from infra.ports import Presence
from infra.settings import PolicySettings

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/gig_bench_postgis"
LAYOUT = 1  # bump when the tables or the index change: a stored population is then reloaded
SRID_UTM_49N = 32649
COPY_CHUNK = 50_000
SAME_TAG = "pg"  # request ids B{tag}-NNNNNN of the shared request list
EXPLAIN_SAMPLE = 50

_POLICY = PolicySettings()
RADIUS_M = _POLICY.radii_km[0] * 1000.0
HOLD_TTL_MS = int(_POLICY.offer_ttl_s * 1000)
OVER_OFFER = _POLICY.over_offer

Progress = Callable[[str], None]

SCHEMA = f"""
CREATE EXTENSION IF NOT EXISTS postgis;
CREATE EXTENSION IF NOT EXISTS btree_gist;
DROP TABLE IF EXISTS peer_meta, worker_skill, worker, checkin;
CREATE UNLOGGED TABLE checkin (
    id integer NOT NULL, lon double precision NOT NULL, lat double precision NOT NULL,
    skills text[] NOT NULL
);
CREATE TABLE worker (
    id integer NOT NULL,          -- n of bench.population.worker_id(n)
    held_by text,                 -- the request holding the worker
    held_until_ms bigint NOT NULL DEFAULT 0   -- free once this has passed (the hold's TTL)
) WITH (fillfactor = 70);
CREATE TABLE worker_skill (
    worker integer NOT NULL,
    skill text NOT NULL,
    geom geometry(Point, {SRID_UTM_49N}) NOT NULL
);
CREATE TABLE peer_meta (
    workers integer NOT NULL, seed integer NOT NULL, layout integer NOT NULL,
    load_s double precision NOT NULL, loaded_at timestamptz NOT NULL DEFAULT now()
);
"""

FILL = f"""
INSERT INTO worker (id) SELECT id FROM checkin ORDER BY id;
INSERT INTO worker_skill (worker, skill, geom)
SELECT c.id, s.skill,
       ST_Transform(ST_SetSRID(ST_MakePoint(c.lon, c.lat), 4326), {SRID_UTM_49N})
FROM checkin c CROSS JOIN LATERAL unnest(c.skills) AS s(skill)
ORDER BY s.skill, ST_GeoHash(ST_SetSRID(ST_MakePoint(c.lon, c.lat), 4326), 8);
DROP TABLE checkin;
"""

INDEXES = """
SET maintenance_work_mem = '256MB';
ALTER TABLE worker ADD PRIMARY KEY (id);
CREATE INDEX worker_skill_knn ON worker_skill USING gist (skill, geom);
"""

_POINT = f"(SELECT ST_Transform(ST_SetSRID(ST_MakePoint($2, $3), 4326), {SRID_UTM_49N}))"

# $1 skill, $2 lon, $3 lat, $4 radius m, $5 how many, $6 now ms, $7 request id, $8 hold ms.
# The point is a scalar subquery: evaluated once per statement (an InitPlan), and a parameter
# the KNN index scan can order by. Rows another transaction has locked are skipped (SKIP
# LOCKED); a row another transaction held and committed meanwhile is re-checked (EvalPlanQual)
# and fails the held_until_ms test.
# Race: the KNN scan sits in a subquery (OFFSET 0 keeps it one) so that this re-check reads its
# row from a copy. Joined directly, PostgreSQL 15 re-fetches the worker_skill row by ctid, and
# a row that came through the lossy-distance reorder queue of the GiST scan has no valid ctid:
# "failed to fetch tuple for EvalPlanQual recheck" under contention. The outer ORDER BY uses
# the subquery's order, so the plan stays one KNN scan that stops after $5 free workers.
DECIDE = f"""
WITH picked AS (
    SELECT w.id
    FROM (
        SELECT s.worker, s.geom <-> {_POINT} AS d
        FROM worker_skill s
        WHERE s.skill = $1 AND ST_DWithin(s.geom, {_POINT}, $4)
        ORDER BY d
        OFFSET 0
    ) near
    JOIN worker w ON w.id = near.worker
    WHERE w.held_until_ms <= $6
    ORDER BY near.d
    LIMIT $5
    FOR UPDATE OF w SKIP LOCKED
)
UPDATE worker w SET held_by = $7, held_until_ms = $6 + $8
FROM picked WHERE w.id = picked.id
RETURNING w.id
"""

DECIDE_TYPES = "text, float8, float8, float8, integer, bigint, text, bigint"
EXPLAIN_JSON = "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)"
EXPLAIN_TEXT = "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)"
RELEASE = "UPDATE worker SET held_by = NULL, held_until_ms = 0 WHERE held_by IS NOT NULL"


def same_requests(province: Province, count: int, now_ms: int) -> list[Job]:
    """The request list the peer decides, to measure the project on the very same requests."""
    return jobs(province, count, SAME_TAG, now_ms, REQUEST_SEED)


def wanted(job: Job) -> int:
    """How many workers the first wave holds (``ceil(headcount * over_offer)``)."""
    return math.ceil(job.headcount * OVER_OFFER)


def decide_args(job: Job, now_ms: int) -> tuple[Any, ...]:
    """The parameters of ``DECIDE`` for one request."""
    return (
        job.skill, job.lon, job.lat, RADIUS_M, wanted(job), now_ms, job.request_id, HOLD_TTL_MS,
    )  # fmt: skip


# --- the database -------------------------------------------------------------------------


def server_dsn(dsn: str, database: str = "postgres") -> str:
    """The same server, another database."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


def database_of(dsn: str) -> str:
    return urlsplit(dsn).path.lstrip("/")


async def ensure_database(dsn: str, sync_commit: bool) -> None:
    """Create the peer's database where it is missing, and set its commit durability."""
    name = database_of(dsn)
    admin = await asyncpg.connect(server_dsn(dsn))
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await admin.execute(f'CREATE DATABASE "{name}"')
        mode = "on" if sync_commit else "off"
        await admin.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = {mode}')
        # Every decision is the same statement: plan it once per connection (asyncpg prepares
        # it), rather than again on each execution; the generic plan is the same KNN scan.
        await admin.execute(f'ALTER DATABASE "{name}" SET plan_cache_mode = force_generic_plan')
    finally:
        await admin.close()


async def drop_database(dsn: str) -> None:
    admin = await asyncpg.connect(server_dsn(dsn))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database_of(dsn)}" WITH (FORCE)')
    finally:
        await admin.close()


async def stored(conn: asyncpg.Connection, workers: int, seed: int) -> float | None:
    """The load time of the stored population if it is the one asked for, else None."""
    if not await conn.fetchval("SELECT to_regclass('peer_meta') IS NOT NULL"):
        return None
    row = await conn.fetchrow("SELECT workers, seed, layout, load_s FROM peer_meta")
    if row is None or (row["workers"], row["seed"], row["layout"]) != (workers, seed, LAYOUT):
        return None
    load_s: float = row["load_s"]
    return load_s


def records(changes: Iterable[Presence]) -> Iterator[tuple[int, float, float, list[str]]]:
    for c in changes:
        yield int(c.worker_id[1:]), c.lon, c.lat, list(c.skills)


def chunks(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    while part := [x for _, x in zip(range(size), items, strict=False)]:
        yield part


async def load(
    conn: asyncpg.Connection, province: Province, workers: int, seed: int, progress: Progress
) -> float:
    """Load ``workers`` check-ins from scratch; return the seconds it took."""
    started = time.perf_counter()
    async with conn.transaction():
        await conn.execute(SCHEMA)
        done = 0
        for part in chunks(records(check_ins(province, workers, seed)), COPY_CHUNK):
            await conn.copy_records_to_table("checkin", records=part)
            done += len(part)
            if done % (COPY_CHUNK * 4) == 0 or done == workers:
                progress(f"  copied {done:,} of {workers:,} check-ins")
        await conn.execute(FILL)
        progress("  building the primary key and the GiST (skill, geom) index")
        await conn.execute(INDEXES)
    progress("  VACUUM ANALYZE")
    await conn.execute("VACUUM ANALYZE worker, worker_skill")
    took = time.perf_counter() - started
    await conn.execute(
        "INSERT INTO peer_meta (workers, seed, layout, load_s) VALUES ($1, $2, $3, $4)",
        workers, seed, LAYOUT, took,
    )  # fmt: skip
    return took


async def prepare(
    dsn: str,
    province: Province,
    workers: int,
    *,
    seed: int = WORKER_SEED,
    reload: bool = False,
    sync_commit: bool = False,
    progress: Progress = print,
) -> float:
    """Make sure the database holds ``workers`` workers; return the (stored) load seconds."""
    await ensure_database(dsn, sync_commit)
    conn = await asyncpg.connect(dsn)
    try:
        previous = None if reload else await stored(conn, workers, seed)
        if previous is not None:
            progress(f"  {workers:,} workers already loaded (in {previous:.1f} s); reusing them")
            await conn.execute(RELEASE)
            return previous
        progress(f"  loading {workers:,} workers")
        took = await load(conn, province, workers, seed, progress)
        progress(f"  loaded in {took:.1f} s")
        return took
    finally:
        await conn.close()


# --- the plan -----------------------------------------------------------------------------


def plan_buffers(node: dict[str, Any]) -> int:
    return int(node.get("Shared Hit Blocks", 0)) + int(node.get("Shared Read Blocks", 0))


async def explain(conn: asyncpg.Connection, requests: Sequence[Job], now_ms: int) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of decisions, each rolled back: the median buffers and ms
    over a sample, and the plan of a filled request with the median's buffers."""
    sample = []
    for job in requests[:EXPLAIN_SAMPLE]:
        out = await explained(conn, EXPLAIN_JSON, job, now_ms)
        plan = json.loads(out[0][0])[0]
        ms = float(plan["Execution Time"]) + float(plan["Planning Time"])
        sample.append((plan_buffers(plan["Plan"]), ms, plan["Plan"]["Actual Rows"], job))
    buffers = statistics.median(b for b, *_ in sample)
    filled = [s for s in sample if s[2] == wanted(s[3])] or sample
    typical = min(filled, key=lambda s: abs(s[0] - buffers))[3]
    rows = await explained(conn, EXPLAIN_TEXT, typical, now_ms)
    return {
        "buffers": buffers,
        "ms": round(statistics.median(ms for _, ms, *_ in sample), 3),
        "sample": len(sample),
        "text": "\n".join(r[0] for r in rows),
    }


async def explained(
    conn: asyncpg.Connection, query: str, job: Job, now_ms: int
) -> list[asyncpg.Record]:
    """Run ``query`` (an EXPLAIN ANALYZE of ``EXECUTE decide(...)``) for one request in a
    transaction that is rolled back. Through the prepared statement, as the rounds run it
    (asyncpg prepares it), so the plan shown is the generic plan they use."""
    if not await conn.fetchval("SELECT 1 FROM pg_prepared_statements WHERE name = 'decide'"):
        await conn.execute(f"PREPARE decide({DECIDE_TYPES}) AS {DECIDE}")
    tx = conn.transaction()
    await tx.start()
    try:
        args = ", ".join(literal(a) for a in decide_args(job, now_ms))
        rows: list[asyncpg.Record] = await conn.fetch(f"{query} EXECUTE decide({args})")
        return rows
    finally:
        await tx.rollback()


def literal(value: object) -> str:
    """A parameter as an SQL literal (EXPLAIN EXECUTE takes no bind parameters)."""
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


# --- the rounds ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Round:
    decisions_per_s: float
    latencies_ms: list[float]
    held: dict[str, list[int]]  # request id -> worker ids (n of worker_id(n))

    def offered(self) -> int:
        return sum(1 for ids in self.held.values() if ids)

    def filled(self, requests: Sequence[Job]) -> int:
        return sum(1 for j in requests if len(self.held.get(j.request_id, ())) >= wanted(j))


async def decide_all(pool: asyncpg.Pool, connections: int, requests: Sequence[Job]) -> Round:
    """``connections`` tasks, each with a connection of its own, taking the next request."""
    now_ms = requests[0].requested_at_ms
    queue = iter(requests)
    latencies: list[float] = []
    held: dict[str, list[int]] = {}

    async def work() -> None:
        async with pool.acquire() as conn:
            for job in queue:
                t0 = time.perf_counter()
                rows = await conn.fetch(DECIDE, *decide_args(job, now_ms))
                latencies.append((time.perf_counter() - t0) * 1000)
                held[job.request_id] = [r[0] for r in rows]

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(connections):
            group.create_task(work())
    return Round(len(requests) / (time.perf_counter() - started), latencies, held)


async def release(pool: asyncpg.Pool) -> None:
    """Free every hold, and vacuum the dead versions so the next round starts the same."""
    async with pool.acquire() as conn:
        await conn.execute(RELEASE)
        await conn.execute("VACUUM worker")


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(rounds: Sequence[Round], requests: Sequence[Job]) -> dict[str, Any]:
    med = statistics.median
    return {
        "decisions_per_s": round(med(r.decisions_per_s for r in rounds), 1),
        "p50_ms": round(med(percentile(r.latencies_ms, 0.50) for r in rounds), 3),
        "p99_ms": round(med(percentile(r.latencies_ms, 0.99) for r in rounds), 3),
        "offered": int(med(r.offered() for r in rounds)),
        "filled": int(med(r.filled(requests) for r in rounds)),
        "held_workers": int(med(sum(map(len, r.held.values())) for r in rounds)),
        "rounds": [round(r.decisions_per_s, 1) for r in rounds],
    }


async def at_connections(
    dsn: str, connections: int, requests: Sequence[Job], rounds: int, progress: Progress
) -> dict[str, Any]:
    async with pool_of(dsn, connections) as pool:
        await decide_all(pool, connections, requests[: min(len(requests), 500)])  # warm-up
        await release(pool)
        done = []
        for r in range(rounds):
            done.append(await decide_all(pool, connections, requests))
            await release(pool)
            p99 = percentile(done[-1].latencies_ms, 0.99)
            progress(
                f"  {connections} connections, round {r + 1}: "
                f"{done[-1].decisions_per_s:,.0f} decisions/s, p99 {p99:.2f} ms"
            )
    return summary(done, requests)


@asynccontextmanager
async def pool_of(dsn: str, size: int) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(dsn, min_size=size, max_size=size)
    try:
        yield pool
    finally:
        await pool.close()


async def measure(
    dsn: str,
    workers: int,
    requests: int,
    connections: Sequence[int] = (4, 8, 16),
    rounds: int = 3,
    progress: Callable[[str], None] = print,
    *,
    reload: bool = False,
    sync_commit: bool = False,
) -> dict[str, Any]:
    """Load (or reuse) ``workers`` workers, then decide ``requests`` requests in ``rounds``
    rounds at each connection count; medians of the rounds, JSON-ready."""
    province = Province.load()
    load_s = await prepare(
        dsn, province, workers, reload=reload, sync_commit=sync_commit, progress=progress
    )
    now_ms = int(time.time() * 1000)
    asked = same_requests(province, requests, now_ms)
    conn = await asyncpg.connect(dsn)
    try:
        plan = await explain(conn, asked, now_ms)
    finally:
        await conn.close()
    progress(f"  plan: {plan['buffers']} buffers, {plan['ms']} ms (median of {plan['sample']})")
    out: dict[str, Any] = {
        "workers": workers,
        "requests": requests,
        "load_s": round(load_s, 1),
        "plan": plan,
        "radius_m": RADIUS_M,
        "synchronous_commit": "on" if sync_commit else "off",
        "by_connections": {},
    }
    try:
        for n in connections:
            out["by_connections"][str(n)] = await at_connections(dsn, n, asked, rounds, progress)
    finally:
        await asyncio.shield(release_all(dsn))
    return out


async def release_all(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(RELEASE)
    finally:
        await conn.close()


# --- the command line ---------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.postgis",
        description="The PostgreSQL + PostGIS peer: one KNN statement per decision that holds "
        "the nearest free workers with the skill within 3 km (FOR UPDATE SKIP LOCKED). "
        "Loads the benchmark's workers into its own database (reused when it already holds "
        "them), then measures decisions/s and latency at each connection count.",
    )
    p.add_argument("--dsn", default=DEFAULT_DSN, help=f"the peer's own database ({DEFAULT_DSN})")
    p.add_argument("--workers", type=int, default=100_000, help="workers to load (100000)")
    p.add_argument("--requests", type=int, default=5000, help="requests per round (5000)")
    p.add_argument(
        "--connections", type=int, nargs="+", default=[4, 8, 16], help="pool sizes (4 8 16)"
    )
    p.add_argument("--rounds", type=int, default=3, help="rounds per pool size; medians (3)")
    p.add_argument("--reload", action="store_true", help="load the workers even if stored")
    p.add_argument(
        "--sync-commit",
        action="store_true",
        help="synchronous_commit = on (a WAL flush per decision) instead of off",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p.parse_args(argv)


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def table(result: dict[str, Any]) -> str:
    lines = ["connections  decisions/s  p50 ms  p99 ms  offered  filled"]
    for n, r in result["by_connections"].items():
        lines.append(
            f"{n:>11}  {r['decisions_per_s']:>11,.0f}  {r['p50_ms']:>6.2f}  {r['p99_ms']:>6.2f}"
            f"  {r['offered']:>7,}  {r['filled']:>6,}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    a = parse_args(argv)
    say(f"PostGIS peer: {a.workers:,} workers, {a.requests:,} requests, {a.dsn}")
    run = measure(
        a.dsn, a.workers, a.requests, a.connections, a.rounds, say,
        reload=a.reload, sync_commit=a.sync_commit,
    )  # fmt: skip
    try:
        result = asyncio.run(run)
    except KeyboardInterrupt:
        say("interrupted: holds released; a load cut short was rolled back")
        raise SystemExit(130) from None
    if a.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['plan']['text']}\n\n{table(result)}")


if __name__ == "__main__":
    main()
