"""The embedded stack and the database: Apache Kafka, Redis and PostgreSQL up, topics with
partitions, schema, registry, standard Kafka tooling, down."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from pathlib import Path

import asyncpg
import pytest
from aiokafka import TopicPartition
from redis import Redis

from infra import pg, stack
from infra.broker import _free_ports
from infra.kafka import make_consumer
from infra.settings import Settings
from schemas.topics import ALL_TOPICS, REQUEST_STATE
from tests.conftest import TEST_DSN

pytestmark = pytest.mark.integration


def test_up_starts_kafka_and_redis_on_the_configured_ports_and_down_stops_them(
    tmp_path: Path,
) -> None:
    kafka_port, redis_port = _free_ports(2), _free_ports(1)
    settings = Settings(
        kafka_bootstrap=f"127.0.0.1:{kafka_port}",
        redis_url=f"redis://127.0.0.1:{redis_port}/0",
        pg_dsn=TEST_DSN,
        _env_file=None,
    )
    bootstrap = stack.up(settings, root=tmp_path)
    try:
        assert bootstrap == f"127.0.0.1:{kafka_port}"
        assert (tmp_path / "env").read_text() == f"GIG_KAFKA_BOOTSTRAP={bootstrap}\n"
        assert stack.up(settings, root=tmp_path) == bootstrap  # a second up reuses them
        partitions, compaction = asyncio.run(_topics(bootstrap))
        assert partitions == {t: settings.kafka.partitions for t in ALL_TOPICS}
        assert compaction == "compact,delete"
        redis = Redis(port=redis_port)
        assert redis.config_get("appendonly") == {"appendonly": "yes"}
        assert redis.config_get("appendfsync") == {"appendfsync": "everysec"}
        assert redis.config_get("dir")["dir"] == str(tmp_path / f"redis-{redis_port}")
        redis.close()
        assert list((tmp_path / "kafka-1" / "node-1" / "data").iterdir())  # the log is on disk
    finally:
        stack.down(settings, root=tmp_path)
    assert not stack.answers("127.0.0.1", kafka_port)
    assert not stack.answers("127.0.0.1", redis_port)
    assert not (tmp_path / "env").exists()


async def _topics(bootstrap: str) -> tuple[dict[str, int], str]:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if t.startswith("gig.")]
        partitions = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(topics)}
        described = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, REQUEST_STATE)]
        )
        entries = {e[0]: e[1] for e in described[0].resources[0][4]}
        return partitions, entries["cleanup.policy"]
    finally:
        await admin.close()


def _kcat_round_trip(bootstrap: str, topic: str) -> None:
    """kcat, with its default settings, writes a record and reads it back."""
    line = f"probe-{uuid.uuid4().hex[:6]}"
    produce = ["kcat", "-b", bootstrap, "-P", "-t", topic, "-k", "probe"]
    subprocess.run(produce, input=line.encode(), check=True, timeout=30)
    consume = ["kcat", "-b", bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q"]
    out = subprocess.run(consume, capture_output=True, check=True, timeout=30).stdout
    assert line.encode() in out, topic


async def test_kcat_talks_to_every_topic_and_the_groups_tool_shows_lag(settings: Settings) -> None:
    assert shutil.which("kcat"), "kcat is missing: make system-deps installs it"
    for topic in ALL_TOPICS:
        await asyncio.to_thread(_kcat_round_trip, settings.kafka_bootstrap, topic)
    # A group that has read nothing of a topic with one record has lag 1 where it sits.
    group = f"lag-probe-{uuid.uuid4().hex[:6]}"
    consumer = make_consumer(settings.kafka_slice(), group_id=group)
    await consumer.start()
    try:
        parts = [TopicPartition(ALL_TOPICS[0], p) for p in range(settings.kafka.partitions)]
        consumer.assign(parts)
        await consumer.commit({tp: 0 for tp in parts})
    finally:
        await consumer.stop()
    table = await asyncio.to_thread(stack.groups, settings, group)
    rows = [line.split() for line in table.splitlines() if line.startswith(group)]
    assert len(rows) == settings.kafka.partitions
    header = next(line.split() for line in table.splitlines() if "LAG" in line)
    lags = [int(row[header.index("LAG")]) for row in rows]
    assert sum(lags) == 1


async def test_migrations_apply_once_and_the_registry_is_complete(base_settings: Settings) -> None:
    conn = await asyncpg.connect(base_settings.pg_dsn)
    try:
        assert await pg.migrate(conn) == []  # already applied by the session fixture
        versions = [r["version"] for r in await conn.fetch(pg.q("applied_migrations"))]
        assert versions == [v for v, _, _ in pg.migrations()]
        assert await pg.load_registry(conn) == 5095  # reloading is an upsert
        counts = {r["kind"]: r["n"] for r in await conn.fetch(pg.q("count_markets"))}
        assert counts == {"gig": 486, "micro": 4609}
    finally:
        await conn.close()
    places = await pg.market_places(base_settings.pg_dsn)
    assert places["G4301001"] == pytest.approx((113.26145, 28.20326))
