"""Hostile records on every inbound topic, on the real broker, with the dispatcher, the presence
consumer and the archiver running; then valid work behind them.

What must hold: every service is still alive; every hostile record is dead-lettered exactly
once (counted by its topic, partition and offset) with a reason, in a letter of at most
16 KiB; every record is archived; the consumer groups commit past them all; nothing valid is
dead-lettered, and every valid request still gets its offers and fills. The counts go to
``bench/results/hostile.json`` and one printed summary line.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata, RecordMetadata
from redis.asyncio import Redis

from archive.archiver import run_archiver
from consumers.services import run_dispatcher, run_presence
from infra.clock import now_ms
from infra.keys import Keys
from infra.publish import Outgoing
from infra.redis_index import RedisWorkerIndex
from infra.settings import Settings
from producers.workers import Behaviour
from schemas import events as ev
from schemas.topics import (
    DEAD_LETTERS,
    HIRE_REQUESTS,
    OFFER_RESPONSES,
    REQUEST_EVENTS,
    WORKER_EVENTS,
)
from tests.conftest import Service, eventually
from tests.hostile import records
from tests.hostile.records import Hostile
from tests.integration.helpers import Tap, answering, checkin, hire, publisher, tap

pytestmark = pytest.mark.integration

PER_TOPIC = 120  # Hypothesis examples per inbound topic
LETTER_MAX_BYTES = 16 * 1024
WORKERS = 10
# ``HOSTILE_RESULTS`` names a folder (``make chaos`` sets it) for hostile.json.
RESULTS = os.environ.get("HOSTILE_RESULTS")
Position = tuple[str, int, int]


@contextlib.asynccontextmanager
async def services(
    *named: tuple[str, Service, Settings],
) -> AsyncIterator[dict[str, asyncio.Task[None]]]:
    """Run services as named tasks; stop them on exit and raise the first one's error."""
    stop = asyncio.Event()
    tasks = {name: asyncio.create_task(fn(s, stop), name=name) for name, fn, s in named}
    try:
        yield tasks
    finally:
        stop.set()
        results = await asyncio.gather(*tasks.values(), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]


async def send_raw(settings: Settings, hostile: list[Hostile]) -> list[RecordMetadata]:
    """Publish the records as they are (any bytes, any size up to the broker's limit)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, max_request_size=2 * 1024 * 1024, linger_ms=5
    )
    await producer.start()
    try:
        futures = [await producer.send(h.topic, h.value, key=h.key) for h in hostile]
        return list(await asyncio.gather(*futures))
    finally:
        await producer.stop()


def positions(hostile: list[Hostile], sent: list[RecordMetadata], refused: bool) -> set[Position]:
    """Where the records that must (or must not) be dead-lettered landed."""
    return {
        (m.topic, m.partition, m.offset)
        for h, m in zip(hostile, sent, strict=True)
        if h.refused is refused
    }


def letters(seen: Tap) -> list[tuple[bytes, ev.DeadLetter]]:
    """Every dead letter the tap read, with its size on the wire (unparsable ones fail)."""
    out = []
    for topic, raw, parsed in seen.records:
        if topic == DEAD_LETTERS:
            assert parsed is not None, f"a dead letter that is not a DeadLetter: {raw[:300]!r}"
            out.append((raw, parsed))
    return out


def by_position(seen: Tap) -> Counter[Position]:
    return Counter(
        (d.source_topic, d.partition, d.offset) for _, d in letters(seen) if d.offset >= 0
    )


def refusals_of(seen: Tap, request_id: str) -> list[ev.DeadLetter]:
    """Dead letters of core inputs (no Kafka position) for one request."""
    return [d for _, d in letters(seen) if d.offset < 0 and d.key == request_id]


def filled(seen: Tap) -> set[str]:
    return {e.request_id for e in seen.of(ev.RequestFilled)}


async def archived_positions(dsn: str) -> set[Position]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT topic, part, kafka_offset FROM event_log")
    finally:
        await conn.close()
    return {(r["topic"], r["part"], r["kafka_offset"]) for r in rows}


async def lagging(settings: Settings) -> dict[str, int]:
    """Records not yet committed past, per service group (0 everywhere once caught up)."""
    groups = {
        settings.dispatcher_group: (HIRE_REQUESTS, OFFER_RESPONSES),
        settings.presence_group: (WORKER_EVENTS,),
    }
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    ends = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    await ends.start()
    try:
        out = {}
        for group, topics in groups.items():
            parts = [TopicPartition(t, p) for t in topics for p in range(settings.kafka.partitions)]
            end = await ends.end_offsets(parts)
            committed = await admin.list_consumer_group_offsets(group)
            out[group] = sum(end[tp] - _offset(committed.get(tp)) for tp in parts)
        return out
    finally:
        await ends.stop()
        await admin.close()


def _offset(at: OffsetAndMetadata | None) -> int:
    return at.offset if at is not None and at.offset >= 0 else 0


def conflicts(now: int) -> list[Outgoing]:
    """A different request under a valid request's id, and a cancel from another market."""
    repeat = hire("R-conf", headcount=2)
    cancel = ev.HireCancelled(event_id="hc:R-conf:foreign", at_ms=now, request_id="R-conf",
                              market_id=records.OTHER_MARKET)  # fmt: skip
    return [repeat, Outgoing(HIRE_REQUESTS, "R-conf", cancel)]


