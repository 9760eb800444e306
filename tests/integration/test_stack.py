"""The embedded stack and the database: up, topics with partitions, schema, registry, down."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer

from infra import pg, stack
from infra.settings import Settings
from schemas.topics import ALL_TOPICS
from tests.conftest import TEST_DSN, TEST_REDIS

pytestmark = pytest.mark.integration


def test_up_creates_topics_and_registry_and_down_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the stack keeps its state in ./.stack
    settings = Settings(redis_url=TEST_REDIS, pg_dsn=TEST_DSN, _env_file=None)
    bootstrap = stack.up(settings)
    host, port = bootstrap.rsplit(":", 1)
    pid = int((tmp_path / ".stack" / "tansu.pid").read_text())
    try:
        assert (tmp_path / ".stack" / "env").read_text() == f"GIG_KAFKA_BOOTSTRAP={bootstrap}\n"
        assert stack.up(settings) == bootstrap  # a second up reuses the running broker
        partitions = asyncio.run(_partitions(bootstrap))
        assert {t: partitions[t] for t in ALL_TOPICS} == {
            t: settings.kafka.partitions for t in ALL_TOPICS
        }
    finally:
        stack.down()
    assert not stack.answers(host, int(port))
    assert stack._gone(pid)
    assert not (tmp_path / ".stack" / "env").exists()


async def _partitions(bootstrap: str) -> dict[str, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        return {t: len(consumer.partitions_for_topic(t) or ()) for t in await consumer.topics()}
    finally:
        await consumer.stop()


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
