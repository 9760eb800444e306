"""Client factories: Redis, the key scheme, Kafka's producer and group consumer, the policy.

Only composition roots (the services, the gateway, benchmarks, tests) call these, at startup;
nothing connects at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis, RedisCluster

from dispatch.model import Policy
from infra.health import Health
from infra.joining import close, join_group, start_producer
from infra.kafka import make_consumer, make_producer
from infra.keys import Keys
from infra.publish import Publisher
from infra.redis_nodes import AnyRedis, ClusterNodes, PackedConnection, nodes_of
from infra.settings import PolicySettings, Settings


def policy_from(p: PolicySettings) -> Policy:
    return Policy(
        name=p.name,
        offer_ttl_ms=int(p.offer_ttl_s * 1000),
        radii_km=p.radii_km,
        over_offer=p.over_offer,
        search_count=p.search_count,
        retry_idle_ms=int(p.retry_idle_s * 1000),
    )


def redis_client(settings: Settings) -> Redis:
    """A client of the one Redis ``redis_url`` names."""
    if settings.redis_cluster:
        raise ValueError(
            "the gateway's live views need one Redis; on a Redis Cluster stack "
            "(GIG_REDIS_CLUSTER=true) only the dispatcher and presence run"
        )
    # No per-reply socket timeout: the adapters bound each round trip instead (see
    # infra.redis_nodes.ROUND_TRIP_TIMEOUT_S), which is much cheaper per command.
    return Redis.from_url(
        settings.redis_url,
        max_connections=64,
        connection_class=PackedConnection,
        **_REDIS_OPTIONS,
    )


_REDIS_OPTIONS: dict[str, Any] = {
    "decode_responses": True,
    "socket_timeout": None,
    "socket_connect_timeout": 5.0,
    "socket_keepalive": True,
}


def store_client(settings: Settings) -> AnyRedis:
    """A client of the dispatch store: one Redis, or a Redis Cluster (``redis_cluster``)."""
    if settings.redis_cluster:
        return RedisCluster.from_url(settings.redis_url, **_REDIS_OPTIONS)
    return redis_client(settings)


@contextlib.asynccontextmanager
async def redis_session(settings: Settings) -> AsyncIterator[AnyRedis]:
    """A store client that is closed however the block ends (stopped, failed or done)."""
    redis = store_client(settings)
    try:
        yield redis
    finally:
        await close_store(redis)


async def close_store(redis: AnyRedis) -> None:
    """Close a store client, and the per-node clients its batches opened on a cluster."""
    nodes = nodes_of(redis)
    if isinstance(nodes, ClusterNodes):
        await nodes.aclose()
    await redis.aclose()


def keys_for(settings: Settings) -> Keys:
    return Keys(settings.key_prefix, settings.worker_buckets)


@contextlib.asynccontextmanager
async def kafka_clients(
    settings: Settings,
    group: str,
    *topics: str,
    stop: asyncio.Event,
    health: Health | None = None,
) -> AsyncIterator[tuple[Any, Publisher]]:
    """A producer and a consumer that joined ``group``, each start bounded by
    ``kafka.join_timeout_s`` and retried; ``Stopped`` if ``stop`` comes first."""
    kafka = settings.kafka_slice()
    producer = await start_producer(
        lambda: make_producer(kafka), stop, timeout_s=kafka.join_timeout_s, health=health
    )
    try:
        consumer = await join_group(
            lambda: make_consumer(kafka, *topics, group_id=group),
            stop,
            group=group,
            timeout_s=kafka.join_timeout_s,
            health=health,
        )
    except BaseException:
        await close(producer)
        raise
    try:
        yield consumer, Publisher(producer)
    finally:
        await close(consumer)
        await close(producer)
