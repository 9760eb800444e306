"""``gig-archiver``: every topic into the PostgreSQL event store, in batches, exactly once.

It reads every topic with one consumer group, turns each record into one row (valid or not),
appends a batch in one transaction with its position, then commits the Kafka offsets. A crash
between the two means the batch comes again and adds nothing. Every few seconds it logs how
many records it archived and how far behind the end of the log it is (its lag).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from archive.records import ARCHIVED_TOPICS, row_of
from archive.store import PgEventStore, Position
from consumers.runtime import consume, now_ms, setup_logging, stop_on_signals
from infra import pg
from infra.kafka import ensure_topics, make_consumer
from infra.settings import Settings, get_settings

log = logging.getLogger("archiver")
DEFAULT_GROUP = "gig-archiver"
REPORT_EVERY_S = 5.0


@dataclass
class Lag:
    """Counts since the last report, and the latest lag seen."""

    records: int = 0
    new: int = 0
    behind: int = 0
    newest_ts_ms: int = 0
    last_report: float = field(default_factory=time.monotonic)

    def line(self) -> str:
        age = f", newest record {now_ms() - self.newest_ts_ms} ms old" if self.newest_ts_ms else ""
        return f"archived {self.records} records ({self.new} new); lag {self.behind} records{age}"


async def positions(
    consumer: AIOKafkaConsumer, records: Sequence[ConsumerRecord[Any, Any]]
) -> list[Position]:
    """Where the consumer stands on each partition of the batch, and its lag there."""
    newest: dict[TopicPartition, int] = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        newest[tp] = max(newest.get(tp, 0), r.timestamp)
    out = []
    for tp, ts in newest.items():
        at = await consumer.position(tp)
        end = consumer.highwater(tp)
        out.append(Position(tp.topic, tp.partition, at, None if end is None else end - at, ts))
    return out


def archive_handler(consumer: AIOKafkaConsumer, store: PgEventStore, group: str, lag: Lag) -> Any:
    """The batch handler: rows and positions in one transaction, a lag report now and then."""

    async def handle(records: list[ConsumerRecord[Any, Any]]) -> None:
        if records:
            rows = [row_of(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value)
                    for r in records]  # fmt: skip
            where = await positions(consumer, records)
            lag.new += await store.append(rows, where, group)
            lag.records += len(records)
            lag.behind = sum(p.lag or 0 for p in where)
            lag.newest_ts_ms = max(p.newest_ts_ms or 0 for p in where)
        if time.monotonic() - lag.last_report >= REPORT_EVERY_S and lag.records:
            log.info(lag.line())
            lag.records = lag.new = 0
            lag.last_report = time.monotonic()

    return handle


async def run_archiver(
    settings: Settings | None = None,
    stop: asyncio.Event | None = None,
    *,
    group: str = DEFAULT_GROUP,
    topics: Sequence[str] = ARCHIVED_TOPICS,
) -> None:
    """Archive the topics until ``stop``; the schema is migrated first."""
    settings = settings or get_settings()
    stop = stop or stop_on_signals()
    await pg.ensure_database(settings.pg_dsn)
    conn = await asyncpg.connect(settings.pg_dsn)
    await pg.migrate(conn)
    kafka = settings.kafka_slice()
    await ensure_topics(kafka, tuple(topics))
    # The archive keeps everything: a new archiver group starts at the beginning of the log.
    consumer = make_consumer(kafka, *topics, group_id=group, start="earliest")
    await consumer.start()
    lag = Lag()
    try:
        log.info("archiver up: %d topics into %s", len(topics), settings.pg_dsn.rsplit("@", 1)[-1])
        handler = archive_handler(consumer, PgEventStore(conn), group, lag)
        await consume(consumer, handler, stop, poll_ms=200, max_records=kafka.max_batch)
    finally:
        await consumer.stop()
        await conn.close()
    log.info("archiver stopped; %s", lag.line())


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``gig-archiver``."""
    p = argparse.ArgumentParser(
        prog="gig-archiver",
        description="Archive every topic into the PostgreSQL event store (one row per Kafka "
        "record, duplicates ignored), for timelines, replays and reports. It logs its lag "
        "every few seconds; Ctrl-C stops it after the batch in hand.",
    )
    p.add_argument("--group", default=DEFAULT_GROUP, help=f"consumer group ({DEFAULT_GROUP})")
    p.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    args = p.parse_args(argv)
    setup_logging(args.verbose)
    asyncio.run(run_archiver(group=args.group))


if __name__ == "__main__":
    main()
