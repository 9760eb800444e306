"""``gig-workers``: a crowd of simulated workers.

It checks workers in around the markets, then listens to the offers topic and answers each
offer made to one of its workers: accept with a given probability after a random delay, decline
otherwise, and now and then not at all (the offer then lapses). It records when each offer
reached it, so the demo can report time to first offer.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer

from infra.clock import now_ms
from infra.kafka import make_consumer, make_producer
from infra.markets import Market, load_markets
from infra.process import require, run_cli, setup_logging, stop_on_signals
from infra.publish import Outgoing, Publisher
from infra.settings import Settings, get_settings
from producers.population import MarketPicker, near, worker_skills
from schemas import events as ev
from schemas.topics import OFFER_RESPONSES, OFFERS, WORKER_EVENTS

log = logging.getLogger("workers")


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How simulated workers answer offers."""

    accept: float = 0.8
    silent: float = 0.05
    min_delay_ms: int = 300
    max_delay_ms: int = 3000


def check_ins(
    count: int, markets: Sequence[Market], seed: int, prefix: str = "W"
) -> list[ev.WorkerCheckedIn]:
    """``count`` workers checked in a few kilometres around markets, deterministically."""
    rng = random.Random(seed)
    pick = MarketPicker(markets)
    out = []
    at = now_ms()
    for i in range(count):
        market = pick(rng)
        lon, lat = near(rng, market.lon, market.lat, 4.0)
        out.append(
            ev.WorkerCheckedIn(
                event_id=f"ci:{prefix}{i:07d}:{at}",
                at_ms=at,
                worker_id=f"{prefix}{i:07d}",
                market_id=market.market_id,
                lon=lon,
                lat=lat,
                skills=worker_skills(rng),
            )
        )
    return out


@dataclass
class Crowd:
    """The simulated workers' side of the offers topic."""

    publisher: Publisher
    behaviour: Behaviour
    rng: random.Random
    workers: set[str] | None = None  # None: answer for every worker
    first_offer_ms: dict[str, int] = field(default_factory=dict)
    offer_latency_ms: list[int] = field(default_factory=list)
    answers: dict[str, int] = field(
        default_factory=lambda: {"accept": 0, "decline": 0, "silent": 0}
    )
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def seen(self, offer: ev.OfferMade, received_ms: int) -> None:
        self.first_offer_ms.setdefault(offer.request_id, received_ms)
        self.offer_latency_ms.append(received_ms - offer.at_ms)
        if self.workers is not None and offer.worker_id not in self.workers:
            return
        roll = self.rng.random()
        if roll < self.behaviour.silent:
            self.answers["silent"] += 1
            return
        accept = roll < self.behaviour.silent + self.behaviour.accept
        delay = self.rng.randint(self.behaviour.min_delay_ms, self.behaviour.max_delay_ms)
        task = asyncio.create_task(self._answer(offer, accept, delay / 1000))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _answer(self, offer: ev.OfferMade, accept: bool, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        self.answers["accept" if accept else "decline"] += 1
        common: dict[str, Any] = {
            "at_ms": now_ms(),
            "offer_id": offer.offer_id,
            "request_id": offer.request_id,
            "worker_id": offer.worker_id,
        }
        msg: ev.Message = (
            ev.OfferAccepted(event_id=f"oa:{offer.offer_id}", **common)
            if accept
            else ev.OfferDeclined(event_id=f"od:{offer.offer_id}", reason="busy", **common)
        )
        await self.publisher.publish([Outgoing(OFFER_RESPONSES, offer.request_id, msg)])

    async def listen(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        """Answer offers until ``stop``."""
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100, max_records=2000)
            received = now_ms()
            for records in batch.values():
                for r in records:
                    msg = ev.OFFER_EVENT.validate_json(r.value)
                    if isinstance(msg, ev.OfferMade):
                        self.seen(msg, received)


async def publish_check_ins(
    publisher: Publisher, workers: Sequence[ev.WorkerCheckedIn], chunk: int = 2000
) -> None:
    """Publish check-ins in chunks, logging progress."""
    for start in range(0, len(workers), chunk):
        part = workers[start : start + chunk]
        await publisher.publish([Outgoing(WORKER_EVENTS, w.worker_id, w) for w in part])
        log.info("checked in %d / %d workers", start + len(part), len(workers))


async def run(args: argparse.Namespace, settings: Settings) -> None:
    kafka = settings.kafka_slice()
    producer = make_producer(kafka)
    await producer.start()
    consumer = make_consumer(kafka, OFFERS, group_id=args.group)
    await consumer.start()
    stop = stop_on_signals()
    try:
        publisher = Publisher(producer)
        crowd_ids = check_ins(args.count, load_markets(), args.seed, args.prefix)
        await publish_check_ins(publisher, crowd_ids)
        behaviour = Behaviour(args.accept, args.silent, args.min_delay_ms, args.max_delay_ms)
        crowd = Crowd(
            publisher, behaviour, random.Random(args.seed), {w.worker_id for w in crowd_ids}
        )
        log.info("answering offers (accept %.0f%%); Ctrl-C to stop", 100 * args.accept)
        await crowd.listen(consumer, stop)
        log.info("answers given: %s", crowd.answers)
    finally:
        await consumer.stop()
        await producer.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``gig-workers``."""
    p = argparse.ArgumentParser(
        prog="gig-workers",
        description="Check in simulated workers around the markets and answer the offers "
        "pushed to them until Ctrl-C.",
    )
    p.add_argument("--count", type=int, default=1000, help="workers to check in (default 1000)")
    p.add_argument("--accept", type=float, default=0.8, help="probability of accepting (0.8)")
    p.add_argument("--silent", type=float, default=0.05, help="probability of no answer (0.05)")
    p.add_argument("--min-delay-ms", type=int, default=300, help="fastest answer (300 ms)")
    p.add_argument("--max-delay-ms", type=int, default=3000, help="slowest answer (3000 ms)")
    p.add_argument("--seed", type=int, default=7, help="random seed (7)")
    p.add_argument("--prefix", default="W", help="worker id prefix (W)")
    p.add_argument("--group", default="gig-worker-sim", help="consumer group for offers")
    args = p.parse_args(argv)
    run_cli("gig-workers", lambda: _crowd(args, get_settings()))


def _crowd(args: argparse.Namespace, settings: Settings) -> None:
    require(settings, "kafka")
    setup_logging()
    asyncio.run(run(args, settings))


if __name__ == "__main__":
    main()
