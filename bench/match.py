"""The match step, three ways, measured side by side in rounds.

- **project** (the match step): the dispatcher core on the geo-sharded index, in batches: one
  pipeline of ``GEOSEARCH`` for the batch's requests (every cell each radius reaches), then the
  core ranks the candidates, plans each request's wave (no worker planned twice in a batch) and
  makes the offers with their reasons. This is the same work the naive baseline does (search,
  filter, choose) on the project's layout, and nothing more.
- **project, full decision**: ``Dispatcher.handle`` with ``NewJob`` inputs in batches against
  the Redis index and request store: the match step, plus holding the workers (``SET NX``),
  saving the state (compare-and-set), scheduling its timer and building the messages. After
  each round the held workers are released through the index, so every round sees the same
  index.
- **naive**: one province-wide GEO set whose members carry their skills; one
  ``GEOSEARCH … 3 km ASC COUNT 1000 WITHDIST`` round trip per request, the skill filtered in
  Python, the nearest ``headcount`` taken. No holds, no saves: a search, not a full decision,
  which flatters the baseline.
- **ceiling**: ``redis-benchmark`` sending the same ``GEOSEARCH`` the dispatcher sends, to a
  typical shard of the same layout (the shard a median request searches first).

``project_round`` also counts the requests offered and filled (within the first radius, and
at any radius the decision widened to) and times each batch, for the comparison with the
PostGIS peer on the same requests. ``in_processes`` runs full decisions in several processes
at once on one index, for the scaling figures.
"""

from __future__ import annotations

import asyncio
import csv
import io
import math
import multiprocessing
import queue
import shutil
import statistics
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from bench.population import Province, check_ins, chunked, jobs
from consumers.dispatching import Dispatcher
from dispatch import core
from dispatch.geo import cell_of
from dispatch.model import Job, NewJob, Policy
from infra.clients import close_store, policy_from, store_client
from infra.keys import Keys
from infra.ports import WorkerIndex
from infra.redis_index import RedisRequestStore, RedisWorkerIndex
from infra.settings import Settings
from schemas import events as ev

NAIVE_COUNT = 1000
CEILING_CLIENTS = 50
CEILING_PIPELINE = 16


@dataclass(frozen=True, slots=True)
class ProjectRound:
    """One round of full decisions.

    A decision widens its search at once when the first radius holds too few free workers, so
    ``requests_offered`` and ``filled`` count offers at any radius, ``offered_near`` and
    ``filled_near`` only those within the first radius (what the PostGIS peer decides). A
    request is filled when it holds as many workers as its first wave wants
    (``ceil(headcount * over_offer)``). ``batch_ms``: how long each batch's ``handle`` took,
    the latency of every decision in it (its offers go out when the batch ends)."""

    decisions_per_s: float
    offers: int
    requests_offered: int
    held: list[tuple[str, str]]
    filled: int = 0
    offered_near: int = 0
    filled_near: int = 0
    batch_ms: tuple[float, ...] = ()


async def project_round(dispatcher: Dispatcher, jobs: Sequence[Job], batch: int) -> ProjectRound:
    """Decide every job through the dispatcher, ``batch`` inputs at a time."""
    now = jobs[0].requested_at_ms
    offers: list[ev.OfferMade] = []
    batch_ms: list[float] = []
    started = time.perf_counter()
    for part in chunked(jobs, batch):
        t0 = time.perf_counter()
        out = await dispatcher.handle([NewJob(j) for j in part], now)
        batch_ms.append((time.perf_counter() - t0) * 1000)
        offers += [o.message for o in out if isinstance(o.message, ev.OfferMade)]
    rate = len(jobs) / (time.perf_counter() - started)
    held = [(o.worker_id, o.request_id) for o in offers]
    anywhere = Counter(o.request_id for o in offers)
    first = dispatcher.policy.radii_km[0]
    near = Counter(o.request_id for o in offers if o.distance_km <= first)
    return ProjectRound(
        rate, len(held), len(anywhere), held, filled(jobs, anywhere, dispatcher.policy),
        len(near), filled(jobs, near, dispatcher.policy), tuple(batch_ms),
    )  # fmt: skip


def filled(jobs: Sequence[Job], offers: Counter[str], policy: Policy) -> int:
    """How many requests hold every worker their first wave wants."""
    over = policy.over_offer
    return sum(1 for j in jobs if offers[j.request_id] >= math.ceil(j.headcount * over))


