"""``gig-archiver``: every topic into the PostgreSQL event store, in batches, exactly once.

It reads every topic with one consumer group, turns each record into one row (valid or not),
appends a batch in one transaction with its position, then commits the Kafka offsets. A crash
between the two means the batch comes again and adds nothing. Every few seconds it logs how
many records it archived and how far behind the end of the log it is (its lag).

The lag counts every partition the archiver owns, read lately or not: every few seconds the
end offsets of all of them (one round trip) minus its positions, kept up to date between
measurements by each batch's own partitions (the fetch's high watermark). It is written per
partition into ``archive_progress`` with the batch, shown as ``gig_consumer_lag`` on
``/metrics`` (``metrics.archiver_port``, 9103) and bounds ``/readyz``. (It used to be summed
over the partitions of the last batch only: "lag 0" while other partitions were far behind.)

It rides out outages like every consumer (``infra.consume``): a lost PostgreSQL connection
is made again and the batch retried; a record that makes the store fail for good is
dead-lettered and skipped rather than crashing the archiver on every restart.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from archive.records import ARCHIVED_TOPICS, Row, as_raw, row_of
from archive.store import PgEventStore, Position
from infra import metrics, pg
from infra.backoff import describe, until_stopped
from infra.clock import now_ms
from infra.consume import RETRYABLE, Resilience, consume
from infra.health import Health
from infra.joining import close, join_group, start_producer
from infra.kafka import ensure_topics, make_consumer, make_producer
from infra.process import add_ops_args, run_cli, service_start, stop_on_signals
from infra.publish import Publisher
from infra.settings import Settings, get_settings

log = logging.getLogger("archiver")
DEFAULT_GROUP = "gig-archiver"
REPORT_EVERY_S = 5.0
# PostgreSQL going away (a restart, a dropped connection): the batch is retried on a new one.
PG_RETRYABLE = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
)


@dataclass
class Lag:
    """Counts since the last report, and the lag on every partition the archiver owns."""

    group: str = DEFAULT_GROUP
    records: int = 0
    new: int = 0
    newest_ts_ms: int = 0
    last_report: float = field(default_factory=time.monotonic)
    measure_every_s: float = REPORT_EVERY_S
    measured_at: float | None = None  # when every owned partition's end was last asked for
    by_partition: dict[TopicPartition, int] = field(default_factory=dict)
    health: Health | None = None
    gauge: metrics.LagGauge | None = None

    @property
    def behind(self) -> int:
        return sum(self.by_partition.values())

    def measure_due(self) -> bool:
        return (
            self.measured_at is None or time.monotonic() - self.measured_at >= self.measure_every_s
        )

    def update(self, where: Sequence[Position], everywhere: bool) -> None:
        """Take the partitions' lag (all owned ones when ``everywhere``) and show the total."""
        if everywhere:
            self.by_partition, self.measured_at = {}, time.monotonic()
        for p in where:
            if p.lag is not None:
                self.by_partition[TopicPartition(p.topic, p.part)] = p.lag
        if self.gauge is None:
            self.gauge = metrics.LagGauge(self.group)
        self.gauge.show(self.by_partition)
        if self.health is not None:
            self.health.measured(self.behind)

    def line(self) -> str:
        age = f", newest record {now_ms() - self.newest_ts_ms} ms old" if self.newest_ts_ms else ""
        return f"archived {self.records} records ({self.new} new); lag {self.behind} records{age}"


async def positions(
    consumer: AIOKafkaConsumer, records: Sequence[ConsumerRecord[Any, Any]]
) -> list[Position]:
    """Where the consumer stands on each partition of the batch, and its lag there (from the
    high watermark of the fetch that brought the records)."""
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


async def everywhere(consumer: AIOKafkaConsumer, batch: Sequence[Position]) -> list[Position]:
    """The batch's positions, and the position and lag on every other partition the consumer
    owns: their end offsets asked for now (one round trip), minus its positions."""
    seen = {(p.topic, p.part) for p in batch}
    ends, positions = await metrics.ends_and_positions(consumer)
    lag = metrics.lag_by_partition(ends, positions)
    others = [tp for tp in lag if (tp.topic, tp.partition) not in seen]
    return [
        *batch,
        *(Position(tp.topic, tp.partition, positions[tp], lag[tp], None) for tp in others),
    ]