async def test_hostile_records_are_dead_lettered_once_and_valid_work_goes_on(
    archived: Settings, redis: Redis
) -> None:
    settings, started = archived, time.monotonic()
    now = now_ms()
    hostile = records.catalogue(now, PER_TOPIC) + records.tolerated(now)
    index = RedisWorkerIndex(redis, Keys(settings.key_prefix, settings.worker_buckets))
    archiver = functools.partial(run_archiver, group=f"archiver-{settings.key_prefix}")
    crowd = Behaviour(accept=1.0, silent=0.0, min_delay_ms=20, max_delay_ms=200)
    valid = [hire(f"R-ok-{i}") for i in range(3)] + [hire("R-conf"), hire("R-replayed")]
    async with (
        services(
            ("dispatcher", run_dispatcher, settings),
            ("presence", run_presence, settings),
            ("archiver", archiver, settings),
        ) as tasks,
        publisher(settings) as pub,
        tap(settings, DEAD_LETTERS, REQUEST_EVENTS) as seen,
        answering(settings, pub, crowd, seed=3),
    ):
        sent = await send_raw(settings, hostile)
        # Valid work behind the hostile records: workers, requests, a replay, two conflicts.
        await pub.publish(
            [checkin(f"W-ok-{i}", records.MARKET_LON, records.MARKET_LAT) for i in range(WORKERS)]
        )
        await eventually(lambda: _available(index, WORKERS), 60, "the valid check-ins")
        await pub.publish(valid)
        await pub.publish([valid[-1]])  # the same record again, as a redelivery sends it
        await pub.publish(conflicts(now_ms()))
        refused = positions(hostile, sent, refused=True)
        rids = {o.message.request_id for o in valid}  # type: ignore[attr-defined]
        await eventually(lambda: _true(rids <= filled(seen)), 60, "every valid request filled")
        # Once the groups committed past every record, its dead letter is on the broker.
        await eventually(lambda: _caught_up(settings), 60, "groups committed past every record")
        every = {(m.topic, m.partition, m.offset) for m in sent}
        await eventually(
            lambda: _archived(settings.pg_dsn, every), 60, "every hostile record archived"
        )
        with contextlib.suppress(AssertionError):  # what is missing is reported below
            await eventually(lambda: _all_letters(seen, refused), 15, "every dead letter")
        alive = {name: not t.done() for name, t in tasks.items()}

    counts = by_position(seen)
    all_letters = letters(seen)
    missing = _missing(hostile, sent, counts.keys())
    summary = {
        "records_tried": len(hostile),
        "must_be_dead_lettered": len(refused),
        "dead_lettered": len(refused & counts.keys()),
        "dead_lettered_twice": sum(1 for p in refused if counts[p] > 1),
        "tolerated_not_dead_lettered": sum(1 for h in hostile if not h.refused),
        "core_refusals": len(refusals_of(seen, "R-conf")),
        "valid_requests_filled": f"{len(rids & filled(seen))}/{len(rids)}",
        "services_alive": f"{sum(alive.values())}/{len(alive)}",
        "largest_dead_letter_bytes": max(len(raw) for raw, _ in all_letters),
        "seconds": round(time.monotonic() - started, 1),
    }
    _report(summary)

    assert all(alive.values()), alive
    assert missing == [], f"no dead letter for {len(missing)} hostile records: {missing[:20]}"
    assert {p: n for p, n in counts.items() if n > 1} == {}, "a record dead-lettered twice"
    tolerated = positions(hostile, sent, refused=False)
    assert counts.keys() & tolerated == set(), "a tolerated record was dead-lettered"
    assert counts.keys() <= refused, "a dead letter for a record that is not hostile"
    assert all(d.reason.strip() for _, d in all_letters), "a dead letter without a reason"
    assert max(len(raw) for raw, _ in all_letters) <= LETTER_MAX_BYTES
    # The conflicting repeat and the foreign cancel: refused by the core, one letter each.
    assert sorted(d.payload.split('"input": "')[1].split('"')[0]
                  for d in refusals_of(seen, "R-conf")) == ["Cancel", "NewJob"]  # fmt: skip
    assert all(refusals_of(seen, rid) == [] for rid in rids - {"R-conf"}), "valid work refused"
    # A replay is harmless: the replayed request got one first wave, not two.
    assert [w.wave for w in seen.of(ev.WaveSent) if w.request_id == "R-replayed"].count(1) == 1
    rejected = {r.request_id for r in seen.of(ev.RequestRejected)}
    assert {"R-unknown-market", "R-future", "R-far"} <= rejected  # their kiosks are told


def _missing(
    hostile: list[Hostile], sent: list[RecordMetadata], found: Any
) -> list[tuple[str, str, str]]:
    return [
        (h.topic, h.label, repr((h.value or b"")[:80]))
        for h, m in zip(hostile, sent, strict=True)
        if h.refused and (m.topic, m.partition, m.offset) not in found
    ]


async def _available(index: RedisWorkerIndex, n: int) -> bool:
    return await index.available() >= n


async def _true(value: bool) -> bool:
    return value


async def _all_letters(seen: Tap, refused: set[Position]) -> bool:
    return refused <= by_position(seen).keys() and len(refusals_of(seen, "R-conf")) >= 2


async def _archived(dsn: str, positions: set[Position]) -> bool:
    return positions <= await archived_positions(dsn)


async def _caught_up(settings: Settings) -> bool:
    return all(n == 0 for n in (await lagging(settings)).values())


def _report(summary: dict[str, Any]) -> None:
    if RESULTS:
        Path(RESULTS).mkdir(parents=True, exist_ok=True)
        (Path(RESULTS) / "hostile.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        "\nhostile input: {records_tried} records tried, {dead_lettered}/{must_be_dead_lettered} "
        "dead-lettered ({dead_lettered_twice} twice), {tolerated_not_dead_lettered} tolerated, "
        "{core_refusals} core refusals, valid requests filled {valid_requests_filled}, services "
        "alive {services_alive}, largest dead letter {largest_dead_letter_bytes} B, "
        "{seconds} s".format(**summary)
    )