async def match_round(index: WorkerIndex, policy: Policy, jobs: Sequence[Job], batch: int) -> float:
    """The match step for every job, ``batch`` at a time; return decisions per second."""
    now = jobs[0].requested_at_ms
    started = time.perf_counter()
    for part in chunked(jobs, batch):
        states = [core.open_request(j, now, policy).state for j in part]
        found = await index.search([core.search_for(s, policy) for s in states])
        taken: set[str] = set()
        for state, candidates in zip(states, found, strict=True):
            plan = frozenset(c.worker_id for c in core.plan_wave(state, candidates, policy, taken))
            taken |= plan
            core.apply_wave(state, candidates, plan, frozenset(), now, policy)
    return len(jobs) / (time.perf_counter() - started)


# --- the naive baseline -----------------------------------------------------------------------


def naive_key(prefix: str) -> str:
    return f"{prefix}:naive:geo"


async def build_naive(redis: Redis, prefix: str, province: Province, count: int) -> None:
    """One province-wide GEO set; each member is ``worker|skill|skill``."""
    for part in chunked(list(check_ins(province, count)), 10_000):
        pipe = redis.pipeline(transaction=False)
        for c in part:
            pipe.geoadd(naive_key(prefix), (c.lon, c.lat, "|".join((c.worker_id, *c.skills))))
        await pipe.execute()


async def naive_round(redis: Redis, prefix: str, jobs: Sequence[Job], radius_km: float) -> float:
    """One round trip per request; return decisions per second."""
    key = naive_key(prefix)
    started = time.perf_counter()
    for job in jobs:
        found: list[Any] = await redis.geosearch(
            key,
            longitude=job.lon,
            latitude=job.lat,
            radius=radius_km,
            unit="km",
            sort="ASC",
            count=NAIVE_COUNT,
            withdist=True,
        )
        fit = [m for m, _ in found if job.skill in m.split("|")[1:]]
        del fit[job.headcount :]
    return len(jobs) / (time.perf_counter() - started)


# --- the Redis ceiling ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Shard:
    """The shard a median request searches first, and where it searches from."""

    key: str
    members: int
    lon: float
    lat: float


