"""What was recorded in a time window: the archived messages, parsed and sorted by kind.

The same recording comes from the PostgreSQL event store (``from_store``) or straight from
Kafka, reading every topic from its first offset (``from_kafka``). Messages sent twice (a
redelivered batch re-sends the same ids) are kept once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import BaseModel

from archive.records import ADAPTERS, ARCHIVED_TOPICS, row_of
from archive.store import PgEventStore, Stored
from infra.kafka import partitions
from infra.settings import Settings
from schemas import events as ev
from schemas import topics as tp
from schemas.journal import DispatchBatch
from schemas.topics import DISPATCH_JOURNAL

log = logging.getLogger("replay")
Presence = ev.WorkerCheckedIn | ev.WorkerLocated | ev.WorkerWentOffline
REPLAY_TOPICS = (tp.HIRE_REQUESTS, tp.OFFER_RESPONSES, tp.OFFERS, tp.REQUEST_EVENTS,
                 DISPATCH_JOURNAL)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Window:
    """The replayed time window (epoch ms, inclusive) and how far back presence is folded."""

    from_ms: int
    to_ms: int
    presence_from_ms: int
    settle_ms: int = 15 * 60_000  # events of the window's requests after it closes

    @property
    def events_to_ms(self) -> int:
        return self.to_ms + self.settle_ms


@dataclass
class Recording:
    """A window's messages by kind, each list in time order."""

    window: Window
    journal: list[DispatchBatch] = field(default_factory=list)
    requests: list[ev.HireRequested] = field(default_factory=list)
    cancels: list[ev.HireCancelled] = field(default_factory=list)
    presence: list[Presence] = field(default_factory=list)
    answers: list[ev.OfferAccepted | ev.OfferDeclined] = field(default_factory=list)
    offers: list[ev.OfferMade | ev.OfferWithdrawn | ev.Hired] = field(default_factory=list)
    job_steps: list[ev.JobReported] = field(default_factory=list)
    request_events: list[ev.RequestEvent] = field(default_factory=list)

    def decisions(self) -> list[BaseModel]:
        """What the dispatcher published: offers, withdrawals and request events."""
        return [*self.offers, *self.request_events]


def parse(items: Iterable[Stored]) -> list[tuple[str, BaseModel]]:
    """(topic, message) for each stored item, once per distinct message, in the given order."""
    seen: set[tuple[str, str]] = set()
    out = []
    for s in items:
        if (s.topic, s.payload) in seen or s.topic not in ADAPTERS:
            continue
        seen.add((s.topic, s.payload))
        out.append((s.topic, ADAPTERS[s.topic].validate_json(s.payload)))
    return out


def _in_window(w: Window, topic: str, msg: Any) -> bool:
    at: int = msg.at_ms
    if topic == tp.WORKER_EVENTS:
        return w.presence_from_ms <= at <= w.to_ms
    if topic in (tp.HIRE_REQUESTS, DISPATCH_JOURNAL):
        return w.from_ms <= at <= w.to_ms
    return w.from_ms <= at <= w.events_to_ms


def assemble(window: Window, items: Iterable[Stored]) -> Recording:
    """Sort parsed messages into a recording (messages outside the window are dropped)."""
    rec = Recording(window)
    for topic, msg in sorted(parse(items), key=lambda x: x[1].at_ms):  # type: ignore[attr-defined]
        if not _in_window(window, topic, msg):
            continue
        _file(rec, topic, msg)
    rec.journal.sort(key=lambda b: (b.at_ms, b.instance, b.seq))
    return rec


def _file(rec: Recording, topic: str, msg: Any) -> None:
    match msg:
        case DispatchBatch():
            rec.journal.append(msg)
        case ev.HireRequested():
            rec.requests.append(msg)
        case ev.HireCancelled():
            rec.cancels.append(msg)
        case ev.OfferAccepted() | ev.OfferDeclined():
            rec.answers.append(msg)
        case ev.OfferMade() | ev.OfferWithdrawn() | ev.Hired():
            rec.offers.append(msg)
        case ev.JobReported():
            rec.job_steps.append(msg)
        case _ if topic == tp.WORKER_EVENTS:
            rec.presence.append(msg)
        case _ if topic == tp.REQUEST_EVENTS:
            rec.request_events.append(msg)


async def from_store(dsn: str, window: Window) -> Recording:
    """The window's recording from the PostgreSQL event store."""
    conn = await asyncpg.connect(dsn)
    try:
        store = PgEventStore(conn)
        events = await store.window(window.from_ms, window.events_to_ms, REPLAY_TOPICS)
        presence = await store.window(window.presence_from_ms, window.to_ms, (tp.WORKER_EVENTS,))
    finally:
        await conn.close()
    return assemble(window, [*presence, *events])


async def from_kafka(
    settings: Settings, window: Window, topics: Sequence[str] = ARCHIVED_TOPICS
) -> Recording:
    """The window's recording read from Kafka, every partition from its first offset."""
    kafka = settings.kafka_slice()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap, group_id=None, enable_auto_commit=False,
        fetch_max_wait_ms=kafka.fetch_max_wait_ms, max_partition_fetch_bytes=4 * 1024 * 1024,
    )  # fmt: skip
    await consumer.start()
    try:
        parts = await partitions(kafka.bootstrap, [t for t in topics if t != tp.DEAD_LETTERS])
        items = await _read_all(consumer, sorted(parts))
    finally:
        await consumer.stop()
    return assemble(window, items)


async def _read_all(consumer: AIOKafkaConsumer, parts: list[TopicPartition]) -> list[Stored]:
    if not parts:
        return []
    consumer.assign(parts)
    await consumer.seek_to_beginning(*parts)
    ends = await consumer.end_offsets(parts)
    items: list[Stored] = []
    quiet = 0
    # The end offsets are a hint (some brokers report them a few records off): read until
    # we are past them and a poll comes back empty, or until the log stays quiet.
    while quiet < 5:
        batch = await consumer.getmany(timeout_ms=200, max_records=10_000)
        quiet = 0 if batch else quiet + 1
        if not batch and not any([await _behind(consumer, t, e) for t, e in ends.items()]):
            break
        for records in batch.values():
            for r in records:
                row = row_of(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value)
                if row.error is None and row.payload is not None:
                    items.append(Stored(r.topic, r.partition, r.offset, r.timestamp, row.payload))
        if len(items) and len(items) % 50_000 < 10_000:
            log.info("read %d records from Kafka", len(items))
    return items


async def _behind(consumer: AIOKafkaConsumer, part: TopicPartition, end: int) -> bool:
    return bool(await consumer.position(part) < end)
