"""The outbox on the real Redis: a dispatcher killed between saving and publishing leaves its
messages in the request's hash, and whoever loads the request next publishes them, byte for
byte; the sweep repairs what nothing else would."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from consumers.dispatching import Dispatcher, Handled
from dispatch.model import Answer, Job, NewJob, Policy, RequestStatus, Tick
from infra.keys import Keys
from infra.ports import Presence
from infra.redis_index import TIMER_LEASE_MS, RedisRequestStore, RedisWorkerIndex
from schemas import events as ev
from schemas.topics import REQUEST_STATE
from tests.conftest import TEST_REDIS

pytestmark = pytest.mark.integration

POLICY = Policy(offer_ttl_ms=10_000, radii_km=(2.0, 5.0), retry_idle_ms=3_000)
LON, LAT = 112.94, 28.23
T0 = 1_700_000_000_000


class Shop:
    """A dispatcher's view of one Redis under a prefix of the test's own."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis, self.keys = redis, Keys(prefix, 64)
        self.index = RedisWorkerIndex(redis, self.keys)
        self.store = RedisRequestStore(redis, self.keys)

    def dispatcher(self) -> Dispatcher:
        """A fresh dispatcher process on the same Redis."""
        return Dispatcher(self.index, self.store, POLICY)

    async def outbox(self, rid: str) -> str | None:
        raw = await self.redis.hget(self.keys.request(rid), "o")
        return None if raw is None else str(raw)


@pytest.fixture
async def shop(redis_prefix: str) -> AsyncIterator[Shop]:
    redis = Redis.from_url(TEST_REDIS, decode_responses=True)
    s = Shop(redis, redis_prefix)
    await s.index.apply(
        [Presence(f"w{i}", "checkin", LON + 0.002 * (i + 1), LAT, ("mover",)) for i in range(4)]
    )
    yield s
    await redis.aclose()


def job(rid: str = "R1", headcount: int = 1, deadline: int = T0 + 60_000) -> Job:
    return Job(rid, "G4301001", "mover", headcount, 200.0, LON, LAT, T0, T0, deadline)


def wire(done: Handled) -> list[tuple[str, str, str]]:
    return [(o.topic, o.key, o.message.model_dump_json()) for o in done.wire]


def event_ids(done: Handled) -> list[str]:
    return [json.loads(v)["event_id"] for t, _, v in wire(done) if t != REQUEST_STATE]


async def test_a_redelivery_after_a_crash_publishes_the_saved_events(shop: Shop) -> None:
    crashed = await shop.dispatcher().decide([NewJob(job(headcount=2))], T0)
    assert await shop.outbox("R1") is not None  # saved with the state, never published
    nxt = shop.dispatcher()
    redelivered = await nxt.decide([NewJob(job(headcount=2))], T0 + 3000)
    assert wire(redelivered) == wire(crashed)
    assert event_ids(crashed) == ["om:R1:w0", "om:R1:w1", f"ws:R1:1:2.0:{T0}"]
    snapshot = ev.REQUEST_STATE_SAVED.validate_json(wire(crashed)[-1][2])
    assert (snapshot.version, snapshot.at_ms) == (1, T0)
    await nxt.published(redelivered)
    assert await shop.outbox("R1") is None
    loaded = (await shop.store.load(["R1"]))["R1"]
    assert (loaded.version, loaded.state.status, loaded.outbox) == (1, RequestStatus.OFFERING, ())


async def test_a_leased_timer_publishes_what_a_dead_dispatcher_saved(shop: Shop) -> None:
    d = shop.dispatcher()
    await d.handle([NewJob(job())], T0)
    filled = await d.decide([Answer("R1", "R1:w0", "w0", True)], T0 + 1000)  # then killed
    assert [type(o.message) for o in filled.out] == [ev.WorkerAssigned, ev.RequestFilled, ev.Hired]
    # The request is over, yet its timer stays until its last messages are out: it wakes.
    due = T0 + POLICY.offer_ttl_ms
    assert await shop.store.pop_due(due, 10) == ["R1"]
    assert await shop.store.pop_due(due, 10) == []  # leased to a dispatcher that dies too
    assert await shop.store.pop_due(due + TIMER_LEASE_MS, 10) == ["R1"]
    healer = shop.dispatcher()
    healed = await healer.decide([Tick("R1")], due + TIMER_LEASE_MS)
    assert wire(healed) == wire(filled)
    await healer.published(healed)
    assert await shop.outbox("R1") is None
    assert await shop.redis.zscore(shop.keys.timers(), "R1") is None


async def test_the_sweep_repairs_a_stranded_request_and_a_stale_outbox(shop: Shop) -> None:
    d = shop.dispatcher()
    lost = await d.decide([NewJob(job("R1"))], T0)  # its dispatcher died before publishing
    await d.handle([NewJob(job("R2"))], T0)
    await shop.redis.zrem(shop.keys.timers(), "R2")  # stranded: offering, no timer
    sweeper = shop.dispatcher()
    early = await sweeper.sweep(T0 + 2000)
    assert early.wire == []  # R1's outbox is young: its own batch may still be publishing
    assert await shop.redis.zscore(shop.keys.timers(), "R2") is None  # looked at again first
    assert (await sweeper.sweep(T0 + 3000)).wire == []
    r2 = (await shop.store.load(["R2"]))["R2"].state
    assert await shop.redis.zscore(shop.keys.timers(), "R2") == r2.due_at_ms()
    late = await sweeper.sweep(T0 + 60_000)
    assert wire(late) == wire(lost)
    await sweeper.published(late)
    assert await shop.outbox("R1") is None
    assert (await sweeper.sweep(T0 + 60_000)).wire == []
