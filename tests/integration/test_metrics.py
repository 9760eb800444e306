"""Health, readiness and Prometheus metrics of every service on the real stack: probes before
joining, lag and batch metrics moving under load (dispatcher, presence, gateway), and the
archiver's lag over a real backlog."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from archive import archiver, records
from archive.store import PgEventStore
from consumers.services import run_dispatcher, run_presence
from gateway.serve import serving
from infra import metrics, stack
from infra.health import Health
from infra.kafka import ensure_topics, make_consumer
from infra.publish import Outgoing
from infra.redis_index import RedisWorkerIndex
from infra.settings import Settings
from infra.stack import free_port
from schemas import events as ev
from tests.conftest import eventually, running
from tests.gateway.conftest import with_gateway
from tests.integration.helpers import checkin, hire, publisher

pytestmark = pytest.mark.integration
BACKLOG = 3000
MAX_LAG = 50
LON, LAT = 113.26145, 28.20326  # market G4301001

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(base: str) -> Samples:
    async with httpx.AsyncClient() as client:
        r = await client.get(f"{base}/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


async def status(base: str, path: str) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient() as client:
        r = await client.get(f"{base}{path}")
    return r.status_code, r.json()


def with_metrics(settings: Settings, **changes: Any) -> Settings:
    m = settings.metrics.model_copy(
        update={"lag_interval_s": 0.2, "ready_max_lag": MAX_LAG, **changes}
    )
    kafka = settings.kafka.model_copy(update={"max_batch": 100})
    return settings.model_copy(update={"metrics": m, "kafka": kafka})


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    await eventually(check, 60, what)


# --- probes ----------------------------------------------------------------------------------


async def test_not_ready_before_joining_but_alive(settings: Settings) -> None:
    port = free_port()
    nowhere = with_metrics(settings, dispatcher_port=port).model_copy(
        update={"kafka_bootstrap": f"127.0.0.1:{free_port()}"}  # no broker there
    )
    base = f"http://127.0.0.1:{port}"
    async with running((run_dispatcher, nowhere)):
        await until(lambda: _answers(base), "the dispatcher's probes")
        code, body = await status(base, "/readyz")
        assert code == 503 and body["ready"] is False and body["state"] != "ok"
        assert body["lag"] is None
        code, body = await status(base, "/healthz")
        assert code == 200 and body["alive"] is True
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{base}/nothing")).status_code == 404
            assert (await client.post(f"{base}/metrics")).status_code == 405


async def _answers(base: str) -> bool:
    try:
        return (await status(base, "/healthz"))[0] == 200
    except httpx.TransportError:
        return False


# --- under load ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def gated(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[asyncio.Event]:
    """While the yielded event is clear and the gate armed, presence's index writes wait."""
    gate, real = asyncio.Event(), RedisWorkerIndex.apply

    async def apply(self: RedisWorkerIndex, changes: Any) -> Any:
        await gate.wait()
        return await real(self, changes)

    gate.set()  # open until the test closes it
    monkeypatch.setattr(RedisWorkerIndex, "apply", apply)
    yield gate


