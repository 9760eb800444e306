"""Batches on a real Redis Cluster (three primaries, three replicas): one pipeline per node,
replies in the order placed, scripts that a node forgot loaded again, and writes that must
survive a failover refused while a node has no replica to confirm them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from infra.clients import redis_session
from infra.keys import Keys
from infra.redis_cluster import Cluster, free_base
from infra.redis_index import RedisWorkerIndex
from infra.redis_nodes import AnyRedis, StoreUnavailable, nodes_of
from infra.settings import Settings

pytestmark = pytest.mark.integration


async def client_of(cluster: Cluster) -> AsyncIterator[AnyRedis]:
    settings = Settings(redis_url=cluster.url, redis_cluster=True, _env_file=None)
    async with redis_session(settings) as redis:
        yield redis


@pytest.fixture
async def shared(redis_cluster: Cluster) -> AsyncIterator[AnyRedis]:
    async for redis in client_of(redis_cluster):
        yield redis


async def test_a_batch_goes_one_pipeline_per_primary_and_replies_in_order(
    shared: AnyRedis, redis_prefix: str
) -> None:
    keys = [f"{redis_prefix}:k:{{{i}}}" for i in range(60)]
    batch = await nodes_of(shared).batch()
    for i, key in enumerate(keys):
        batch.on(key).set(key, i)
    for key in keys:
        batch.on(key).get(key)
    replies = await batch.execute()
    assert len(batch.pipes) == 3  # sixty slots spread over the three primaries
    assert replies[60:] == [str(i) for i in range(60)]


async def test_a_node_that_forgot_its_scripts_gets_them_again(
    shared: AnyRedis, redis_prefix: str, redis_cluster: Cluster
) -> None:
    index = RedisWorkerIndex(shared, Keys(redis_prefix, 64))
    assert await index.hold([("W1", "R1")], 60_000) == [True]
    for port in redis_cluster.primaries():
        redis_cluster.cli(port, "script", "flush")  # as a restarted node or a promoted replica
    with pytest.raises(StoreUnavailable):
        await index.hold([("W2", "R1")], 60_000)
    assert await index.hold([("W2", "R1")], 60_000) == [True]  # the retry finds them loaded
    assert await index.holder("W2") == "R1"


async def test_replicated_writes_are_refused_while_a_primary_has_no_replica(
    tmp_path: Path,
) -> None:
    cluster = Cluster(free_base(), tmp_path)
    try:
        cluster.start()
        async for redis in client_of(cluster):
            index = RedisWorkerIndex(redis, Keys("t", 64))
            key = index.keys.hold("W1")
            primary = cluster.primary_of(key)
            replica = next(p for p in cluster.ports if _replica_of(cluster, p) == primary)
            cluster.kill(replica)
            with pytest.raises(StoreUnavailable, match="no replica confirmed"):
                await index.hold([("W1", "R1")], 60_000)
            cluster.start_node(replica)
            await asyncio.to_thread(cluster.wait_ok)
            # Writes go on; the refused try's hold was never announced and lapses by itself.
            assert await index.hold([("W2", "R1")], 60_000) == [True]
            assert await index.holder("W1") == "R1"
    finally:
        cluster.stop()


def _replica_of(cluster: Cluster, port: int) -> int | None:
    """The port of the primary that the node on ``port`` replicates (None: a primary)."""
    info = cluster.cli(port, "info", "replication")
    for line in info.splitlines():
        if line.startswith("master_port:"):
            return int(line.split(":")[1])
    return None
