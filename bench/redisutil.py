"""Redis housekeeping for the benchmarks: a key prefix of their own, memory, clean-up.

The benchmarks share Redis with whatever else runs there, so they only ever touch keys under
their own prefix and delete them afterwards (never ``FLUSHALL``). Each helper takes one Redis
or a Redis Cluster; on a cluster it works on every primary (a key lives on exactly one).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

from redis.asyncio import Redis, RedisCluster

from bench.population import Province, check_ins, chunked
from infra.ports import Presence
from infra.redis_index import RedisWorkerIndex
from infra.redis_nodes import AnyRedis

SCAN_COUNT = 5000


@contextlib.asynccontextmanager
async def primaries(redis: AnyRedis) -> AsyncIterator[list[Redis]]:
    """A client per primary: the one Redis itself, or a plain client for each primary of a
    cluster (closed when the block ends)."""
    if not isinstance(redis, RedisCluster):
        yield [redis]
        return
    await redis.initialize()
    clients = [
        Redis(host=n.host, port=int(n.port), decode_responses=True) for n in redis.get_primaries()
    ]
    try:
        yield clients
    finally:
        for client in clients:
            await client.aclose()


async def keys_under(redis: AnyRedis, prefix: str) -> list[str]:
    """Every key under ``prefix:`` (on every primary of a cluster)."""
    async with primaries(redis) as nodes:
        return [k for node in nodes for k in await _keys_on(node, prefix)]


async def _keys_on(node: Redis, prefix: str) -> list[str]:
    return [k async for k in node.scan_iter(match=f"{prefix}:*", count=SCAN_COUNT)]


async def delete_prefix(redis: AnyRedis, prefix: str) -> int:
    """Delete every key under ``prefix:``; return how many there were."""
    deleted = 0
    async with primaries(redis) as nodes:
        for node in nodes:
            keys = await _keys_on(node, prefix)
            deleted += len(keys)
            for part in chunked(keys, 1000):
                pipe = node.pipeline(transaction=False)
                for key in part:  # one key a command: a cluster node refuses keys across slots
                    pipe.unlink(key)
                await pipe.execute()
    return deleted


async def memory_usage(redis: AnyRedis, prefix: str) -> dict[str, int]:
    """Bytes of the keys under the prefix by kind (``geo``, ``wr``, …) and ``total``, from
    ``MEMORY USAGE key SAMPLES 0`` (every element counted), summed over the primaries."""
    usage: dict[str, int] = {"total": 0}
    async with primaries(redis) as nodes:
        for node in nodes:
            for part in chunked(await _keys_on(node, prefix), 1000):
                pipe = node.pipeline(transaction=False)
                for key in part:
                    pipe.memory_usage(key, samples=0)
                for key, n in zip(part, await pipe.execute(), strict=True):
                    kind = key[len(prefix) + 1 :].split(":", 1)[0]
                    usage[kind] = usage.get(kind, 0) + (n or 0)
                    usage["total"] += n or 0
    return usage


async def used_memory(redis: AnyRedis) -> int:
    """The servers' ``used_memory``, summed over the primaries (affected by everything else
    running on them)."""
    async with primaries(redis) as nodes:
        return sum([int((await node.info("memory"))["used_memory"]) for node in nodes])


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
