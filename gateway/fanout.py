"""The gateway's consumer: offers and lifecycle events from Kafka to Redis and to sockets.

All gateway processes share one consumer group on ``gig.offers.v1`` and
``gig.request-events.v1``. For each batch the process that got it updates the live offers and
the request histories in Redis, then publishes every message on its worker's or request's
pub/sub channel, so the process holding the socket or stream sends it on. Records it cannot
decode go to the dead-letter topic.

``run_fanout`` joins the group (bounded and retried, see ``infra.joining``) and runs the
shared consumer loop, which rides out Redis and Kafka outages and skips poison records.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import ConsumerRecord
from pydantic import TypeAdapter

from gateway.hub import Hub
from gateway.keys import GatewayKeys
from gateway.store import LiveOffers, RequestHistory, WorkerJobs, numbered
from infra import metrics
from infra.backoff import until_stopped
from infra.clock import now_ms
from infra.consume import Durable, Resilience, consume
from infra.decoding import decode
from infra.health import Health
from infra.joining import close, join_group
from infra.kafka import make_consumer
from infra.publish import Outgoing, Publisher
from infra.settings import Settings
from schemas import events as ev
from schemas.topics import OFFERS, REQUEST_EVENTS

CONSUMER = "gateway"
OFFER_ADAPTER: TypeAdapter[ev.OfferMade | ev.OfferWithdrawn | ev.Hired] = ev.OFFER_EVENT
EVENT_ADAPTER: TypeAdapter[ev.RequestEvent] = ev.REQUEST_EVENT


@dataclass
class Sorted:
    """A batch, sorted by what the gateway does with each message."""

    made: list[ev.OfferMade] = field(default_factory=list)
    gone: list[ev.OfferWithdrawn] = field(default_factory=list)
    hired: list[ev.Hired] = field(default_factory=list)
    happened: list[tuple[str, ev.RequestEvent]] = field(default_factory=list)
    dead: list[Outgoing] = field(default_factory=list)


def sort_batch(records: Sequence[ConsumerRecord[Any, Any]], now_ms: int) -> Sorted:
    """Decode a batch; offers already expired (an old backlog) are not pushed again."""
    out = Sorted()
    offers = decode([r for r in records if r.topic == OFFERS], {OFFERS: OFFER_ADAPTER}, CONSUMER)
    events = decode(
        [r for r in records if r.topic == REQUEST_EVENTS], {REQUEST_EVENTS: EVENT_ADAPTER}, CONSUMER
    )
    out.dead = offers.dead + events.dead
    for _, msg in offers.good:
        if isinstance(msg, ev.OfferMade):
            if msg.expires_at_ms > now_ms:
                out.made.append(msg)
        elif isinstance(msg, ev.Hired):
            out.hired.append(msg)
        else:
            out.gone.append(msg)
    out.happened = [(msg.request_id, msg) for _, msg in events.good]
    return out


def pushes(batch: Sorted, keys: GatewayKeys, numbers: Sequence[int] = ()) -> list[tuple[str, str]]:
    """(channel, JSON) for every message some socket or stream may be waiting for. A request's
    event carries its number in the request's log (``numbers``, one per ``batch.happened``),
    so a progress stream drops what it sent already (``gateway.store.numbered``)."""
    items = [(keys.worker_channel(m.worker_id), m.model_dump_json()) for m in batch.made]
    items += [(keys.worker_channel(m.worker_id), m.model_dump_json()) for m in batch.gone]
    items += [(keys.worker_channel(m.worker_id), m.model_dump_json()) for m in batch.hired]
    told = [m.model_dump_json() for _, m in batch.happened]
    if numbers:
        told = [numbered(n, text) for n, text in zip(numbers, told, strict=True)]
    items += [(keys.request_channel(rid), text)
              for (rid, _), text in zip(batch.happened, told, strict=True)]  # fmt: skip
    # A job's steps reach its worker as well as its kiosk.
    items += [(keys.worker_channel(m.worker_id), m.model_dump_json()) for m in job_changes(batch)]
    return items


def job_changes(batch: Sorted) -> list[ev.JobChanged]:
    return [m for _, m in batch.happened if isinstance(m, ev.JobChanged)]


class Fanout:
    """Carries out one sorted batch: Redis views first, then the pushes."""

    def __init__(
        self,
        offers: LiveOffers,
        history: RequestHistory,
        hub: Hub,
        keys: GatewayKeys,
        jobs: WorkerJobs,
    ) -> None:
        self.offers = offers
        self.jobs = jobs
        self.history = history
        self.hub = hub
        self.keys = keys

    async def handle(self, batch: Sorted) -> None:
        # Views before pushes: a socket that hears of an offer can already answer it.
        await self.offers.apply(batch.made, batch.gone)
        await self.jobs.apply(batch.hired, job_changes(batch))
        numbers = await self.history.add(batch.happened) if batch.happened else []
        await self.hub.publish(pushes(batch, self.keys, numbers))


@until_stopped
async def run_fanout(
    settings: Settings,
    fanout: Fanout,
    publisher: Publisher,
    stop: asyncio.Event,
    health: Health | None = None,
) -> None:
    """Join the gateway's group, then carry out every batch until ``stop``."""
    kafka, group = settings.kafka_slice(), settings.gateway.group
    consumer = await join_group(
        lambda: make_consumer(kafka, OFFERS, REQUEST_EVENTS, group_id=group),
        stop,
        group=group,
        timeout_s=kafka.join_timeout_s,
        health=health,
    )

    out = metrics.CountedSink(publisher, CONSUMER)  # every send, its dead letters counted

    async def handle(records: list[ConsumerRecord[Any, Any]]) -> Durable:
        batch = sort_batch(records, now_ms())
        await fanout.handle(batch)
        return await out.send(batch.dead)

    try:
        resilience = Resilience(CONSUMER, out, health)
        async with metrics.lag_watch(
            consumer, group, health, stop, settings.metrics.lag_interval_s
        ):
            await consume(
                consumer, metrics.timed(CONSUMER, handle), stop, poll_ms=100, resilience=resilience
            )
    finally:
        await close(consumer)
