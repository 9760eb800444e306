"""Outages on the real services: a group that cannot be joined, a Redis restarted under a
running consumer. The services stay up, say that they wait, stop when asked, and lose
nothing."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from redis.asyncio import Redis

from consumers.services import presence_batch
from infra import pg, stack
from infra.backoff import Stopped
from infra.clients import kafka_clients, keys_for, redis_client
from infra.consume import Durable, Resilience, consume
from infra.health import Health
from infra.joining import join_group
from infra.kafka import make_consumer
from infra.publish import Outgoing
from infra.redis_index import RedisWorkerIndex
from infra.settings import KafkaSettings, Settings
from schemas.topics import WORKER_EVENTS
from tests.conftest import eventually, running
from tests.integration.helpers import checkin, publisher

pytestmark = pytest.mark.integration
OUTAGE_S = 5.0


def _nowhere() -> Settings:
    """Settings whose broker is a loopback port nobody listens on."""
    return Settings(
        kafka_bootstrap=f"127.0.0.1:{stack.free_port()}",
        kafka=KafkaSettings(join_timeout_s=1.0),
        _env_file=None,
    )


def holds(check: Callable[[], bool]) -> Callable[[], Any]:
    async def check_now() -> bool:
        return check()

    return check_now


async def _stops_on_stop(task: asyncio.Task[Any], stop: asyncio.Event) -> None:
    assert not task.done()  # still trying: it neither gave up nor hung silently
    stop.set()
    with pytest.raises(Stopped):
        await asyncio.wait_for(task, 10)  # a hang guard: without the stop it waits for ever


async def test_a_consumer_that_cannot_join_its_group_stops_on_its_stop_event() -> None:
    kafka, stop, health = _nowhere().kafka_slice(), asyncio.Event(), Health()
    made: list[AIOKafkaConsumer] = []

    def make() -> AIOKafkaConsumer:
        made.append(make_consumer(kafka, WORKER_EVENTS, group_id="nobody"))
        return made[-1]

    task = asyncio.create_task(join_group(make, stop, group="nobody", timeout_s=1.0, health=health))
    await eventually(holds(lambda: len(made) >= 3), 30, "fresh members trying again")
    assert health.state == "joining" and "still joining group nobody" in health.reason
    await _stops_on_stop(task, stop)


async def test_service_clients_that_cannot_start_stop_on_their_stop_event() -> None:
    stop, health = asyncio.Event(), Health()

    async def start() -> None:
        async with kafka_clients(_nowhere(), "nobody", WORKER_EVENTS, stop=stop, health=health):
            raise AssertionError("started without a broker")

    task = asyncio.create_task(start())
    await eventually(holds(lambda: health.state == "degraded"), 30, "the service degraded")
    assert "producer" in health.reason
    await _stops_on_stop(task, stop)


def start_redis(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    """A redis-server of our own, without persistence: restarted, it comes back empty."""
    workdir.mkdir()
    args = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
            "--appendonly", "no", "--dir", str(workdir)]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not stack.answers("127.0.0.1", port):
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("our redis-server did not start")
        time.sleep(0.05)
    return proc


def stop_redis(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(timeout=10)


async def _indexed(index: RedisWorkerIndex, checkins: list[Outgoing]) -> bool:
    try:
        return all([await index.record(m.key) is not None for m in checkins])
    except Exception:  # Redis not back yet, or the client reconnecting
        return False


async def presence_loop(settings: Settings, stop: asyncio.Event) -> None:
    """The presence consumer's loop, as ``run_presence`` assembles it, without the cache
    rebuild at start (``infra.rebuild``, tested on its own): the outage is the subject here."""
    markets = await pg.market_places(settings.pg_dsn)
    clients = kafka_clients(settings, settings.presence_group, WORKER_EVENTS, stop=stop)
    async with clients as (consumer, pub):
        redis = redis_client(settings)
        index = RedisWorkerIndex(redis, keys_for(settings))

        async def handle(records: list[Any]) -> Durable:
            changes, dead = presence_batch(records, markets)
            await index.apply(changes)
            return await pub.send(dead)

        try:
            await consume(consumer, handle, stop, resilience=Resilience("presence", pub))
        finally:
            await redis.aclose()


async def test_presence_rides_out_a_redis_restart_and_indexes_every_check_in(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = stack.free_port()
    s = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{port}/0"})
    before = [checkin(f"w-before-{i}", 113.0 + i / 100, 28.2) for i in range(5)]
    during = [checkin(f"w-during-{i}", 113.0 + i / 100, 28.3) for i in range(20)]
    caplog.set_level(logging.INFO, "infra.backoff")
    procs = [start_redis(port, tmp_path / "redis-1")]
    client = Redis.from_url(s.redis_url, decode_responses=True)
    index = RedisWorkerIndex(client, keys_for(s))
    try:
        async with running((presence_loop, s)), publisher(s) as pub:
            await pub.publish(before)
            await eventually(lambda: _indexed(index, before), 60, "the first check-ins")
            stop_redis(procs[0])
            await pub.publish(during)
            await asyncio.sleep(OUTAGE_S)  # the outage lasts; presence must wait, not exit
            procs.append(start_redis(port, tmp_path / "redis-2"))
            await eventually(lambda: _indexed(index, during), 60, "check-ins of the outage")
    finally:
        await client.aclose()
        for proc in procs:
            if proc.poll() is None:
                stop_redis(proc)
    waits = [r.getMessage() for r in caplog.records if r.name == "infra.backoff"]
    assert any("presence" in w and "retrying in" in w for w in waits), waits
    assert any("working again" in w for w in waits), waits
