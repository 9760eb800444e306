"""The composition root: every client is made here, at startup, and handed down.

``run_dispatcher`` and ``run_presence`` run until their ``stop`` event is set (Ctrl-C or
SIGTERM when started from the command line), then finish the batch in hand, commit, and close
their clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from aiokafka import ConsumerRecord
from pydantic import BaseModel

from consumers.dispatching import (
    TIMERS_PER_BATCH,
    Dispatcher,
    Place,
    sweep_forever,
    ticks,
    time_bounds,
    translate,
)
from consumers.journal import Journal
from infra import metrics, pg
from infra.backoff import until_stopped
from infra.clients import kafka_clients, keys_for, policy_from, redis_session
from infra.clock import now_ms
from infra.consume import Durable, Resilience, consume, starting
from infra.decoding import dead_letter, decode
from infra.health import Health
from infra.ports import Presence, Saved, Write
from infra.process import stop_on_signals
from infra.publish import Outgoing, Publisher
from infra.rebuild import CacheGuard
from infra.redis_index import RedisRequestStore, RedisWorkerIndex
from infra.redis_nodes import AnyRedis
from infra.settings import Settings, get_settings
from schemas import events as ev
from schemas.topics import HIRE_REQUESTS, OFFER_RESPONSES, WORKER_EVENTS

log = logging.getLogger(__name__)
THROUGHPUT_LOG_S = 30.0  # how often the dispatcher logs what it did


class MeteredRequestStore(RedisRequestStore):
    """The Redis request store, observing each request's time to first offer as it is saved."""

    async def save(self, writes: Sequence[Write]) -> list[Saved]:
        saved = await super().save(writes)
        metrics.first_offers(
            (w.state, w.at_ms) for w, ok in zip(writes, saved, strict=True) if ok is True
        )
        return saved


@contextlib.asynccontextmanager
async def probes(
    settings: Settings, port: int, health: Health, sock: socket.socket | None
) -> AsyncIterator[None]:
    """``/healthz``, ``/readyz`` and ``/metrics`` on ``sock``, or on ``port`` from settings (a
    free one if it is taken; 0: none) for the block's duration."""
    m = settings.metrics
    sock = sock or metrics.listen(m.host, port, what="metrics")
    async with metrics.serve_probes(sock, metrics.Probe(health, m.ready_max_lag)):
        yield


async def whole_cache(
    settings: Settings, redis: AnyRedis, markets: Mapping[str, Place], stop: asyncio.Event
) -> CacheGuard:
    """The service's cache guard, once Redis holds the whole cache (rebuilt from the log when
    it came back empty; see infra.rebuild)."""
    guard = CacheGuard(
        redis, keys_for(settings), settings.kafka_slice(), lambda rs: presence_batch(rs, markets)[0]
    )
    # Redis may not answer yet; Ctrl-C stops a wait for it or for another's rebuild.
    await starting("checking the cache in Redis", guard.ensure, stop)
    return guard


async def registry(
    settings: Settings, stop: asyncio.Event, health: Health | None
) -> dict[str, Place]:
    """The markets' places, once PostgreSQL answers."""
    return await starting(
        "reading the market registry from PostgreSQL",
        lambda: pg.market_places(settings.pg_dsn),
        stop,
        health,
    )


async def run_dispatcher(
    settings: Settings | None = None,
    stop: asyncio.Event | None = None,
    health: Health | None = None,
    *,
    metrics_sock: socket.socket | None = None,
) -> None:
    """One dispatcher instance, until ``stop``, serving its health and metrics meanwhile
    (on ``metrics_sock``, else on the settings' ``metrics.dispatcher_port``)."""
    settings = settings or get_settings()
    health = health or Health()
    async with probes(settings, settings.metrics.dispatcher_port, health, metrics_sock):
        await _run_dispatcher(settings, stop, health)


@until_stopped
async def _run_dispatcher(
    settings: Settings, stop: asyncio.Event | None, health: Health | None
) -> None:
    stop = stop or stop_on_signals()
    markets = await registry(settings, stop, health)
    async with redis_session(settings) as redis:
        keys = keys_for(settings)
        dispatcher = Dispatcher(
            RedisWorkerIndex(redis, keys),
            MeteredRequestStore(redis, keys),
            policy_from(settings.policy),
        )
        guard = await whole_cache(settings, redis, markets, stop)
        group = settings.dispatcher_group
        clients = kafka_clients(
            settings, group, HIRE_REQUESTS, OFFER_RESPONSES, stop=stop, health=health
        )
        async with clients as (consumer, pub):
            await _dispatch(settings, dispatcher, markets, guard, consumer, pub, stop, health)
    log.info("dispatcher stopped")


