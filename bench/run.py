"""``python -m bench.run``: the benchmark suite, written to ``bench/results/``.

For each size (100 k and 1 M workers; ``--quick``: 100 k) it

1. checks the workers in through ``RedisWorkerIndex.apply`` under a key prefix of its own on
   one Redis, measuring presence events per second and Redis memory per worker;
2. measures the match step side by side in rounds: the project's dispatcher, the naive
   baseline and the Redis ceiling (``redis-benchmark``), and the full decision;
3. decides the PostGIS peer's request list (``bench.postgis.same_requests``) with the full
   decision, and at the largest size runs the full decision in 1, 2, … processes at once;
4. runs the pipeline end to end through a private Apache Kafka node with the dispatcher in
   processes of its own: latency at 100 and 1,000 requests/s and the maximum sustained rate;
5. repeats 1-3 on a Redis Cluster of three primaries and three replicas that it starts on free
   loopback ports (the naive baseline and the ceiling stay on the one Redis);
6. runs the PostgreSQL + PostGIS peer (``bench.postgis``) on the same requests;

then times a rebuild of an empty Redis from the log (``bench.rebuild``) at 100 k and 1 M
workers, and sets the last results measured on the previous broker (Tansu) beside these.

Every key it writes is under its prefix and deleted afterwards; its cluster is stopped and its
files removed. Ctrl-C stops it cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench import e2e, match, postgis, rebuild, report
from bench.population import Province, check_ins, chunked, jobs
from bench.profile import Sampler, summarise
from bench.redisutil import delete_prefix, index_workers, memory_usage, used_memory
from consumers.dispatching import Dispatcher
from dispatch.model import Job
from infra.clients import close_store, policy_from, redis_client, store_client
from infra.keys import Keys
from infra.ports import Presence
from infra.redis_cluster import Cluster, free_base
from infra.redis_index import RedisRequestStore, RedisWorkerIndex
from infra.redis_nodes import AnyRedis
from infra.settings import PolicySettings, Settings
from producers.population import near

RESULTS = Path(__file__).parent / "results"
FULL_SIZES = (100_000, 1_000_000)
QUICK_SIZES = (100_000,)
REBUILD_REQUESTS = 10_000  # request states in the log the rebuild benchmark reads back
STORED_PEER = 1_000_000  # the PostGIS population kept in the peer's database itself


@dataclass(frozen=True, slots=True)
class Options:
    sizes: tuple[int, ...]
    rounds: int
    match_requests: int
    naive_requests: int
    batch: int
    ceiling_requests: int
    phase_s: float
    redis_url: str
    pg_dsn: str
    out: Path
    skip_e2e: bool
    profile: bool
    dispatchers: int
    skip_rebuild: bool = False
    skip_cluster: bool = False
    skip_postgis: bool = False
    skip_scaling: bool = False
    postgis_dsn: str = postgis.DEFAULT_DSN
    connections: tuple[int, ...] = (4, 8, 16)
    scaling_processes: tuple[int, ...] = (1, 2)


def parse_args(argv: Sequence[str] | None = None) -> Options:
    p = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Benchmark the dispatcher on one Redis and on a Redis Cluster against a "
        "naive baseline, the Redis ceiling and a PostgreSQL + PostGIS peer; end to end "
        "through Kafka, presence updates, Redis memory per worker and scaling. Writes "
        "latest.json, latest.md and latest.png to the results directory.",
    )
    p.add_argument("--quick", action="store_true", help="100 k workers only")
    p.add_argument("--sizes", type=int, nargs="+", help="worker counts (default 100k 1M)")
    p.add_argument("--rounds", type=int, default=3, help="side-by-side rounds (3)")
    p.add_argument("--match-requests", type=int, default=4000, help="per project round (4000)")
    p.add_argument("--naive-requests", type=int, default=1000, help="per naive round (1000)")
    p.add_argument("--batch", type=int, default=500, help="dispatcher batch size (500)")
    p.add_argument("--ceiling-requests", type=int, default=100_000, help="redis-benchmark -n")
    p.add_argument("--phase-s", type=float, help="seconds per latency phase (15; quick 10)")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="Redis to use")
    p.add_argument(
        "--pg-dsn", default="postgresql://postgres@127.0.0.1:5432/gig_bench", help="market DB"
    )
    p.add_argument(
        "--postgis-dsn",
        default=postgis.DEFAULT_DSN,
        help="the PostGIS peer's database; sizes other than 1 M use <database>_<workers>",
    )
    p.add_argument(
        "--connections", type=int, nargs="+", default=[4, 8, 16], help="PostGIS pool sizes"
    )
    p.add_argument(
        "--scaling-processes",
        type=int,
        nargs="+",
        default=[1, 2],
        help="dispatcher processes of the scaling runs (1 2)",
    )
    p.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    p.add_argument("--skip-e2e", action="store_true", help="no Kafka end-to-end runs")
    p.add_argument(
        "--skip-rebuild", action="store_true", help="no timing of a rebuild of Redis from the log"
    )
    p.add_argument("--skip-cluster", action="store_true", help="no Redis Cluster runs")
    p.add_argument("--skip-postgis", action="store_true", help="no PostGIS peer")
    p.add_argument("--skip-scaling", action="store_true", help="no scaling runs")
    p.add_argument(
        "--dispatchers",
        type=int,
        default=2,
        help="dispatcher processes end to end, sharing one consumer group (2: one per core)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="also profile a match round (pyinstrument) and the dispatcher under load (py-spy)",
    )
    a = p.parse_args(argv)
    sizes = tuple(a.sizes) if a.sizes else QUICK_SIZES if a.quick else FULL_SIZES
    return Options(
        sizes=sizes,
        rounds=a.rounds,
        match_requests=a.match_requests,
        naive_requests=a.naive_requests,
        batch=a.batch,
        ceiling_requests=min(a.ceiling_requests, 50_000) if a.quick else a.ceiling_requests,
        phase_s=a.phase_s or (10.0 if a.quick else 15.0),
        redis_url=a.redis_url,
        pg_dsn=a.pg_dsn,
        out=a.out,
        skip_e2e=a.skip_e2e,
        profile=a.profile,
        dispatchers=a.dispatchers,
        skip_rebuild=a.skip_rebuild,
        skip_cluster=a.skip_cluster,
        skip_postgis=a.skip_postgis,
        skip_scaling=a.skip_scaling,
        postgis_dsn=a.postgis_dsn,
        connections=tuple(a.connections),
        scaling_processes=tuple(a.scaling_processes),
    )


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


@dataclass(frozen=True, slots=True)
class Store:
    """Where one phase keeps the worker index and the request states."""

    name: str  # "redis" or "cluster", as in the results
    label: str
    redis: AnyRedis
    url: str
    nodes: int  # primaries

    @property
    def cluster(self) -> bool:
        return self.name == "cluster"


# --- presence and memory ----------------------------------------------------------------------


def presence_mix(province: Province, workers: int, count: int, seed: int = 5) -> list[Presence]:
    """Updates for checked-in workers: half moves, a quarter offline, a quarter back in."""
    rng = random.Random(seed)
    known = list(check_ins(province, workers))
    out = []
    for _ in range(count):
        w = known[rng.randrange(workers)]
        roll = rng.random()
        if roll < 0.5:
            lon, lat = near(rng, w.lon, w.lat, 0.5)
            out.append(Presence(w.worker_id, "locate", lon, lat))
        elif roll < 0.75:
            out.append(Presence(w.worker_id, "offline"))
        else:
            out.append(Presence(w.worker_id, "checkin", w.lon, w.lat, w.skills))
    return out


async def presence_updates(index: RedisWorkerIndex, changes: list[Presence], batch: int) -> float:
    started = time.perf_counter()
    for part in chunked(changes, batch):
        await index.apply(part)
    return len(changes) / (time.perf_counter() - started)


async def load_and_measure(
    redis: AnyRedis, index: RedisWorkerIndex, province: Province, workers: int
) -> dict[str, Any]:
    """Check the workers in, then measure memory; return presence and memory figures."""
    before = await used_memory(redis)
    load_rate = await index_workers(index, province, workers, batch=2000)
    after = await used_memory(redis)
    usage = await memory_usage(redis, index.keys.prefix)
    per_worker = usage["total"] / workers
    say(f"    {workers:,} workers checked in at {load_rate:,.0f} events/s; {per_worker:.0f} B each")
    return {
        "presence": {"checkin_events_per_s": round(load_rate)},
        "memory": {
            "redis_bytes_per_worker": round(per_worker, 1),
            "method": "sum of MEMORY USAGE (SAMPLES 0) over the index's keys on every primary, "
            "per worker",
            "by_key_kind_bytes_per_worker": {
                k: round(v / workers, 1) for k, v in usage.items() if k != "total"
            },
            "used_memory_delta_bytes_per_worker": round((after - before) / workers, 1),
        },
    }


# --- the match step ---------------------------------------------------------------------------


def round_jobs(province: Province, opt: Options, r: int) -> list[Job]:
    """The requests of round ``r`` (the same in every store's round ``r``)."""
    return jobs(province, opt.match_requests, f"{r}", int(time.time() * 1000), 10 + r)


async def project_pair(
    dispatcher: Dispatcher, batch_jobs: list[Job], opt: Options
) -> tuple[float, match.ProjectRound]:
    """The match step, then the full decision, on the same requests (whose holds are released
    afterwards, so every round sees the same index)."""
    rate = await match.match_round(dispatcher.index, dispatcher.policy, batch_jobs, opt.batch)
    got = await match.project_round(dispatcher, batch_jobs, opt.batch)
    await dispatcher.index.release(got.held)
    return rate, got


async def match_step(
    redis: Redis, dispatcher: Dispatcher, keys: Keys, province: Province, workers: int, opt: Options
) -> dict[str, Any]:
    """Rounds of project, naive and ceiling, one after the other; medians and ratios."""
    prefix = keys.prefix
    await match.build_naive(redis, prefix, province, workers)
    shard = await match.typical_shard(redis, keys, jobs(province, 2000, "s", 0, 3))
    where = redis.connection_pool.connection_kwargs
    host, port = where.get("host", "127.0.0.1"), where.get("port", 6379)
    command = match.ceiling_command(shard, dispatcher.policy)
    project, full, naive, ceiling, offered = [], [], [], [], []
    for r in range(opt.rounds):
        batch_jobs = round_jobs(province, opt, r)
        rate, got = await project_pair(dispatcher, batch_jobs, opt)
        project.append(rate)
        full.append(got.decisions_per_s)
        offered.append(got.requests_offered / opt.match_requests)
        naive_jobs = batch_jobs[: opt.naive_requests]
        radius = dispatcher.policy.radii_km[0]
        naive.append(await match.naive_round(redis, prefix, naive_jobs, radius))
        ceiling.append(match.redis_benchmark(host, port, opt.ceiling_requests, command))
        say(
            f"    round {r + 1}: project {project[-1]:,.0f}/s (full decision {full[-1]:,.0f}/s), "
            f"naive {naive[-1]:,.0f}/s, ceiling {ceiling[-1]:,.0f}/s"
        )
    await redis.unlink(match.naive_key(prefix))
    p, n, c = match.median(project), match.median(naive), match.median(ceiling)
    return {
        "project_decisions_per_s": round(p, 1),
        "project_full_decisions_per_s": round(match.median(full), 1),
        "naive_decisions_per_s": round(n, 1),
        "redis_ceiling_per_s": round(c, 1),
        "project_vs_naive": round(p / n, 2) if n else 0.0,
        "project_vs_ceiling": round(p / c, 3) if c else 0.0,
        "rounds": {"project": project, "project_full": full, "naive": naive, "ceiling": ceiling},
        "requests_offered_fraction": round(match.median(offered), 4),
        "batch": opt.batch,
        "ceiling_command": "redis-benchmark -n {} -c {} -P {} {}".format(
            opt.ceiling_requests, match.CEILING_CLIENTS, match.CEILING_PIPELINE, " ".join(command)
        ),
        "ceiling_shard_members": shard.members,
    }


async def cluster_match_step(
    dispatcher: Dispatcher, province: Province, opt: Options, single: dict[str, Any]
) -> dict[str, Any]:
    """The project's rounds on the cluster; its ratios are to the naive baseline and the
    ceiling measured on the one Redis at the same size (``single``)."""
    project, full, offered = [], [], []
    for r in range(opt.rounds):
        rate, got = await project_pair(dispatcher, round_jobs(province, opt, r), opt)
        project.append(rate)
        full.append(got.decisions_per_s)
        offered.append(got.requests_offered / opt.match_requests)
        say(f"    round {r + 1}: project {rate:,.0f}/s (full decision {full[-1]:,.0f}/s)")
    p = match.median(project)
    n, c = single["naive_decisions_per_s"], single["redis_ceiling_per_s"]
    return {
        "project_decisions_per_s": round(p, 1),
        "project_full_decisions_per_s": round(match.median(full), 1),
        "project_vs_naive": round(p / n, 2) if n else 0.0,
        "project_vs_ceiling": round(p / c, 3) if c else 0.0,
        "rounds": {"project": project, "project_full": full},
        "requests_offered_fraction": round(match.median(offered), 4),
        "batch": opt.batch,
    }


async def profile_round(dispatcher: Dispatcher, province: Province, opt: Options) -> None:
    """One project round under pyinstrument; the text report goes beside the results."""
    from pyinstrument import Profiler

    batch_jobs = jobs(province, opt.match_requests, "prof", int(time.time() * 1000), 99)
    profiler = Profiler(interval=0.0005, async_mode="enabled")
    with profiler:
        got = await match.project_round(dispatcher, batch_jobs, opt.batch)
    await dispatcher.index.release(got.held)
    path = opt.out / "profile-match.txt"
    path.write_text(profiler.output_text(unicode=True, show_all=False))
    say(f"    profile written to {path}")


# --- the PostGIS peer's requests, and scaling -------------------------------------------------


async def same_requests(
    store: Store, index: RedisWorkerIndex, settings: Settings, province: Province, opt: Options
) -> dict[str, Any]:
    """Full decisions of the PostGIS peer's request list, in rounds; each round saves its
    requests under key prefix of its own and releases its holds afterwards."""
    asked = postgis.same_requests(province, opt.match_requests, int(time.time() * 1000))
    rounds = []
    for r in range(opt.rounds):
        keys = Keys(f"{settings.key_prefix}:same{r}", settings.worker_buckets)
        dispatcher = Dispatcher(
            index, RedisRequestStore(store.redis, keys), policy_from(settings.policy)
        )
        got = await match.project_round(dispatcher, asked, opt.batch)
        await index.release(got.held)
        rounds.append(got)
        say(
            f"    PostGIS's requests, round {r + 1}: {got.decisions_per_s:,.0f} full decisions/s; "
            f"within {settings.policy.radii_km[0]:g} km {got.offered_near:,} offered, "
            f"{got.filled_near:,} filled (at any radius {got.requests_offered:,}, {got.filled:,})"
        )
    return same_summary(rounds, len(asked), opt.batch)


def same_summary(rounds: list[match.ProjectRound], requests: int, batch: int) -> dict[str, Any]:
    """Medians over the rounds; a decision's latency is its batch's (see ``ProjectRound``)."""
    med = match.median
    counts = {
        "offered_within_first_radius": med([r.offered_near for r in rounds]),
        "filled_within_first_radius": med([r.filled_near for r in rounds]),
        "offered": med([r.requests_offered for r in rounds]),
        "filled": med([r.filled for r in rounds]),
    }
    return {
        "requests": requests,
        "batch": batch,
        "decisions_per_s": round(med([r.decisions_per_s for r in rounds]), 1),
        "p50_ms": round(med([match.percentile(r.batch_ms, 0.50) for r in rounds]), 1),
        "p99_ms": round(med([match.percentile(r.batch_ms, 0.99) for r in rounds]), 1),
        **{k: round(v) for k, v in counts.items()},
        **{f"{k}_fraction": round(v / requests, 4) for k, v in counts.items()},
        "held_workers": round(med([r.offers for r in rounds])),
        "rounds": [round(r.decisions_per_s, 1) for r in rounds],
    }


async def scaling_runs(store: Store, settings: Settings, opt: Options) -> list[dict[str, Any]]:
    """The full decision in 1, 2, … processes at once on this store's index."""
    runs = []
    for n in opt.scaling_processes:
        say(f"    full decisions in {n} process{'es' if n > 1 else ''} at once")
        spec = match.ScalingSpec(
            redis_url=store.url,
            cluster=store.cluster,
            prefix=settings.key_prefix,
            buckets=settings.worker_buckets,
            processes=n,
            requests=opt.match_requests,
            batch=opt.batch,
            rounds=opt.rounds,
        )
        try:
            got = await match.in_processes(spec)
        except RuntimeError as e:  # a process failed: the run goes on, the results say so
            runs.append({"store": store.name, "redis_nodes": store.nodes, "processes": n,
                         "error": str(e)})  # fmt: skip
            say(f"      failed: {e}")
            continue
        runs.append({"store": store.name, "redis_nodes": store.nodes, **got})
        say(
            f"      {got['decisions_per_s']:,.0f} decisions/s; a decision's batch took "
            f"p50 {got['p50_ms']:.0f} ms, p99 {got['p99_ms']:.0f} ms"
        )
    return runs


async def beside_postgis(result: dict[str, Any], workers: int, opt: Options) -> None:
    """The PostGIS peer on the same requests; the project's full decision ÷ the peer's best."""
    say("  the PostGIS peer on the same requests")
    peer = await postgis.measure(
        postgis_dsn(opt.postgis_dsn, workers),
        workers,
        opt.match_requests,
        opt.connections,
        opt.rounds,
        progress=say,
    )
    n, best = max(peer["by_connections"].items(), key=lambda kv: kv[1]["decisions_per_s"])
    fields = ("decisions_per_s", "p50_ms", "p99_ms", "offered", "filled")
    peer["best"] = {"connections": int(n), **{k: best[k] for k in fields}}
    result["postgis"] = peer
    for part in (result, result.get("cluster")):
        if part and "same_requests" in part and best["decisions_per_s"]:
            ratio = part["same_requests"]["decisions_per_s"] / best["decisions_per_s"]
            part["full_decision_vs_postgis"] = round(ratio, 2)


def postgis_dsn(dsn: str, workers: int) -> str:
    """The 1 M population lives in the peer's database itself, other sizes beside it, so each
    size's population is loaded once and then reused."""
    if workers == STORED_PEER:
        return dsn
    return postgis.server_dsn(dsn, f"{postgis.database_of(dsn)}_{workers}")


# --- one size ---------------------------------------------------------------------------------


def settings_for(opt: Options, prefix: str) -> Settings:
    return Settings(
        redis_url=opt.redis_url,
        pg_dsn=opt.pg_dsn,
        key_prefix=prefix,
        dispatcher_group=f"{prefix}-dispatcher",
        presence_group=f"{prefix}-presence",
        policy=PolicySettings(),
        _env_file=None,
    )


async def on_store(
    store: Store,
    province: Province,
    workers: int,
    opt: Options,
    largest: bool,
    single: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every figure of one store at one size: load, memory, match step, the PostGIS peer's
    requests, scaling (``largest``), presence. ``single``: the one Redis's match figures."""
    say(f"  {store.label}")
    prefix = f"bench:{uuid.uuid4().hex[:6]}"
    settings = settings_for(opt, prefix)
    keys = Keys(prefix, settings.worker_buckets)
    index = RedisWorkerIndex(store.redis, keys)
    dispatcher = Dispatcher(
        index, RedisRequestStore(store.redis, keys), policy_from(settings.policy)
    )
    result: dict[str, Any] = {"redis_nodes": store.nodes}
    try:
        result |= await load_and_measure(store.redis, index, province, workers)
        if isinstance(store.redis, Redis):
            result["match"] = await match_step(
                store.redis, dispatcher, keys, province, workers, opt
            )
            if opt.profile:
                await profile_round(dispatcher, province, opt)
        else:
            result["match"] = await cluster_match_step(dispatcher, province, opt, single or {})
        if not opt.skip_postgis:
            result["same_requests"] = await same_requests(store, index, settings, province, opt)
        if largest and not opt.skip_scaling:
            result["scaling"] = await scaling_runs(store, settings, opt)
        mix = presence_mix(province, workers, min(workers, 100_000))
        rate = await presence_updates(index, mix, batch=2000)
        result["presence"]["events_per_s"] = round(rate)
        say(f"    presence updates (move/offline/check-in): {rate:,.0f} events/s")
    finally:
        await delete_prefix(store.redis, prefix)
    return result


async def one_size(
    stores: list[Store], province: Province, workers: int, opt: Options
) -> dict[str, Any]:
    say(f"{workers:,} workers")
    single, *others = stores
    largest = workers == max(opt.sizes)
    result: dict[str, Any] = {"workers": workers}
    result |= await on_store(single, province, workers, opt, largest)
    if not opt.skip_e2e:
        assert isinstance(single.redis, Redis)
        result["e2e"] = await end_to_end(single.redis, province, workers, opt)
    for store in others:
        result[store.name] = await on_store(store, province, workers, opt, largest, result["match"])
    if not opt.skip_postgis:
        await beside_postgis(result, workers, opt)
    runs = result.pop("scaling", []) + result.get("cluster", {}).pop("scaling", [])
    if runs:
        result["scaling"] = {
            "workers": workers,
            "batch": opt.batch,
            "requests_per_process": opt.match_requests,
            "rounds": opt.rounds,
            "runs": runs,
        }
    return result


async def end_to_end(
    redis: Redis, province: Province, workers: int, opt: Options
) -> dict[str, Any]:
    prefix = f"bench:{uuid.uuid4().hex[:6]}"
    settings = settings_for(opt, prefix)
    index = RedisWorkerIndex(redis, Keys(prefix, settings.worker_buckets))
    drain = max(2000, min(30_000, workers // 8))
    say("  end to end through Kafka (single Redis)")
    raw = Path(tempfile.mkdtemp(prefix="bench-pyspy-")) / "dispatcher.raw"
    try:
        await index_workers(index, province, workers, batch=2000, progress=False)
        with tempfile.TemporaryDirectory(prefix="bench-kafka-") as tmp:
            async with e2e.private_broker(Path(tmp)) as bootstrap:
                # The broker is this run's own: its topics are new, so the dispatchers' group
                # reads them from the start, whenever the processes join.
                kafka = settings.kafka.model_copy(update={"new_group_start": "earliest"})
                settings = settings.model_copy(
                    update={"kafka_bootstrap": bootstrap, "kafka": kafka}
                )
                await e2e.prepare(settings)
                with e2e.dispatcher_processes(settings, opt.dispatchers) as procs:
                    sampler = Sampler(procs[0].pid or 0, raw) if opt.profile else None
                    plan = e2e.Plan((100, 1000), opt.phase_s, drain, sampler)
                    out = await e2e.run_phases(settings, province, plan)
    finally:
        await delete_prefix(redis, prefix)
    if opt.profile and raw.exists():
        path = opt.out / "profile-dispatcher.txt"
        path.write_text(summarise(raw))
        say(f"    dispatcher profile written to {path}")
    shutil.rmtree(raw.parent, ignore_errors=True)
    say(
        f"    e2e: max {out['max_sustained_requests_per_s']:,.0f} req/s; p99 at 1,000/s "
        f"{out['latency_ms_at_1000_rps']['p99']:.1f} ms"
    )
    return out


def stop_on_interrupt() -> None:
    """Ctrl-C or SIGTERM: cancel the run (again on every signal) so its clean-up runs."""
    loop, task = asyncio.get_running_loop(), asyncio.current_task()

    def interrupt() -> None:
        e2e.STOP.set()
        if task is not None:
            task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupt)


@contextlib.contextmanager
def redis_cluster(opt: Options) -> Iterator[Cluster | None]:
    """A Redis Cluster of this run's own (three primaries, three replicas) on free loopback
    ports and in a temporary directory; stopped and removed however the run ends."""
    if opt.skip_cluster:
        yield None
        return
    with tempfile.TemporaryDirectory(
        prefix="bench-redis-cluster-", ignore_cleanup_errors=True
    ) as d:
        cluster = Cluster(free_base(), Path(d))
        say(f"starting a Redis Cluster on 127.0.0.1:{cluster.ports[0]}-{cluster.ports[-1]}")
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()
            say("Redis Cluster stopped")


@contextlib.asynccontextmanager
async def stores_of(opt: Options) -> AsyncIterator[list[Store]]:
    """The one Redis, and the cluster unless skipped; their clients closed at the end."""
    # The services' own client configuration (no per-reply socket timeout), for every contender.
    redis = redis_client(Settings(redis_url=opt.redis_url, _env_file=None))
    stores = [Store("redis", "single Redis", redis, opt.redis_url, 1)]
    try:
        with redis_cluster(opt) as cluster:
            if cluster is not None:
                url = cluster.url
                client = store_client(Settings(redis_url=url, redis_cluster=True, _env_file=None))
                label = "Redis Cluster (3 primaries, 3 replicas)"
                stores.append(Store("cluster", label, client, url, len(cluster.primaries())))
            try:
                yield stores
            finally:
                for store in stores[1:]:
                    await close_store(store.redis)
    finally:
        await redis.aclose()


async def main_async(opt: Options) -> dict[str, Any]:
    stop_on_interrupt()
    province = Province.load()
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    async with stores_of(opt) as stores:
        sizes = [await one_size(stores, province, n, opt) for n in opt.sizes]
    largest = dict(sizes[-1])
    largest["sizes"] = sizes
    if not opt.skip_rebuild:
        say("rebuilding an empty Redis from the log")
        counts = [n for n in opt.sizes if n >= 100_000] or list(opt.sizes[-1:])
        largest["rebuild"] = await rebuild.run(counts, REBUILD_REQUESTS, opt.redis_url)
    largest["baseline"] = baseline()
    largest["run"] = {
        "started": started,
        "command": "python -m bench.run " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {_cpus()} CPUs, Python {platform.python_version()}",
        "rounds": opt.rounds,
        "markets": len(province.markets),
    }
    return largest


def baseline() -> dict[str, Any] | None:
    """The last run on the previous development broker (Tansu), kept for comparison."""
    path = RESULTS / "tansu-baseline.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return {"label": "the last run on Tansu", "run": data["run"], "sizes": data["sizes"]}


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: run the suite and write the results."""
    opt = parse_args(argv)
    opt.out.mkdir(parents=True, exist_ok=True)
    try:
        result = asyncio.run(main_async(opt))
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("interrupted; its Redis keys are deleted, its cluster and broker stopped")
        raise SystemExit(130) from None
    for path in report.write(result, opt.out):
        say(f"wrote {path}")
    print(report.markdown(result))


if __name__ == "__main__":
    main()
