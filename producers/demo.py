"""``make demo``: a compressed morning of instant hire on the real stack.

It brings the stack up, starts the presence consumer and two dispatcher instances as separate
processes, checks in simulated workers, posts requests from many markets, lets the simulated
workers answer, and prints a summary: how many requests filled, partly filled or expired, offers
per fill, and time to first offer and to fill (p50, p99).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from redis.asyncio import Redis

from infra import stack
from infra.clock import now_ms
from infra.kafka import make_consumer, make_producer, start_group_at_end
from infra.keys import Keys
from infra.markets import load_markets
from infra.process import run_cli, setup_logging, stop_on_signals
from infra.publish import Publisher
from infra.redis_index import RedisWorkerIndex
from infra.settings import STACK_DIR, Settings
from producers.load import post_morning
from producers.workers import Behaviour, Crowd, check_ins, publish_check_ins
from schemas import events as ev
from schemas.topics import (
    HIRE_REQUESTS,
    OFFER_RESPONSES,
    OFFERS,
    REQUEST_EVENTS,
    WORKER_EVENTS,
)

log = logging.getLogger("demo")


@dataclass
class Outcomes:
    """What the request-events topic says about each request."""

    requested_at: dict[str, int] = field(default_factory=dict)
    headcount: dict[str, int] = field(default_factory=dict)
    assigned: dict[str, int] = field(default_factory=dict)
    ended: dict[str, str] = field(default_factory=dict)
    filled_at: dict[str, int] = field(default_factory=dict)
    offers_made: dict[str, int] = field(default_factory=dict)

    def take(self, msg: ev.RequestEvent) -> None:
        rid = msg.request_id
        match msg:
            case ev.WorkerAssigned():
                self.assigned[rid] = max(self.assigned.get(rid, 0), msg.assigned)
            case ev.RequestFilled():
                self.ended[rid] = "filled"
                self.filled_at[rid] = msg.at_ms
                self.offers_made[rid] = msg.offers_made
            case ev.RequestExpired():
                self.ended[rid] = "partly filled" if msg.assigned else "expired"
                self.offers_made[rid] = msg.offers_made
            case ev.RequestCancelled() | ev.RequestRejected():
                self.ended[rid] = (
                    "cancelled" if isinstance(msg, ev.RequestCancelled) else "rejected"
                )


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def summary(out: Outcomes, crowd: Crowd) -> str:
    ended = {r: v for r, v in out.ended.items() if r in out.requested_at}
    counts = {
        k: sum(1 for v in ended.values() if v == k)
        for k in ("filled", "partly filled", "expired", "cancelled", "rejected")
    }
    total = len(out.requested_at)
    first = [
        crowd.first_offer_ms[r] - t
        for r, t in out.requested_at.items()
        if r in crowd.first_offer_ms
    ]
    fill = [out.filled_at[r] - t for r, t in out.requested_at.items() if r in out.filled_at]
    assigned = sum(n for r, n in out.assigned.items() if r in out.requested_at)
    offers = sum(n for r, n in out.offers_made.items() if r in out.requested_at)
    rows = [
        ("requests posted", f"{total}"),
        *(
            (f"  {k}", f"{v} ({100 * v / max(1, total):.1f} %)")
            for k, v in counts.items()
            if v or k != "rejected"
        ),
        ("  still open", f"{total - len(ended)}"),
        ("workers assigned", f"{assigned} of {sum(out.headcount.values())} wanted"),
        ("offers per fill (per worker assigned)", f"{offers / max(1, assigned):.2f}"),
        (
            "time to first offer p50 / p99",
            f"{percentile(first, 50):.0f} ms / {percentile(first, 99):.0f} ms",
        ),
        (
            "time to fill p50 / p99",
            f"{percentile(fill, 50) / 1000:.1f} s / {percentile(fill, 99) / 1000:.1f} s",
        ),
        (
            "offer delivery p50 / p99",
            f"{percentile(crowd.offer_latency_ms, 50):.0f} ms / "
            f"{percentile(crowd.offer_latency_ms, 99):.0f} ms",
        ),
        ("worker answers", ", ".join(f"{k} {v}" for k, v in crowd.answers.items())),
    ]
    wa, wb = max(len(a) for a, _ in rows), max(len(b) for _, b in rows)
    line = f"+{'-' * (wa + 2)}+{'-' * (wb + 2)}+"
    title = f"| {'instant hire: the morning':<{wa + wb + 3}} |"
    return "\n".join([line, title, line, *(f"| {a:<{wa}} | {b:<{wb}} |" for a, b in rows), line])


async def start_groups_at_end(settings: Settings, tag: str) -> None:
    """This morning's groups read from now on: new groups start at the end of the log, and
    the services may join after the first check-ins are published."""
    kafka = settings.kafka_slice()
    for group, topics in (
        (f"demo-dispatcher-{tag}", (HIRE_REQUESTS, OFFER_RESPONSES)),
        (f"demo-presence-{tag}", (WORKER_EVENTS,)),
        (f"demo-crowd-{tag}", (OFFERS,)),
        (f"demo-events-{tag}", (REQUEST_EVENTS,)),
    ):
        await start_group_at_end(kafka, group, topics)


def start_service(module: str, env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
    log_path = STACK_DIR / f"{name}.log"
    with log_path.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", module],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


async def follow_events(settings: Settings, out: Outcomes, group: str, stop: asyncio.Event) -> None:
    consumer = make_consumer(settings.kafka_slice(), REQUEST_EVENTS, group_id=group)
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100, max_records=5000)
            for records in batch.values():
                for r in records:
                    out.take(ev.REQUEST_EVENT.validate_json(r.value))
    finally:
        await consumer.stop()


async def wait_for_index(index: RedisWorkerIndex, want: int, stop: asyncio.Event) -> None:
    started = time.monotonic()
    while not stop.is_set():
        have = await index.available()
        log.info("workers in the index: %d / %d", have, want)
        if have >= want or time.monotonic() - started > 120:
            return
        await asyncio.sleep(1.0)


async def wait_until_done(out: Outcomes, limit_s: float, stop: asyncio.Event) -> None:
    started = time.monotonic()
    while not stop.is_set() and not out.requested_at.keys() <= out.ended.keys():
        if time.monotonic() - started > limit_s:
            log.warning(
                "giving up waiting: %d requests still open", len(out.requested_at) - len(out.ended)
            )
            return
        filled = sum(1 for v in out.ended.values() if v == "filled")
        log.info(
            "requests ended %d / %d (filled %d)", len(out.ended), len(out.requested_at), filled
        )
        await asyncio.sleep(2.0)


async def morning(args: argparse.Namespace, settings: Settings, tag: str) -> str:
    stop = stop_on_signals()
    redis = Redis.from_url(settings.redis_url, decode_responses=True)
    producer = make_producer(settings.kafka_slice())
    await producer.start()
    offers = make_consumer(settings.kafka_slice(), OFFERS, group_id=f"demo-crowd-{tag}")
    await offers.start()
    publisher, out, started = Publisher(producer), Outcomes(), now_ms()
    crowd = Crowd(publisher, Behaviour(accept=args.accept), random.Random(args.seed))
    tasks = [
        asyncio.create_task(crowd.listen(offers, stop)),
        asyncio.create_task(follow_events(settings, out, f"demo-events-{tag}", stop)),
    ]
    try:
        markets = load_markets()
        await publish_check_ins(
            publisher, check_ins(args.workers, markets, args.seed, f"W{tag[-5:]}-")
        )
        index = RedisWorkerIndex(redis, Keys(settings.key_prefix, settings.worker_buckets))
        await wait_for_index(index, args.workers, stop)
        log.info("posting %d requests at %.0f/s", args.requests, args.rate)
        posted = await post_morning(
            publisher,
            markets,
            count=args.requests,
            rate_per_s=args.rate,
            deadline_s=args.deadline_s,
            seed=args.seed,
            tag=tag,
            stop=stop,
        )
        out.requested_at.update({r.request_id: r.at_ms for r in posted})
        out.headcount.update({r.request_id: r.headcount for r in posted})
        await wait_until_done(out, args.deadline_s + 30, stop)
        del started
        return summary(out, crowd)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await offers.stop()
        await producer.stop()
        await _forget(redis, settings.key_prefix)
        await redis.aclose()


async def _forget(redis: Redis, prefix: str) -> None:
    """Drop the run's keys, so repeated demos do not fill Redis."""
    batch = [k async for k in redis.scan_iter(match=f"{prefix}:*", count=5000)]
    for i in range(0, len(batch), 1000):
        await redis.delete(*batch[i : i + 1000])


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="demo", description=__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--workers", type=int, default=20_000, help="workers to check in (20000)")
    p.add_argument("--requests", type=int, default=2_000, help="requests to post (2000)")
    p.add_argument("--rate", type=float, default=40.0, help="requests per second (40)")
    p.add_argument("--deadline-s", type=float, default=60.0, help="request lifetime (60 s)")
    p.add_argument("--accept", type=float, default=0.8, help="workers' acceptance rate (0.8)")
    p.add_argument("--dispatchers", type=int, default=2, help="dispatcher instances (2)")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--keep-stack", action="store_true", help="leave the stack running afterwards")
    args = p.parse_args(argv)
    run_cli("demo", lambda: _demo(args), expected=(stack.StackError,))


