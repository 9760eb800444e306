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
"""

from __future__ import annotations

import csv
import io
import shutil
import statistics
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from bench.population import Province, check_ins, chunked
from consumers.dispatching import Dispatcher
from dispatch import core
from dispatch.geo import cell_of
from dispatch.model import Job, NewJob, Policy
from infra.keys import Keys
from infra.ports import WorkerIndex
from schemas import events as ev

NAIVE_COUNT = 1000
CEILING_CLIENTS = 50
CEILING_PIPELINE = 16


@dataclass(frozen=True, slots=True)
class ProjectRound:
    decisions_per_s: float
    offers: int
    requests_offered: int
    held: list[tuple[str, str]]


async def project_round(dispatcher: Dispatcher, jobs: Sequence[Job], batch: int) -> ProjectRound:
    """Decide every job through the dispatcher, ``batch`` inputs at a time."""
    now = jobs[0].requested_at_ms
    held: list[tuple[str, str]] = []
    started = time.perf_counter()
    for part in chunked(jobs, batch):
        out = await dispatcher.handle([NewJob(j) for j in part], now)
        held += [
            (o.message.worker_id, o.message.request_id)
            for o in out
            if isinstance(o.message, ev.OfferMade)
        ]
    rate = len(jobs) / (time.perf_counter() - started)
    return ProjectRound(rate, len(held), len({rid for _, rid in held}), held)


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
