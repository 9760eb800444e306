"""End to end through Kafka: kiosk request produced → dispatcher → offer consumed.

A private Apache Kafka node is started on free loopback ports;
``consumers.services.run_dispatcher`` runs in a process of its own with a fresh key prefix and
consumer group; this process produces ``HireRequested`` messages and reads ``gig.offers.v1``,
matching each ``OfferMade.request_id`` to the moment its request was sent. Latency is to the
*first* offer of each request.

- **Latency** at a steady offered load (100 and 1,000 requests/s): requests are sent at an even
  pace; p50, p99 and p99.9 over the requests that got an offer.
- **Maximum sustained throughput**: a backlog is produced as fast as possible and the
  dispatcher drains it; the rate is requests offered over the time from the first send to the
  last offer, i.e. the rate the dispatcher keeps up with when its queue never runs dry.

Nobody answers the offers. Requests in the latency phases are open for 10 s, so each costs one
decision and one expiry tick (an answered request costs a decision and an answer instead), and
workers return to the index when their request expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import signal
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.population import Province
from bench.profile import Sampler
from infra import pg
from infra.broker import private_cluster
from infra.clock import now_ms
from infra.kafka import ensure_topics, make_producer
from infra.settings import Settings
from producers.load import make_request
from schemas.topics import HIRE_REQUESTS, OFFERS

LATENCY_DEADLINE_MS = 10_000
DRAIN_DEADLINE_MS = 180_000
WARMUP_TIMEOUT_S = 60.0
QUIET_S = 3.0
# Set on Ctrl-C: the phases stop at their next step even if a library swallowed the cancel.
STOP = asyncio.Event()


def check_stop() -> None:
    if STOP.is_set():
        raise asyncio.CancelledError


DRAIN_QUIET_S = 10.0  # late requests of a big backlog widen their search and take a while


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``; 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def latency_summary(ms: Sequence[float], sent: int) -> dict[str, float]:
    return {
        "p50": round(percentile(ms, 50), 2),
        "p99": round(percentile(ms, 99), 2),
        "p999": round(percentile(ms, 99.9), 2),
        "requests": sent,
        "offered_fraction": round(len(ms) / sent, 4) if sent else 0.0,
    }


# --- requests ---------------------------------------------------------------------------------


def hire_requests(
    province: Province,
    count: int,
    tag: str,
    at_ms: int,
    deadline_ms: int,
    seed: int,
    spacing_ms: float = 0.0,
) -> list[tuple[str, bytes]]:
    """(request id, JSON) for ``count`` requests, validated by the schema; the n-th is stamped
    ``at_ms + n * spacing_ms`` (when it is due to be sent) and open for ``deadline_ms``."""
    rng = random.Random(seed)
    out = []
    for n in range(count):
        msg = make_request(rng, province.picker, n, at_ms + int(n * spacing_ms),
                           deadline_ms / 1000, f"E{tag}")  # fmt: skip
        out.append((msg.request_id, msg.model_dump_json().encode()))
    return out


# --- the offers side --------------------------------------------------------------------------


@dataclass
class OfferWatch:
    """Send times of requests and the moment their first offer was consumed (perf_counter)."""

    sent: dict[str, float] = field(default_factory=dict)
    first: dict[str, float] = field(default_factory=dict)
    last_offer_at: float = 0.0

    def take(self, value: bytes, received: float) -> None:
        if b'"OfferMade"' not in value:
            return
        rid = json.loads(value)["request_id"]
        if rid in self.sent and rid not in self.first:
            self.first[rid] = received
            self.last_offer_at = received

    def latencies_ms(self, ids: Sequence[str]) -> list[float]:
        return [(self.first[r] - self.sent[r]) * 1000 for r in ids if r in self.first]

    async def listen(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=20, max_records=5000)
            received = time.perf_counter()
            for records in batch.values():
                for r in records:
                    self.take(r.value, received)

    async def wait_for(
        self, ids: Sequence[str], timeout_s: float, quiet_s: float = QUIET_S
    ) -> None:
        """Until every id has an offer, or no offer came for ``quiet_s``, or the timeout."""
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline:
            check_stop()
            if all(r in self.first for r in ids):
                return
            quiet_since = max(self.last_offer_at, self.sent[ids[-1]])
            if time.perf_counter() - quiet_since > quiet_s:
                return
            await asyncio.sleep(0.05)


async def offers_consumer(bootstrap: str, partitions: int) -> AIOKafkaConsumer:
    """A group-less consumer on every partition of the offers topic, from the start."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=5)
    await consumer.start()
    tps = [TopicPartition(OFFERS, p) for p in range(partitions)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    return consumer


# --- the requests side ------------------------------------------------------------------------


async def send_paced(
    producer: AIOKafkaProducer, watch: OfferWatch, reqs: Sequence[tuple[str, bytes]], rate: float
) -> None:
    """Send at an even ``rate`` per second, stamping each send time."""
    started = time.perf_counter()
    for i, (rid, value) in enumerate(reqs):
        check_stop()
        wait = started + i / rate - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        watch.sent[rid] = time.perf_counter()
        await producer.send(HIRE_REQUESTS, value, key=rid.encode())


async def send_backlog(
    producer: AIOKafkaProducer, watch: OfferWatch, reqs: Sequence[tuple[str, bytes]]
) -> None:
    """Send everything as fast as the producer takes it."""
    futures = []
    for rid, value in reqs:
        check_stop()
        watch.sent[rid] = time.perf_counter()
        futures.append(await producer.send(HIRE_REQUESTS, value, key=rid.encode()))
    await asyncio.gather(*futures)


# --- the dispatcher process -------------------------------------------------------------------


def _serve_dispatcher(settings: dict[str, Any]) -> None:
    """Child process: one dispatcher until SIGTERM/SIGINT (it stops between batches)."""
    import logging

    from consumers.services import run_dispatcher

    logging.basicConfig(level=logging.WARNING)
    asyncio.run(run_dispatcher(Settings(**settings, _env_file=None)))


@contextlib.contextmanager
def dispatcher_processes(settings: Settings, count: int) -> Iterator[list[BaseProcess]]:
    """``count`` dispatcher instances in processes of their own, sharing one consumer group."""
    ctx = multiprocessing.get_context("spawn")
    procs: list[BaseProcess] = []
    try:
        for _ in range(count):
            args = (settings.model_dump(),)
            procs.append(ctx.Process(target=_serve_dispatcher, args=args, daemon=True))
            procs[-1].start()
        yield procs
    finally:
        for proc in procs:
            stop_child(proc)


def stop_child(proc: BaseProcess) -> None:
    if proc.pid is not None and proc.is_alive():
        os.kill(proc.pid, signal.SIGTERM)
        proc.join(15)
        if proc.is_alive():
            proc.kill()
            proc.join(5)


@contextlib.asynccontextmanager
async def private_broker(log_dir: Path) -> AsyncIterator[str]:
    """An Apache Kafka node of this run's own: its bootstrap address."""
    with private_cluster(log_dir / "kafka") as cluster:
        yield cluster.bootstrap


async def prepare(settings: Settings) -> None:
    await ensure_topics(settings.kafka_slice())
    await pg.prepare(settings.pg_dsn)


# --- the phases -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    rates: tuple[int, ...]
    phase_s: float
    drain_requests: int
    profile: Sampler | None = None  # samples the dispatcher from the last rate to the drain's end


async def run_phases(settings: Settings, province: Province, plan: Plan) -> dict[str, Any]:
    """Warm up, measure latency at each rate, then the drain; return the figures."""
    kafka = settings.kafka_slice()
    producer = make_producer(kafka)
    await producer.start()
    try:
        consumer = await offers_consumer(kafka.bootstrap, kafka.partitions)
    except BaseException:
        await producer.stop()
        raise
    watch, stop = OfferWatch(), asyncio.Event()
    listener = asyncio.create_task(watch.listen(consumer, stop))
    try:
        await _warm_up(producer, watch, province)
        out: dict[str, Any] = {}
        for n, rate in enumerate(plan.rates):
            if plan.profile is not None and n == len(plan.rates) - 1:
                plan.profile.start()
            out[f"latency_ms_at_{rate}_rps"] = await _latency_phase(
                producer, watch, province, rate, plan.phase_s, seed=100 + n
            )
            await asyncio.sleep(LATENCY_DEADLINE_MS / 1000)  # let the phase's requests expire
        out["drain"] = await _drain_phase(producer, watch, province, plan.drain_requests)
        if plan.profile is not None:
            plan.profile.stop()
        out["max_sustained_requests_per_s"] = out["drain"]["requests_per_s"]
        return out
    finally:
        stop.set()
        await listener
        await consumer.stop()
        await producer.stop()


async def _warm_up(producer: AIOKafkaProducer, watch: OfferWatch, province: Province) -> None:
    """Until the dispatcher's group has formed and it answers."""
    reqs = hire_requests(province, 20, "warm", now_ms(), 120_000, seed=99)
    await send_paced(producer, watch, reqs, rate=100)
    ids = [r for r, _ in reqs]
    deadline = time.perf_counter() + WARMUP_TIMEOUT_S
    while not any(r in watch.first for r in ids):
        check_stop()
        if time.perf_counter() > deadline:
            raise RuntimeError("the dispatcher made no offer within a minute of starting")
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)


