"""A morning run live (Tansu, Redis, PostgreSQL), archived, then replayed.

Replayed exactly, from the archive and from Kafka, the decisions are identical; replayed under
batch assignment they differ, and the report shows how. Neither replay touches a live key or
topic.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.asyncio import Redis

from archive.archiver import run_archiver
from archive.records import ARCHIVED_TOPICS
from consumers.services import run_dispatcher, run_presence
from infra.clock import now_ms
from infra.kafka import partitions
from infra.keys import Keys
from infra.markets import load_markets
from infra.redis_index import RedisWorkerIndex
from infra.settings import PolicySettings, Settings
from producers.workers import Behaviour
from replay import cli, runner
from replay import outcomes as oc
from replay.recording import Window, from_kafka, from_store
from tests.conftest import eventually, running
from tests.integration.helpers import answering, checkin, hire, publisher

pytestmark = pytest.mark.integration
MARKET, LON, LAT = "G4301001", 113.26145, 28.20326
TERMINAL = ("RequestFilled", "RequestExpired", "RequestCancelled")


async def test_live_morning_replays_identically_and_differs_under_batch(
    archived: Settings, redis: Redis, tmp_path: Path
) -> None:
    s = archived.model_copy(
        update={"policy": PolicySettings(offer_ttl_s=1.5, retry_idle_s=0.5, radii_km=(3.0, 6.0))}
    )
    tag = uuid.uuid4().hex[:6]
    workers = {
        f"{tag}w{i:02d}": (LON + (i % 6 - 2.5) * 0.006, LAT + (i // 6 - 2) * 0.005)
        for i in range(30)
    }
    rids = [f"{tag}-R{i:02d}" for i in range(12)]
    start = now_ms()
    archiver = functools.partial(run_archiver, group=f"archiver-{tag}")
    async with running((archiver, s)):
        async with running((run_presence, s), (run_dispatcher, s)), publisher(s) as pub:
            await pub.publish([checkin(w, x, y) for w, (x, y) in workers.items()])
            index = RedisWorkerIndex(redis, Keys(s.key_prefix, s.worker_buckets))
            await eventually(lambda: _indexed(index, len(workers)), what="workers indexed")
            some = Behaviour(accept=0.6, silent=0.15, min_delay_ms=100, max_delay_ms=700)
            async with answering(s, pub, some, seed=3):
                for burst in range(3):  # bursts: requests compete for the same workers
                    await pub.publish(
                        [
                            hire(r, MARKET, headcount=1 + i % 3, deadline_s=5.0)
                            for i, r in enumerate(rids[burst * 4 : (burst + 1) * 4])
                        ]
                    )
                    await asyncio.sleep(0.4)
                await eventually(lambda: _ended(s, rids), 40, "every request to end")
        end = now_ms()
        await eventually(lambda: _settled(s, start), 30, "the archive to catch up")

    live_keys, live_offsets = await _keys(redis, s.key_prefix), await _offsets(s)
    window = Window(start, end, start)
    recorded = await from_store(s.pg_dsn, window)
    assert len(recorded.requests) == len(rids) and recorded.journal

    exact = await runner.replay_journal(recorded)
    same = runner.compare(recorded.decisions(), exact.decisions)
    assert same.identical, same.only_recorded[:3] + same.only_replayed[:3]
    assert same.recorded > len(rids) * 3

    from_log = await from_kafka(s, window)
    assert runner.compare(
        from_log.decisions(), (await runner.replay_journal(from_log)).decisions
    ).identical

    places = {m.market_id: (m.lon, m.lat) for m in load_markets()}
    policy = replace(runner.recorded_policy(recorded), name="batch")
    batch = await runner.simulate(recorded, policy, runner.learned_responses(recorded), places)
    assert not runner.compare(recorded.decisions(), batch.decisions).identical
    was = oc.outcomes(recorded.requests, recorded.decisions(), lambda _: "all")[-1]
    now = oc.outcomes(recorded.requests, batch.decisions, lambda _: "all")[-1]
    assert now.first_offer_p50_s > was.first_offer_p50_s  # batch waits for its window

    args = cli.parser().parse_args(
        [
            "run",
            "--from",
            str(start),
            "--to",
            str(end),
            "--lookback-h",
            "0",
            "--policy",
            "recorded",
            "--policy",
            "batch",
            "--plot",
            str(tmp_path / "run.png"),
            "--csv",
            str(tmp_path / "run.csv"),
        ]
    )
    text = await cli.run(args, s)
    assert "reproduced identically" in text and "replay: batch" in text
    assert (tmp_path / "run.png").stat().st_size > 10_000
    told = await cli.timeline(cli.parser().parse_args(["timeline", "--request", rids[0]]), s)
    assert "wave 1 within 3 km" in told and "candidates considered" in told

    assert await _keys(redis, s.key_prefix) == live_keys
    assert await _offsets(s) == live_offsets


async def _indexed(index: RedisWorkerIndex, n: int) -> bool:
    return await index.available() >= n


async def _ended(s: Settings, rids: list[str]) -> bool:
    conn = await asyncpg.connect(s.pg_dsn)
    try:
        n = await conn.fetchval(
            "SELECT count(DISTINCT request_id) FROM event_log "
            "WHERE request_id = ANY($1) AND type = ANY($2)",
            rids,
            TERMINAL,
        )
    finally:
        await conn.close()
    return bool(n == len(rids))


_last: dict[str, int] = {}


async def _settled(s: Settings, start: int) -> bool:
    """The archive stopped growing (the live services are stopped)."""
    conn = await asyncpg.connect(s.pg_dsn)
    try:
        n = await conn.fetchval("SELECT count(*) FROM event_log WHERE kafka_ts_ms >= $1", start)
    finally:
        await conn.close()
    before, _last[s.pg_dsn] = _last.get(s.pg_dsn), n
    await asyncio.sleep(1.0)
    return before == n


async def _keys(redis: Redis, prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
        out[key] = await redis.dump(key)
    return out


async def _offsets(s: Settings) -> dict[TopicPartition, int]:
    parts = await partitions(s.kafka_bootstrap, ARCHIVED_TOPICS)
    consumer = AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap)
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(parts))
    finally:
        await consumer.stop()