async def test_lag_and_batch_metrics_move_under_load(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    d_port, p_port = free_port(), free_port()
    s = with_gateway(with_metrics(settings, dispatcher_port=d_port, presence_port=p_port))
    dispatcher, presence = f"http://127.0.0.1:{d_port}", f"http://127.0.0.1:{p_port}"
    pg, dg, gg = s.presence_group, s.dispatcher_group, s.gateway.group
    async with (
        gated(monkeypatch) as gate,
        running((run_presence, s), (run_dispatcher, s)),
        serving(s) as gw,
        publisher(s) as pub,
    ):
        for base in (dispatcher, presence, gw.url):
            await until(lambda b=base: _ready(b), f"{base}/readyz to say ready")  # type: ignore[misc]
        before = await scrape(dispatcher)
        assert total(before, "gig_consumer_lag", group=dg) == 0

        # Presence is held on its first batch while a burst of check-ins arrives: its lag
        # grows past the bound and it says it is not ready; released, it catches up.
        gate.clear()
        await pub.publish([checkin(f"w{i}", LON + i * 1e-5, LAT) for i in range(BACKLOG)])

        async def behind() -> bool:
            return total(await scrape(presence), "gig_consumer_lag", group=pg) > MAX_LAG

        await until(behind, "presence's lag to grow")
        code, body = await status(presence, "/readyz")
        assert code == 503 and body["lag"] > MAX_LAG and body["state"] == "ok"
        gate.set()

        async def caught_up() -> bool:
            lag = total(await scrape(presence), "gig_consumer_lag", group=pg)
            return lag == 0 and (await status(presence, "/readyz"))[0] == 200

        await until(caught_up, "presence to catch up")

        # A burst of requests: batches, decisions, offers and first offers counted.
        await pub.publish([hire(f"R-{i}") for i in range(200)])

        async def offered() -> bool:
            now = await scrape(dispatcher)
            return _delta(now, before, "gig_time_to_first_offer_seconds_count") >= 200

        await until(offered, "200 first offers")
        after = await scrape(dispatcher)
        at_gateway = await scrape(gw.url)
        assert (await status(gw.url, "/healthz"))[0] == 200

    for consumer in ("dispatcher", "presence", "gateway"):
        assert _delta(after, before, "gig_batch_records_count", consumer=consumer) > 0
        assert _delta(after, before, "gig_batch_seconds_sum", consumer=consumer) > 0
    assert _delta(after, before, "gig_batch_records_sum", consumer="presence") == BACKLOG
    assert _delta(after, before, "gig_offers_total") >= 200
    assert _delta(after, before, "gig_decisions_total", type="OfferMade") >= 200
    assert _delta(after, before, "gig_decisions_total", type="WaveSent") >= 200
    for group in (dg, pg, gg):  # each group's lag, measured again and again
        assert _delta(after, before, "gig_consumer_lag_measured_seconds", group=group) > 0
        assert total(at_gateway, "gig_consumer_lag_measured_seconds", group=group) > 0


async def _ready(base: str) -> bool:
    try:
        return (await status(base, "/readyz"))[0] == 200
    except httpx.TransportError:
        return False


def _delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
    return total(after, name, **labels) - total(before, name, **labels)


# --- the archiver's lag ------------------------------------------------------------------------


def _located(topic: str, i: int) -> Outgoing:
    msg = ev.WorkerLocated(
        event_id=f"wl:{i}", at_ms=1_790_000_000_000 + i, worker_id=f"w{i % 37}", lon=112.9, lat=28.2
    )
    return Outgoing(topic, f"k{i}", msg)


async def _backlog(settings: Settings, n: int = BACKLOG) -> str:
    topic = f"test.lag.{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings.kafka_slice(), (topic,))
    async with publisher(settings) as pub:
        await pub.publish([_located(topic, i) for i in range(n)])
    return topic


async def test_lag_is_the_log_end_minus_the_position_on_every_owned_partition(
    settings: Settings,
) -> None:
    topic = await _backlog(settings)
    consumer: AIOKafkaConsumer = make_consumer(settings.kafka_slice(), topic, group_id=topic)
    await consumer.start()
    try:
        got: list[Any] = []
        while not got:
            batch = await consumer.getmany(timeout_ms=1000, max_records=100)
            got = [r for part in batch.values() for r in part]
        lag = await metrics.measure_lag(consumer)
        assert len(lag) == settings.kafka.partitions  # every partition it owns, read or not
        assert sum(lag.values()) == BACKLOG - len(got)
        # The archiver's figure: the batch's partitions alone (what it used to report) fall
        # short; with every owned partition it is the whole backlog.
        where = await archiver.positions(consumer, got)
        assert sum(p.lag or 0 for p in where) < BACKLOG - len(got)
        everywhere = await archiver.everywhere(consumer, where)
        assert sum(p.lag or 0 for p in everywhere) == BACKLOG - len(got)
    finally:
        await consumer.stop()


async def test_the_archiver_reports_its_real_backlog(
    archived: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    s = with_metrics(archived, archiver_port=port)
    base = f"http://127.0.0.1:{port}"
    topic = await _backlog(s)
    group = f"g-{topic}"
    monkeypatch.setitem(records.ADAPTERS, topic, ev.WORKER_EVENT)
    gate, real_append, stored = asyncio.Event(), PgEventStore.append, {"batches": 0}

    async def held_append(self: PgEventStore, rows: Any, *args: Any, **kw: Any) -> int:
        new = await real_append(self, rows, *args, **kw)
        stored["batches"] += 1 if rows else 0
        if rows:
            await gate.wait()  # the archiver is held after its first batch
        return new

    monkeypatch.setattr(PgEventStore, "append", held_append)
    health, stop = Health(), asyncio.Event()
    task = asyncio.create_task(
        archiver.run_archiver(s, stop, group=group, topics=(topic,), health=health)
    )
    try:
        await until(lambda: _stored(stored), "the first batch archived")
        archived_now = await _sql(s, "SELECT count(*) FROM event_log WHERE topic = $1", topic)
        behind = BACKLOG - archived_now
        assert 0 < archived_now <= 100 and health.lag == behind
        await until(lambda: _gauge_is(base, group, behind), "the lag gauge")
        assert await _progress_lag(s, topic) == behind
        code, body = await status(base, "/readyz")
        assert code == 503 and body["lag"] == behind
        gate.set()
        await until(lambda: _gauge_is(base, group, 0), "the archiver to catch up")
        assert await _sql(s, "SELECT count(*) FROM event_log WHERE topic = $1", topic) == BACKLOG
        await until(lambda: _progress_is(s, topic, 0), "archive_progress to say lag 0")
        assert health.lag == 0 and (await status(base, "/readyz"))[0] == 200
    finally:
        gate.set()
        stop.set()
        await task


async def _stored(stored: dict[str, int]) -> bool:
    return stored["batches"] > 0


async def _gauge_is(base: str, group: str, lag: int) -> bool:
    samples = await scrape(base)
    measured = total(samples, "gig_consumer_lag_measured_seconds", group=group) > 0
    return measured and total(samples, "gig_consumer_lag", group=group) == lag


async def _sql(s: Settings, query: str, *args: Any) -> int:
    conn = await asyncpg.connect(s.pg_dsn)
    try:
        return int(await conn.fetchval(query, *args) or 0)
    finally:
        await conn.close()


async def _progress_lag(s: Settings, topic: str) -> int:
    return await _sql(s, "SELECT sum(lag) FROM archive_progress WHERE topic = $1", topic)


async def _progress_is(s: Settings, topic: str, lag: int) -> bool:
    return await _progress_lag(s, topic) == lag


# --- gig-stack status ------------------------------------------------------------------------


async def test_stack_status_shows_each_groups_lag(settings: Settings) -> None:
    topic = await _backlog(settings, 40)
    group = f"status-{topic}"
    consumer: AIOKafkaConsumer = make_consumer(settings.kafka_slice(), group_id=group)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(settings.kafka.partitions)]
        consumer.assign(parts)
        await consumer.commit({tp: 0 for tp in parts})  # has read nothing: 40 behind
    finally:
        await consumer.stop()
    said = await asyncio.to_thread(stack.status, settings)
    line = next(line for line in said.splitlines() if group in line.split())
    assert line.split()[:4] == ["group", group, "lag", "40"], line
    assert f"({settings.kafka.partitions} partitions, no members)" in line
