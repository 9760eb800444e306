"""Small tools for the integration tests: publish, and collect what a topic carries."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer
from pydantic import ValidationError

from infra.clock import now_ms
from infra.kafka import make_consumer, make_producer, partitions
from infra.publish import Outgoing, Publisher
from infra.settings import Settings
from producers.workers import Behaviour, Crowd
from schemas import events as ev
from schemas.topics import HIRE_REQUESTS, OFFERS, WORKER_EVENTS


@contextlib.asynccontextmanager
async def publisher(settings: Settings) -> AsyncIterator[Publisher]:
    producer = make_producer(settings.kafka_slice())
    await producer.start()
    try:
        yield Publisher(producer)
    finally:
        await producer.stop()


@dataclass
class Tap:
    """Everything read from some topics since the tap opened, in arrival order."""

    records: list[tuple[str, bytes, Any]] = field(default_factory=list)

    def of(self, kind: type) -> list[Any]:
        return [m for _, _, m in self.records if isinstance(m, kind)]

    def records_of(self, kinds: tuple[type, ...]) -> list[Any]:
        return [m for _, _, m in self.records if isinstance(m, kinds)]


@contextlib.asynccontextmanager
async def tap(settings: Settings, *topics: str) -> AsyncIterator[Tap]:
    """Read every partition of the topics from the start, in the background. No consumer
    group: a tap must not depend on a group forming, nor on an offset reset, to see all."""
    parts = await partitions(settings.kafka_bootstrap, topics)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=settings.kafka.fetch_max_wait_ms,
    )
    await consumer.start()
    consumer.assign(parts)
    await consumer.seek_to_beginning(*parts)
    seen = Tap()
    task = asyncio.create_task(_drain(consumer, seen))
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await consumer.stop()


async def _drain(consumer: AIOKafkaConsumer, seen: Tap) -> None:
    adapters: dict[str, Any] = {
        "gig.offers.v1": ev.OFFER_EVENT,
        "gig.request-events.v1": ev.REQUEST_EVENT,
        "gig.offer-responses.v1": ev.OFFER_RESPONSE,
        "gig.dead-letters.v1": ev.DEAD_LETTER,
    }
    while True:
        batch = await consumer.getmany(timeout_ms=50)
        for records in batch.values():
            for r in records:
                seen.records.append((r.topic, r.value, _parsed(adapters.get(r.topic), r.value)))


def _parsed(adapter: Any, value: bytes) -> Any:
    """The message, or None for what the topic's schema refuses (tests publish such on purpose)."""
    try:
        return adapter.validate_json(value) if adapter else None
    except ValidationError:
        return None


@contextlib.asynccontextmanager
async def answering(
    settings: Settings, pub: Publisher, behaviour: Behaviour, seed: int
) -> AsyncIterator[Crowd]:
    """Simulated workers answering the offers made to them, until the block ends."""
    offers = make_consumer(settings.kafka_slice(), OFFERS, group_id=f"{settings.key_prefix}-crowd")
    await offers.start()
    crowd = Crowd(pub, behaviour, random.Random(seed))
    stop = asyncio.Event()
    listening = asyncio.create_task(crowd.listen(offers, stop))
    try:
        yield crowd
    finally:
        stop.set()
        await listening
        await offers.stop()


def checkin(wid: str, lon: float, lat: float, skill: str = "bricklayer") -> Outgoing:
    msg = ev.WorkerCheckedIn(
        event_id=f"ci:{wid}", at_ms=now_ms(), worker_id=wid, lon=lon, lat=lat, skills=(skill,)
    )
    return Outgoing(WORKER_EVENTS, wid, msg)


def hire(
    rid: str,
    market: str = "G4301001",
    skill: str = "bricklayer",
    headcount: int = 1,
    deadline_s: float = 60.0,
) -> Outgoing:
    at = now_ms()
    msg = ev.HireRequested(
        event_id=f"hr:{rid}",
        at_ms=at,
        request_id=rid,
        market_id=market,
        skill=skill,
        headcount=headcount,
        wage_yuan_per_day=260.0,
        start_at_ms=at,
        deadline_at_ms=at + int(deadline_s * 1000),
    )
    return Outgoing(HIRE_REQUESTS, rid, msg)