class Connection:
    """The archiver's PostgreSQL connection, made again once it is lost."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn: asyncpg.Connection | None = None

    async def store(self) -> PgEventStore:
        if self.conn is None or self.conn.is_closed():
            self.conn = await asyncpg.connect(self.dsn)
        return PgEventStore(self.conn)

    async def close(self) -> None:
        if self.conn is not None and not self.conn.is_closed():
            await self.conn.close()


def safe_row(r: ConsumerRecord[Any, Any]) -> Row:
    """The record's row; a record the parser chokes on (nested too deep, say) is kept raw."""
    try:
        return row_of(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value)
    except Exception as e:
        row = as_raw(row_of(r.topic, r.partition, r.offset, r.timestamp, r.key, b""), "")
        return dataclasses.replace(row, raw=r.value or b"", error=f"not readable: {describe(e)}")


def archive_handler(
    consumer: AIOKafkaConsumer, connection: Connection, group: str, lag: Lag
) -> Any:
    """The batch handler: rows and positions in one transaction, a lag report now and then."""

    async def handle(records: list[ConsumerRecord[Any, Any]]) -> None:
        measure = lag.measure_due()
        if records or measure:
            rows = [safe_row(r) for r in records]
            where = await positions(consumer, records)
            if measure:
                where = await everywhere(consumer, where)
            lag.update(where, measure)
            store = await connection.store()
            lag.new += await store.append(rows, where, group)
            lag.records += len(records)
            lag.newest_ts_ms = max([lag.newest_ts_ms, *(p.newest_ts_ms or 0 for p in where)])
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
    health: Health | None = None,
    metrics_sock: socket.socket | None = None,
) -> None:
    """Archive the topics until ``stop``; the schema is migrated first. Health and metrics are
    served meanwhile on ``metrics_sock``, else on the settings' ``metrics.archiver_port``."""
    settings = settings or get_settings()
    health = health or Health()
    m = settings.metrics
    sock = metrics_sock or metrics.listen(m.host, m.archiver_port)
    async with metrics.serve_probes(sock, metrics.Probe(health, m.ready_max_lag)):
        await _run_archiver(settings, stop, group, topics, health)


@until_stopped
async def _run_archiver(
    settings: Settings,
    stop: asyncio.Event | None,
    group: str,
    topics: Sequence[str],
    health: Health,
) -> None:
    stop = stop or stop_on_signals()
    await pg.ensure_database(settings.pg_dsn)
    connection = Connection(settings.pg_dsn)
    try:
        await pg.migrate((await connection.store()).conn)
        kafka = settings.kafka_slice()
        await ensure_topics(kafka, tuple(topics))
        await _archive(settings, stop, group, topics, connection, health)
    finally:
        await connection.close()


async def _archive(
    settings: Settings,
    stop: asyncio.Event,
    group: str,
    topics: Sequence[str],
    connection: Connection,
    health: Health | None,
) -> None:
    kafka = settings.kafka_slice()
    lag = Lag(group, measure_every_s=settings.metrics.lag_interval_s, health=health)
    async with contextlib.AsyncExitStack() as stack:
        producer = await start_producer(
            lambda: make_producer(kafka), stop, timeout_s=kafka.join_timeout_s, health=health
        )
        stack.push_async_callback(close, producer)
        # The archive keeps everything: a new archiver group starts at the beginning of the log.
        consumer = await join_group(
            lambda: make_consumer(kafka, *topics, group_id=group, start="earliest"),
            stop,
            group=group,
            timeout_s=kafka.join_timeout_s,
            health=health,
        )
        stack.push_async_callback(close, consumer)
        log.info("archiver up: %d topics into %s", len(topics), settings.pg_dsn.rsplit("@")[-1])
        handler = metrics.timed("archiver", archive_handler(consumer, connection, group, lag))
        dead_letters = metrics.CountedSink(Publisher(producer), "archiver")
        resilience = Resilience("archiver", dead_letters, health, RETRYABLE + PG_RETRYABLE)
        try:
            await consume(
                consumer, handler, stop, poll_ms=200, max_records=kafka.max_batch,
                resilience=resilience,
            )  # fmt: skip
        finally:
            if lag.gauge is not None:
                lag.gauge.clear()
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
    add_ops_args(p, "GIG_METRICS__ARCHIVER_PORT, 9103")
    args = p.parse_args(argv)
    run_cli("gig-archiver", lambda: _archiver_cli(args), expected=(metrics.MetricsPortBusy,))


def _archiver_cli(args: argparse.Namespace) -> None:
    settings, sock = service_start(args, "archiver_port", "kafka", "postgres")
    asyncio.run(run_archiver(settings, group=args.group, metrics_sock=sock))


if __name__ == "__main__":
    main()