def _demo(args: argparse.Namespace) -> None:
    setup_logging()
    had_broker = stack.is_up()
    bootstrap = stack.up(Settings())
    tag = str(int(time.time()))
    env = {
        **os.environ,
        "GIG_KAFKA_BOOTSTRAP": bootstrap,
        "GIG_KEY_PREFIX": f"demo{tag}",
        "GIG_DISPATCHER_GROUP": f"demo-dispatcher-{tag}",
        "GIG_PRESENCE_GROUP": f"demo-presence-{tag}",
    }
    settings = Settings(kafka_bootstrap=bootstrap, key_prefix=f"demo{tag}")
    asyncio.run(start_groups_at_end(settings, tag))
    procs = [start_service("consumers.presence", env, "presence")]
    procs += [
        start_service("consumers.dispatcher", env, f"dispatcher-{i}")
        for i in range(args.dispatchers)
    ]
    try:
        print(asyncio.run(morning(args, settings, tag)))
        url = f"http://{settings.gateway.host}:{settings.gateway.port}"
        print(
            "\nTry it yourself: `make serve` starts the stack, the services and the gateway;"
            f"\nthen open {url}/worker and {url}/kiosk, or post"
            " from a terminal with the station key it prints:"
            "\n  .venv/bin/gig-kiosk post --market G4301001 --key KEY --skill general_labourer"
        )
    finally:
        for proc in procs:
            proc.send_signal(2)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if not (had_broker or args.keep_stack):
            stack.down(Settings())


if __name__ == "__main__":
    main()