async def typical_shard(redis: Redis, keys: Keys, jobs: Sequence[Job]) -> Shard:
    """The home shard of the request at the median of the requests' home-shard sizes."""
    home = [keys.geo(cell_of(j.lon, j.lat), j.skill) for j in jobs]
    distinct = list(Counter(home))
    pipe = redis.pipeline(transaction=False)
    for key in distinct:
        pipe.zcard(key)
    sizes = dict(zip(distinct, await pipe.execute(), strict=True))
    ranked = sorted(range(len(jobs)), key=lambda i: sizes[home[i]])
    median = ranked[len(ranked) // 2]
    return Shard(home[median], sizes[home[median]], jobs[median].lon, jobs[median].lat)


def ceiling_command(shard: Shard, policy: Policy) -> list[str]:
    """The dispatcher's first search for a request at the shard, as a Redis command."""
    return [
        "GEOSEARCH", shard.key, "FROMLONLAT", f"{shard.lon}", f"{shard.lat}",
        "BYRADIUS", f"{policy.radii_km[0]}", "km", "ASC", "COUNT", f"{policy.search_count}",
        "WITHDIST",
    ]  # fmt: skip


def redis_benchmark(host: str, port: int, requests: int, command: Sequence[str]) -> float:
    """Run ``redis-benchmark`` on one command; return its requests per second."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        raise RuntimeError("redis-benchmark is missing: run `make system-deps` (redis-tools)")
    args = [binary, "-h", host, "-p", str(port), "-n", str(requests)]
    args += ["-c", str(CEILING_CLIENTS), "-P", str(CEILING_PIPELINE), "--csv", *command]
    out = subprocess.run(args, check=True, capture_output=True, text=True, timeout=600).stdout
    rows = list(csv.reader(io.StringIO(out)))
    return float(rows[-1][1])


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


# --- the full decision in processes (scaling) -------------------------------------------------

BARRIER_TIMEOUT_S = 300.0
CHILD_TIMEOUT_S = 1800.0


@dataclass(frozen=True, slots=True)
class ScalingSpec:
    """``processes`` dispatchers, each in a process of its own, deciding requests of their own
    on one worker index (``prefix``) in the same Redis or Redis Cluster, a round at a time."""

    redis_url: str
    cluster: bool
    prefix: str
    buckets: int
    processes: int
    requests: int  # per process and round
    batch: int
    rounds: int


# (started, ended) wall-clock seconds, decisions, each batch's milliseconds: one process, one round
Timed = tuple[float, float, int, tuple[float, ...]]


async def in_processes(spec: ScalingSpec) -> dict[str, Any]:
    """Run the spec's rounds in its processes, started together on a barrier; the rate of a
    round is every process's decisions over the time from the first start to the last end."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(spec.processes), ctx.Queue()
    procs = [
        ctx.Process(target=_decide_child, args=(spec, slot, barrier, results), daemon=True)
        for slot in range(spec.processes)
    ]
    for proc in procs:
        proc.start()
    try:
        got = await _collect(procs, results, spec.processes)
    finally:
        for proc in procs:
            _stop(proc)
    return scaling_summary(spec, got)


async def _collect(procs: list[Any], results: Any, count: int) -> dict[int, list[Timed]]:
    got: dict[int, list[Timed]] = {}
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    while len(got) < count:
        try:
            slot, value = results.get_nowait()
        except queue.Empty:
            gone = all(not p.is_alive() for p in procs)
            if gone or time.monotonic() > deadline:
                raise RuntimeError("a scaling process ended without results") from None
            await asyncio.sleep(0.1)
            continue
        if isinstance(value, str):
            raise RuntimeError(f"dispatcher process {slot} of the scaling run failed: {value}")
        got[slot] = value
    return got


def _stop(proc: Any) -> None:
    if proc.is_alive():
        proc.terminate()
        proc.join(15)
    if proc.is_alive():
        proc.kill()
        proc.join(5)


def _decide_child(spec: ScalingSpec, slot: int, barrier: Any, results: Any) -> None:
    """Child process: the rounds of one dispatcher; its timings (or its error) on ``results``."""
    try:
        results.put((slot, asyncio.run(_decide_rounds(spec, slot, barrier))))
    except BaseException as e:  # reported to the parent, which fails the run
        barrier.abort()
        results.put((slot, f"{type(e).__name__}: {e}"))


async def _decide_rounds(spec: ScalingSpec, slot: int, barrier: Any) -> list[Timed]:
    settings = Settings(redis_url=spec.redis_url, redis_cluster=spec.cluster, _env_file=None)
    redis = store_client(settings)
    tag = f"x{spec.processes}-{slot}"
    try:
        index = RedisWorkerIndex(redis, Keys(spec.prefix, spec.buckets))
        store = RedisRequestStore(redis, Keys(f"{spec.prefix}:{tag}", spec.buckets))
        dispatcher = Dispatcher(index, store, policy_from(settings.policy))
        province, now = Province.load(), int(time.time() * 1000)
        warm = await project_round(dispatcher, jobs(province, 100, f"{tag}w", now, 500 + slot), 100)
        await index.release(warm.held)
        out: list[Timed] = []
        for r in range(spec.rounds):
            asked = jobs(province, spec.requests, f"{tag}r{r}", now, 600 + 10 * slot + r)
            barrier.wait(BARRIER_TIMEOUT_S)
            started = time.time()
            got = await project_round(dispatcher, asked, spec.batch)
            out.append((started, time.time(), len(asked), got.batch_ms))
            barrier.wait(BARRIER_TIMEOUT_S)  # every process done before any releases its holds
            await index.release(got.held)
        return out
    finally:
        await close_store(redis)


def scaling_summary(spec: ScalingSpec, got: dict[int, list[Timed]]) -> dict[str, Any]:
    rates = []
    for r in range(spec.rounds):
        runs = [timed[r] for timed in got.values()]
        span = max(end for _, end, _, _ in runs) - min(start for start, _, _, _ in runs)
        rates.append(sum(n for _, _, n, _ in runs) / span)
    batch_ms = [ms for timed in got.values() for *_, each in timed for ms in each]
    return {
        "processes": spec.processes,
        "decisions_per_s": round(median(rates), 1),
        "p50_ms": round(percentile(batch_ms, 0.50), 1),
        "p99_ms": round(percentile(batch_ms, 0.99), 1),
        "batches": len(batch_ms),
        "requests_per_process": spec.requests,
        "rounds": [round(r, 1) for r in rates],
    }


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1); 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]
