"""Redis housekeeping for the benchmarks: a key prefix of their own, memory, clean-up.

The benchmarks share Redis with whatever else runs there, so they only ever touch keys under
their own prefix and delete them afterwards (never ``FLUSHALL``).
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

from bench.population import Province, check_ins, chunked
from infra.ports import Presence
from infra.redis_index import RedisWorkerIndex

SCAN_COUNT = 5000


async def keys_under(redis: Redis, prefix: str) -> list[str]:
    """Every key under ``prefix:``."""
    return [k async for k in redis.scan_iter(match=f"{prefix}:*", count=SCAN_COUNT)]


async def delete_prefix(redis: Redis, prefix: str) -> int:
    """Delete every key under ``prefix:``; return how many there were."""
    keys = await keys_under(redis, prefix)
    for part in chunked(keys, 1000):
        await redis.unlink(*part)
    return len(keys)


async def memory_usage(redis: Redis, prefix: str) -> dict[str, int]:
    """Bytes of the keys under the prefix by kind (``geo``, ``wr``, …) and ``total``, from
    ``MEMORY USAGE key SAMPLES 0`` (every element counted)."""
    usage: dict[str, int] = {"total": 0}
    for part in chunked(await keys_under(redis, prefix), 1000):
        pipe = redis.pipeline(transaction=False)
        for key in part:
            pipe.memory_usage(key, samples=0)
        for key, n in zip(part, await pipe.execute(), strict=True):
            kind = key[len(prefix) + 1 :].split(":", 1)[0]
            usage[kind] = usage.get(kind, 0) + (n or 0)
            usage["total"] += n or 0
    return usage


async def used_memory(redis: Redis) -> int:
    """The server's ``used_memory`` (affected by everything else running on it)."""
    info = await redis.info("memory")
    return int(info["used_memory"])


async def index_workers(
    index: RedisWorkerIndex, province: Province, count: int, batch: int, progress: bool = True
) -> float:
    """Check ``count`` workers in through ``RedisWorkerIndex.apply``; return events/s."""
    changes: list[Presence] = list(check_ins(province, count))
    started = time.perf_counter()
    done = 0
    for part in chunked(changes, batch):
        await index.apply(part)
        done += len(part)
        if progress and done % max(batch, count // 5) < batch:
            print(f"    indexed {done:,} / {count:,} workers", flush=True)
    return count / (time.perf_counter() - started)
