"""How long rebuilding the Redis cache from the log takes (``infra.rebuild``).

On a private Kafka node, the benchmark publishes ``WorkerCheckedIn`` events for the workers
(placed as ``bench.population`` places them) and ``RequestStateSaved`` records for a set of
offering requests (each with an offer out, every fourth with a worker assigned), then times
the two parts of a rebuild into an empty key prefix of its own: the worker index (read the
worker-events topic, fold it with ``RedisWorkerIndex.apply``) and the request store (read the
compacted request-state topic, write states, holds and timers). Its keys are deleted after.

``python -m bench.rebuild --workers 100000 1000000 --requests 10000``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from bench.population import Province, check_ins, jobs
from bench.redisutil import delete_prefix
from consumers.services import presence_batch
from dispatch.model import Offer, OfferStatus, RequestState, RequestStatus
from infra.broker import private_cluster
from infra.clients import redis_client
from infra.kafka import ensure_topics
from infra.keys import Keys
from infra.ports import Presence
from infra.rebuild import Lease, Rebuilder
from infra.redis_index import RedisWorkerIndex
from infra.settings import Settings
from infra.state_codec import dump_state
from schemas import events as ev
from schemas.topics import REQUEST_STATE, WORKER_EVENTS

SEND_CHUNK = 20_000


def worker_events(province: Province, count: int, now_ms: int) -> Iterable[tuple[str, bytes]]:
    for p in check_ins(province, count):
        msg = ev.WorkerCheckedIn(
            event_id=f"ci:{p.worker_id}",
            at_ms=now_ms,
            worker_id=p.worker_id,
            lon=p.lon,
            lat=p.lat,
            skills=p.skills,
        )
        yield p.worker_id, msg.model_dump_json().encode()


def request_states(
    province: Province, count: int, workers: int, now_ms: int
) -> Iterable[tuple[str, bytes]]:
    """Offering requests, each with an offer out to a worker, every fourth one assigned."""
    tag = uuid.uuid4().hex[:6]  # request ids of this run's own, should the broker be reused
    for n, job in enumerate(jobs(province, count, tag, now_ms, seed=3)):
        wid = f"W{(n * 7919) % workers:07d}"
        status = OfferStatus.ACCEPTED if n % 4 == 0 else OfferStatus.MADE
        # Open as long as the request, so the holds are still live when the rebuild gets to them.
        offer = Offer(f"o{n}", wid, status, 1, 1.0, 1.0, now_ms, job.deadline_at_ms)
        state = RequestState(job, RequestStatus.OFFERING, wave=1, offers=(offer,))
        msg = ev.RequestStateSaved(
            request_id=job.request_id, version=2, at_ms=now_ms, state=dump_state(state)
        )
        yield job.request_id, msg.model_dump_json().encode()


async def publish(bootstrap: str, topic: str, records: Iterable[tuple[str, bytes]]) -> int:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024, acks=1
    )
    await producer.start()
    sent, pending = 0, []
    try:
        for key, value in records:
            pending.append(await producer.send(topic, value, key=key.encode()))
            if len(pending) >= SEND_CHUNK:
                await asyncio.gather(*pending)
                sent, pending = sent + len(pending), []
        await asyncio.gather(*pending)
        return sent + len(pending)
    finally:
        await producer.stop()


class _NoLock(Lease):
    """The benchmark rebuilds alone: nothing to refresh."""

    def __init__(self) -> None:
        super().__init__(self._always)

    async def _always(self) -> bool:
        return True


async def measure(
    settings: Settings, workers: int, requests: int, province: Province | None = None
) -> dict[str, Any]:
    """Publish the log for ``workers`` and ``requests``, rebuild both parts into an empty
    prefix, and return the figures."""
    province = province or Province.load()
    now = int(time.time() * 1000)
    kafka = settings.kafka_slice()
    await ensure_topics(kafka, (WORKER_EVENTS, REQUEST_STATE))
    await publish(kafka.bootstrap, WORKER_EVENTS, worker_events(province, workers, now))
    await publish(kafka.bootstrap, REQUEST_STATE, request_states(province, requests, workers, now))
    prefix = f"bench-rb-{uuid.uuid4().hex[:6]}"
    redis = redis_client(settings)
    keys = Keys(prefix, settings.worker_buckets)
    try:
        events = [0]  # the worker events the log held (a reused broker holds earlier runs')

        def presence_of(records: Sequence[Any]) -> list[Presence]:
            events[0] += len(records)
            return presence_batch(records, {})[0]

        rebuilder = Rebuilder(redis, keys, kafka, presence_of)
        started = time.perf_counter()
        await rebuilder.workers(_NoLock())
        workers_s = time.perf_counter() - started
        started = time.perf_counter()
        await rebuilder.requests(_NoLock())
        requests_s = time.perf_counter() - started
        available = await RedisWorkerIndex(redis, keys).available()
    finally:
        await delete_prefix(redis, prefix)
        await redis.aclose()
    return {
        "workers": workers,
        "worker_events": events[0],
        "worker_index_s": round(workers_s, 2),
        "worker_events_per_s": round(events[0] / workers_s),
        "available_after": available,  # the workers less those held or assigned
        "requests": requests,
        "request_store_s": round(requests_s, 2),
        "request_states_per_s": round(requests / requests_s),
    }


async def run(
    sizes: Sequence[int], requests: int, redis_url: str, bootstrap: str | None = None
) -> list[dict[str, Any]]:
    """One rebuild per worker count, each on a log of its own (a fresh Kafka node, or the
    given broker's topics as they are plus what is published)."""
    province = Province.load()
    out = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-rebuild-") as tmp:
            if bootstrap is None:
                with private_cluster(Path(tmp)) as cluster:
                    s = Settings(
                        kafka_bootstrap=cluster.bootstrap, redis_url=redis_url, _env_file=None
                    )
                    out.append(await measure(s, n, requests, province))
            else:
                s = Settings(kafka_bootstrap=bootstrap, redis_url=redis_url, _env_file=None)
                out.append(await measure(s, n, requests, province))
        print(json.dumps(out[-1]), flush=True)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.rebuild", description=__doc__)
    p.add_argument("--workers", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--bootstrap", help="use this broker instead of a private Kafka node")
    a = p.parse_args(argv)
    asyncio.run(run(a.workers, a.requests, a.redis_url, a.bootstrap))


if __name__ == "__main__":
    main()
