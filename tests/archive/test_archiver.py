"""The archiver keeps exactly one row per Kafka record, even when it dies mid-stream."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import asyncpg
import pytest

from archive import archiver, records
from archive.store import PgEventStore
from infra.kafka import ensure_topics
from infra.publish import Outgoing
from infra.settings import Settings
from schemas import events as ev
from tests.conftest import eventually
from tests.integration.helpers import publisher

pytestmark = pytest.mark.integration
RECORDS = 1200


class Killed(BaseException):
    """The archiver dies after storing a batch and before committing its offsets (the process
    is killed: not an error the consumer loop would retry)."""


async def test_killed_mid_stream_and_restarted_keeps_one_row_per_record(
    archived: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = f"test.archive.{uuid.uuid4().hex[:8]}"
    s = archived.model_copy(update={"kafka": archived.kafka.model_copy(update={"max_batch": 50})})
    await ensure_topics(s.kafka_slice(), (topic,))
    async with publisher(s) as pub:
        await pub.publish([_record(topic, i) for i in range(RECORDS)])
        await pub.producer.send_and_wait(topic, b"{not json", key=b"bad")
        await pub.producer.send_and_wait(topic, b'{"type": "WorkerCheckedIn"}', key=b"bad")
    total = RECORDS + 2

    real_append, calls = PgEventStore.append, {"n": 0}

    async def dying_append(self: PgEventStore, *args: Any, **kw: Any) -> int:
        new = await real_append(self, *args, **kw)
        calls["n"] += 1
        if calls["n"] == 4:
            raise Killed("archiver killed after writing, before committing")
        return new

    monkeypatch.setitem(records.ADAPTERS, topic, ev.WORKER_EVENT)  # validated as worker events
    monkeypatch.setattr(PgEventStore, "append", dying_append)
    stop = asyncio.Event()
    first = asyncio.create_task(archiver.run_archiver(s, stop, group=f"g-{topic}", topics=(topic,)))
    with pytest.raises(Killed):
        await asyncio.wait_for(first, 30)
    assert 0 < await _rows(s, topic) < total

    monkeypatch.setattr(PgEventStore, "append", real_append)
    second = asyncio.create_task(
        archiver.run_archiver(s, stop, group=f"g-{topic}", topics=(topic,))
    )
    try:
        await eventually(lambda: _all_in(s, topic, total), 30, "every record archived")
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await second
    conn = await asyncpg.connect(s.pg_dsn)
    try:
        n, distinct, bad = await conn.fetchrow(
            "SELECT count(*), count(DISTINCT (part, kafka_offset)), count(error) "
            "FROM event_log WHERE topic = $1",
            topic,
        )
        lag = await conn.fetchval("SELECT sum(lag) FROM archive_progress WHERE topic = $1", topic)
    finally:
        await conn.close()
    assert (n, distinct, bad) == (total, total, 2)
    assert lag == 0


def _record(topic: str, i: int) -> Outgoing:
    msg = ev.WorkerLocated(
        event_id=f"wl:{i}", at_ms=1_790_000_000_000 + i, worker_id=f"w{i % 37}", lon=112.9, lat=28.2
    )
    return Outgoing(topic, msg.worker_id, msg)


async def _rows(s: Settings, topic: str) -> int:
    conn = await asyncpg.connect(s.pg_dsn)
    try:
        n: int = await conn.fetchval("SELECT count(*) FROM event_log WHERE topic = $1", topic)
        return n
    finally:
        await conn.close()


async def _all_in(s: Settings, topic: str, total: int) -> bool:
    return await _rows(s, topic) >= total