async def _latency_phase(
    producer: AIOKafkaProducer,
    watch: OfferWatch,
    province: Province,
    rate: int,
    phase_s: float,
    seed: int,
) -> dict[str, float]:
    count = int(rate * phase_s)
    print(f"    latency at {rate:,} requests/s for {phase_s:.0f} s", flush=True)
    reqs = hire_requests(
        province, count, f"r{rate}", now_ms(), LATENCY_DEADLINE_MS, seed, spacing_ms=1000 / rate
    )
    await send_paced(producer, watch, reqs, rate)
    ids = [r for r, _ in reqs]
    await watch.wait_for(ids, timeout_s=30)
    return latency_summary(watch.latencies_ms(ids), count)


async def _drain_phase(
    producer: AIOKafkaProducer, watch: OfferWatch, province: Province, count: int
) -> dict[str, Any]:
    print(f"    drain of a {count:,}-request backlog", flush=True)
    reqs = hire_requests(province, count, "drain", now_ms(), DRAIN_DEADLINE_MS, seed=7)
    await send_backlog(producer, watch, reqs)
    ids = [r for r, _ in reqs]
    await watch.wait_for(ids, timeout_s=DRAIN_DEADLINE_MS / 1000, quiet_s=DRAIN_QUIET_S)
    offered = [r for r in ids if r in watch.first]
    if not offered:
        return {"requests": count, "offered": 0, "requests_per_s": 0.0, "seconds": 0.0}
    span = max(watch.first[r] for r in offered) - watch.sent[ids[0]]
    return {
        "requests": count,
        "offered": len(offered),
        "seconds": round(span, 2),
        "requests_per_s": round(len(offered) / span, 1),
    }