async def _dispatch(
    settings: Settings,
    dispatcher: Dispatcher,
    markets: Mapping[str, Place],
    guard: CacheGuard,
    consumer: Any,
    pub: Publisher,
    stop: asyncio.Event,
    health: Health | None,
) -> None:
    journal = Journal(dispatcher.policy)  # what each batch took, and its clock, for replay
    bounds = time_bounds(settings.policy)  # how far ahead a message's times may lie
    tally = metrics.Throughput("dispatcher", THROUGHPUT_LOG_S)
    out = metrics.CountedSink(pub, "dispatcher")  # every send, its dead letters counted

    async def handle(records: list[ConsumerRecord[Any, Any]]) -> Durable:
        now = now_ms()
        inputs, refused = translate(records, markets, now, bounds)
        due = await dispatcher.store.pop_due(now, TIMERS_PER_BATCH)
        batch = inputs + ticks(due)
        done = await dispatcher.decide(batch, now)
        # Handed to the producer; the batch is committed once the broker has them all, and
        # its outboxes are cleared then (in the background: a pending outbox is only
        # published again, so the commit need not wait for that).
        acks = await out.send(refused + done.wire + journal.entry(batch, now))
        dispatcher.after_publish(acks, done)
        tally.add(len(records), *metrics.decided(done.out))
        tally.maybe_log(None if health is None else health.lag)
        return acks

    log.info("dispatcher up: %d markets, policy %s", len(markets), settings.policy.name)
    sweeping = asyncio.create_task(sweep_forever(dispatcher, pub.send, stop))
    group, every_s = settings.dispatcher_group, settings.metrics.lag_interval_s
    try:
        async with metrics.lag_watch(consumer, group, health, stop, every_s):
            await consume(
                consumer,
                metrics.timed("dispatcher", guard.guarded(handle)),
                stop,
                poll_ms=50,
                max_records=settings.kafka.max_batch,
                resilience=Resilience("dispatcher", out, health),
            )
    finally:
        sweeping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeping
        await dispatcher.drain()


def to_presence(msg: ev.WorkerCheckedIn | ev.WorkerLocated | ev.WorkerWentOffline) -> Presence:
    match msg:
        case ev.WorkerCheckedIn():
            return Presence(msg.worker_id, "checkin", msg.lon, msg.lat, msg.skills)
        case ev.WorkerLocated():
            return Presence(msg.worker_id, "locate", msg.lon, msg.lat)
    return Presence(msg.worker_id, "offline")


def presence_batch(
    records: Sequence[ConsumerRecord[Any, Any]],
    markets: Mapping[str, Place],
    now: int | None = None,
    bounds: ev.TimeBounds = ev.DEFAULT_TIME_BOUNDS,
) -> tuple[list[Presence], list[Outgoing]]:
    """Decode worker events: presence changes, and dead letters for the unusable ones (an
    unknown market; with ``now``, a time too far ahead of it)."""
    decoded = decode(records, {WORKER_EVENTS: ev.WORKER_EVENT}, "presence")
    changes, dead = [], decoded.dead
    for record, msg in decoded.good:
        reason = _refused_presence(msg, markets, now, bounds)
        if reason is not None:
            dead.append(dead_letter(record, "presence", reason))
        else:
            changes.append(to_presence(msg))
    return changes, dead


def _refused_presence(
    msg: BaseModel, markets: Mapping[str, Place], now: int | None, bounds: ev.TimeBounds
) -> str | None:
    market = getattr(msg, "market_id", None)
    if market is not None and market not in markets:
        return f"unknown market {market!r}"
    return None if now is None else ev.time_problem(msg, now, bounds)


async def run_presence(
    settings: Settings | None = None,
    stop: asyncio.Event | None = None,
    health: Health | None = None,
    *,
    metrics_sock: socket.socket | None = None,
) -> None:
    """The presence consumer: worker events into the geo-sharded index, until ``stop``,
    serving its health and metrics meanwhile (``metrics.presence_port``)."""
    settings = settings or get_settings()
    health = health or Health()
    async with probes(settings, settings.metrics.presence_port, health, metrics_sock):
        await _run_presence(settings, stop, health)


@until_stopped
async def _run_presence(
    settings: Settings, stop: asyncio.Event | None, health: Health | None
) -> None:
    stop = stop or stop_on_signals()
    markets = await registry(settings, stop, health)
    bounds = time_bounds(settings.policy)  # how far ahead a worker event's time may lie
    async with redis_session(settings) as redis:
        index = RedisWorkerIndex(redis, keys_for(settings))
        guard = await whole_cache(settings, redis, markets, stop)
        group = settings.presence_group
        clients = kafka_clients(settings, group, WORKER_EVENTS, stop=stop, health=health)
        async with clients as (consumer, pub):
            out = metrics.CountedSink(pub, "presence")  # every send, its dead letters counted

            async def handle(records: list[ConsumerRecord[Any, Any]]) -> Durable:
                fresh, folded = guard.split(records)
                changes, dead = presence_batch(fresh, markets, now_ms(), bounds)
                # A rebuild folded these records' changes but sent none of their dead letters.
                dead += presence_batch(folded, markets, now_ms(), bounds)[1] if folded else []
                if changes:
                    await index.apply(changes)
                return await out.send(dead)

            log.info("presence consumer up")
            every_s = settings.metrics.lag_interval_s
            async with metrics.lag_watch(consumer, group, health, stop, every_s):
                await consume(
                    consumer,
                    metrics.timed("presence", guard.guarded(handle)),
                    stop,
                    poll_ms=200,
                    max_records=settings.kafka.max_batch,
                    resilience=Resilience("presence", out, health),
                )
    log.info("presence consumer stopped")
