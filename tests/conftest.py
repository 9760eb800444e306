"""Shared fixtures. Service fixtures start an Apache Kafka node of the session's own on free
loopback ports (its topics made anew for each test) and use the Redis and PostgreSQL that
``make test`` made sure answer, under a key prefix and a database of their own."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from infra import pg
from infra.broker import KafkaCluster, private_cluster
from infra.kafka import ensure_topics
from infra.keys import Keys
from infra.redis_cluster import Cluster, free_base
from infra.settings import KafkaSettings, MetricsSettings, Settings
from schemas.topics import ALL_TOPICS

TEST_DSN = os.environ.get("GIG_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/gig_test")
TEST_REDIS = os.environ.get("GIG_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session", autouse=True)
def replay_results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Replays run by the tests keep their results in a directory of the session's own, not
    in the checkout's ``.stack/replays`` that the console shows."""
    saved = os.environ.get("GIG_REPLAY_RESULTS")
    os.environ["GIG_REPLAY_RESULTS"] = str(tmp_path_factory.mktemp("replays"))
    yield
    if saved is None:
        os.environ.pop("GIG_REPLAY_RESULTS", None)
    else:
        os.environ["GIG_REPLAY_RESULTS"] = saved


@pytest.fixture(scope="session")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """An Apache Kafka node of the test session's own, on free loopback ports."""
    with private_cluster(tmp_path_factory.mktemp("kafka")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A Redis Cluster of the test session's own (three primaries, three replicas) on free
    loopback ports."""
    cluster = Cluster(free_base(), tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def broker(kafka_cluster: KafkaCluster) -> str:
    """The session's bootstrap address."""
    return kafka_cluster.bootstrap


@pytest.fixture(scope="session")
async def base_settings(broker: str) -> Settings:
    """Settings for the real services, with topics, schema and registry in place. A test's
    topics are new, so its consumer groups read them from the start."""
    settings = Settings(
        kafka_bootstrap=broker,
        redis_url=TEST_REDIS,
        pg_dsn=TEST_DSN,
        key_prefix=f"t{uuid.uuid4().hex[:8]}",
        # No health and metrics endpoints unless a test asks (tests/integration/test_metrics.py).
        metrics=MetricsSettings(dispatcher_port=0, presence_port=0, archiver_port=0),
        _env_file=None,
    )
    settings = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"new_group_start": "earliest"})}
    )
    await ensure_topics(settings.kafka_slice())
    await pg.prepare(settings.pg_dsn)
    return settings


@pytest.fixture
async def settings(base_settings: Settings) -> AsyncIterator[Settings]:
    """Per-test settings: the project's topics deleted and created anew, so consumers reading
    from the start see only this test's messages; a fresh Redis key prefix and groups."""
    tag = uuid.uuid4().hex[:8]
    await recreate_topics(base_settings.kafka_slice())
    s = base_settings.model_copy(
        update={
            "key_prefix": f"{base_settings.key_prefix}{tag}",
            "dispatcher_group": f"dispatcher-{tag}",
            "presence_group": f"presence-{tag}",
        }
    )
    yield s
    redis = Redis.from_url(s.redis_url, decode_responses=True)
    keys = [k async for k in redis.scan_iter(match=f"{s.key_prefix}:*", count=5000)]
    for i in range(0, len(keys), 1000):
        await redis.delete(*keys[i : i + 1000])
    await redis.aclose()


async def recreate_topics(kafka: KafkaSettings, topics: tuple[str, ...] = ALL_TOPICS) -> None:
    """Delete the topics and create them again, empty, once every partition has a leader."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        existing = [t for t in topics if t in set(await admin.list_topics())]
        deadline = time.monotonic() + 30
        if existing:
            await admin.delete_topics(existing)
        while set(existing) & set(await admin.list_topics()):
            if time.monotonic() > deadline:
                raise AssertionError("deleted topics still listed after 30 s")
            await asyncio.sleep(0.05)
        # Deletion completes in the background: creating a name still being deleted fails.
        while not await _all_led(admin, topics):
            if time.monotonic() > deadline:
                raise AssertionError("recreated topics got no partition leaders in 30 s")
            with contextlib.suppress(KafkaError):
                await ensure_topics(kafka, topics)
            await asyncio.sleep(0.05)
    finally:
        await admin.close()


async def _all_led(admin: AIOKafkaAdminClient, topics: tuple[str, ...]) -> bool:
    if set(topics) - set(await admin.list_topics()):
        return False
    described = await admin.describe_topics(list(topics))
    return all(
        t["error_code"] == 0 and t["partitions"] and all(p["leader"] >= 0 for p in t["partitions"])
        for t in described
    )


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A Redis key prefix of the test's own, its keys deleted afterwards (no broker needed)."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    yield prefix
    client = SyncRedis.from_url(TEST_REDIS)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=5000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
def keys(settings: Settings) -> Keys:
    return Keys(settings.key_prefix, settings.worker_buckets)


Service = Callable[[Settings, asyncio.Event], Coroutine[Any, Any, None]]


@contextlib.asynccontextmanager
async def running(*services: tuple[Service, Settings]) -> AsyncIterator[list[asyncio.Event]]:
    """Run services as tasks; stop them (and surface their errors) on exit."""
    stops = [asyncio.Event() for _ in services]
    tasks = [
        asyncio.create_task(fn(s, stop)) for (fn, s), stop in zip(services, stops, strict=True)
    ]
    try:
        yield stops
    finally:
        for stop in stops:
            stop.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]


async def eventually(
    check: Callable[[], Awaitable[bool]],
    timeout_s: float = 30.0,
    what: str | Callable[[], str] = "condition",
) -> None:
    """Wait until ``check`` holds (polling), failing with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            said = what if isinstance(what, str) else what()
            raise AssertionError(f"timed out waiting for {said}")
        await asyncio.sleep(0.1)


@pytest.fixture
async def archived(settings: Settings) -> AsyncIterator[Settings]:
    """Per-test settings whose PostgreSQL database is a fresh, empty event store."""
    base = settings.pg_dsn.rsplit("/", 1)[0]
    name = f"gig_test_archive_{uuid.uuid4().hex[:8]}"
    await pg.prepare(f"{base}/{name}")
    try:
        yield settings.model_copy(update={"pg_dsn": f"{base}/{name}"})
    finally:
        admin = await asyncpg.connect(f"{base}/postgres")
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
