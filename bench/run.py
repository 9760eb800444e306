"""``python -m bench.run``: the benchmark suite, written to ``bench/results/``.

For each size (10 k, 100 k and 1 M workers; ``--quick``: 100 k) it

1. checks the workers in through ``RedisWorkerIndex.apply`` under a key prefix of its own,
   measuring presence events per second and Redis memory per worker;
2. measures the match step side by side in rounds: the project's dispatcher, the naive
   baseline and the Redis ceiling (``redis-benchmark``);
3. runs the pipeline end to end through a private Apache Kafka node with the dispatcher in
   processes of its own: latency at 100 and 1,000 requests/s and the maximum sustained rate;

then times a rebuild of an empty Redis from the log (``bench.rebuild``) at 100 k and 1 M
workers, and sets the last results measured on the previous broker (Tansu) beside these.

Every key it writes is under its prefix and deleted afterwards. Ctrl-C stops it cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench import e2e, match, rebuild, report
from bench.population import Province, check_ins, chunked, jobs
from bench.profile import Sampler, summarise
from bench.redisutil import delete_prefix, index_workers, memory_usage, used_memory
from consumers.dispatching import Dispatcher
from infra.clients import policy_from, redis_client
from infra.keys import Keys
from infra.ports import Presence
from infra.redis_index import RedisRequestStore, RedisWorkerIndex
from infra.settings import PolicySettings, Settings
from producers.population import near

RESULTS = Path(__file__).parent / "results"
FULL_SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (100_000,)
REBUILD_REQUESTS = 10_000  # request states in the log the rebuild benchmark reads back


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


def parse_args(argv: Sequence[str] | None = None) -> Options:
    p = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Benchmark the dispatcher against a naive baseline and the Redis ceiling, "
        "end to end through Kafka, presence updates and Redis memory per worker. Writes "
        "latest.json, latest.md and latest.png to the results directory.",
    )
    p.add_argument("--quick", action="store_true", help="100 k workers only (a few minutes)")
    p.add_argument("--sizes", type=int, nargs="+", help="worker counts (default 10k 100k 1M)")
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
    p.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    p.add_argument("--skip-e2e", action="store_true", help="no Kafka end-to-end runs")
    p.add_argument(
        "--skip-rebuild", action="store_true", help="no timing of a rebuild of Redis from the log"
    )
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
    phase = a.phase_s or (10.0 if a.quick else 15.0)
    ceiling = min(a.ceiling_requests, 50_000) if a.quick else a.ceiling_requests
    return Options(
        sizes, a.rounds, a.match_requests, a.naive_requests, a.batch, ceiling, phase,
        a.redis_url, a.pg_dsn, a.out, a.skip_e2e, a.profile, a.dispatchers, a.skip_rebuild,
    )  # fmt: skip


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


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
    redis: Redis, index: RedisWorkerIndex, province: Province, workers: int
) -> dict[str, Any]:
    """Check the workers in, then measure memory; return presence and memory figures."""
    before = await used_memory(redis)
    load_rate = await index_workers(index, province, workers, batch=2000)
    after = await used_memory(redis)
    usage = await memory_usage(redis, index.keys.prefix)
    per_worker = usage["total"] / workers
    say(f"  {workers:,} workers checked in at {load_rate:,.0f} events/s; {per_worker:.0f} B each")
    return {
        "presence": {"checkin_events_per_s": round(load_rate)},
        "memory": {
            "redis_bytes_per_worker": round(per_worker, 1),
            "method": "sum of MEMORY USAGE (SAMPLES 0) over the index's keys, per worker",
            "by_key_kind_bytes_per_worker": {
                k: round(v / workers, 1) for k, v in usage.items() if k != "total"
            },
            "used_memory_delta_bytes_per_worker": round((after - before) / workers, 1),
        },
    }


# --- the match step ---------------------------------------------------------------------------


async def match_step(
    redis: Redis, dispatcher: Dispatcher, keys: Keys, province: Province, workers: int, opt: Options
) -> dict[str, Any]:
    """Rounds of project, naive and ceiling, one after the other; medians and ratios."""
    prefix = keys.prefix
    await match.build_naive(redis, prefix, province, workers)
    shard = await match.typical_shard(
        redis,
        keys,
        jobs(province, 2000, "s", 0, 3),
    )
    where = redis.connection_pool.connection_kwargs
    host, port = where.get("host", "127.0.0.1"), where.get("port", 6379)
    command = match.ceiling_command(shard, dispatcher.policy)
    project, full, naive, ceiling, offered = [], [], [], [], []
    for r in range(opt.rounds):
        batch_jobs = jobs(province, opt.match_requests, f"{r}", int(time.time() * 1000), 10 + r)
        project.append(
            await match.match_round(dispatcher.index, dispatcher.policy, batch_jobs, opt.batch)
        )
        got = await match.project_round(dispatcher, batch_jobs, opt.batch)
        await dispatcher.index.release(got.held)
        full.append(got.decisions_per_s)
        offered.append(got.requests_offered / len(batch_jobs))
        naive_jobs = batch_jobs[: opt.naive_requests]
        radius = dispatcher.policy.radii_km[0]
        naive.append(await match.naive_round(redis, prefix, naive_jobs, radius))
        ceiling.append(match.redis_benchmark(host, port, opt.ceiling_requests, command))
        say(
            f"  round {r + 1}: project {project[-1]:,.0f}/s (full decision {full[-1]:,.0f}/s), "
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
    say(f"  profile written to {path}")


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


async def one_size(redis: Redis, province: Province, workers: int, opt: Options) -> dict[str, Any]:
    say(f"{workers:,} workers")
    prefix = f"bench:{uuid.uuid4().hex[:6]}"
    settings = settings_for(opt, prefix)
    keys = Keys(prefix, settings.worker_buckets)
    index, store = RedisWorkerIndex(redis, keys), RedisRequestStore(redis, keys)
    dispatcher = Dispatcher(index, store, policy_from(settings.policy))
    result: dict[str, Any] = {"workers": workers}
    try:
        result |= await load_and_measure(redis, index, province, workers)
        result["match"] = await match_step(redis, dispatcher, keys, province, workers, opt)
        if opt.profile:
            await profile_round(dispatcher, province, opt)
        mix = presence_mix(province, workers, min(workers, 100_000))
        rate = await presence_updates(index, mix, batch=2000)
        result["presence"]["events_per_s"] = round(rate)
        say(f"  presence updates (move/offline/check-in): {rate:,.0f} events/s")
    finally:
        await delete_prefix(redis, prefix)
    if not opt.skip_e2e:
        result["e2e"] = await end_to_end(redis, province, workers, opt)
    return result


async def end_to_end(
    redis: Redis, province: Province, workers: int, opt: Options
) -> dict[str, Any]:
    prefix = f"bench:{uuid.uuid4().hex[:6]}"
    settings = settings_for(opt, prefix)
    index = RedisWorkerIndex(redis, Keys(prefix, settings.worker_buckets))
    drain = max(2000, min(30_000, workers // 8))
    say("  end to end through Kafka")
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
        say(f"  dispatcher profile written to {path}")
    say(
        f"  e2e: max {out['max_sustained_requests_per_s']:,.0f} req/s; p99 at 1,000/s "
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


async def main_async(opt: Options) -> dict[str, Any]:
    stop_on_interrupt()
    # The services' own client configuration (no per-reply socket timeout), for every contender.
    redis = redis_client(Settings(redis_url=opt.redis_url, _env_file=None))
    province = Province.load()
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    try:
        sizes = [await one_size(redis, province, n, opt) for n in opt.sizes]
    finally:
        await redis.aclose()
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
        say("interrupted; its Redis keys are deleted and its broker stopped")
        raise SystemExit(130) from None
    for path in report.write(result, opt.out):
        say(f"wrote {path}")
    print(report.markdown(result))


if __name__ == "__main__":
    main()
