"""Failure isolation on the real Redis: values Redis would refuse, a key of the wrong type, a
corrupt stored state. The poisoned request is dead-lettered; every other request of its batch
gets its offers and its timer, and no worker stays held for the poisoned one."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from consumers.dispatching import Dispatcher, Handled
from dispatch.model import Answer, Input, Job, NewJob, Policy
from infra.keys import REQUEST_STATE_TTL_MAX_MS, Keys
from infra.ports import Presence
from infra.redis_index import RedisRequestStore, RedisWorkerIndex
from schemas import events as ev
from tests.conftest import TEST_REDIS

pytestmark = pytest.mark.integration

POLICY = Policy(offer_ttl_ms=10_000, radii_km=(2.0, 5.0), retry_idle_ms=3_000)
LON, LAT = 112.94, 28.23
T0 = 1_700_000_000_000
GOOD = ("R1", "R2", "R3")
WORKERS = 8


class Shop:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis, self.keys = redis, Keys(prefix, 64)
        self.index = RedisWorkerIndex(redis, self.keys)
        self.store = RedisRequestStore(redis, self.keys)
        self.dispatcher = Dispatcher(self.index, self.store, POLICY)

    async def timed(self) -> set[str]:
        return {str(rid) for rid in await self.redis.zrange(self.keys.timers(), 0, -1)}


@pytest.fixture
async def shop(redis_prefix: str) -> AsyncIterator[Shop]:
    redis = Redis.from_url(TEST_REDIS, decode_responses=True)
    s = Shop(redis, redis_prefix)
    await s.index.apply(
        [
            Presence(f"w{i}", "checkin", LON + 0.002 * (i + 1), LAT, ("mover",))
            for i in range(WORKERS)
        ]
    )
    yield s
    await redis.aclose()


def job(rid: str, deadline: int = T0 + 60_000) -> Job:
    return Job(rid, "G4301001", "mover", 1, 200.0, LON, LAT, T0, T0, deadline)


def offered(done: Handled) -> set[str]:
    return {o.message.request_id for o in done.out if isinstance(o.message, ev.OfferMade)}


def letters(done: Handled) -> list[ev.DeadLetter]:
    return [o.message for o in done.wire if isinstance(o.message, ev.DeadLetter)]


async def held_for(shop: Shop) -> list[str]:
    holders = [await shop.index.holder(f"w{i}") for i in range(WORKERS)]
    return sorted(h for h in holders if h is not None)


async def test_a_deadline_at_the_end_of_time_does_not_crash_the_batch(shop: Shop) -> None:
    batch: list[Input] = [NewJob(job(r)) for r in GOOD]
    batch.insert(1, NewJob(job("FAR", deadline=2**63 - 1)))
    done = await shop.dispatcher.decide(batch, T0)
    assert offered(done) == {*GOOD, "FAR"} and letters(done) == []
    assert await shop.timed() == {*GOOD, "FAR"}
    assert 0 < await shop.redis.pttl(shop.keys.request("FAR")) <= REQUEST_STATE_TTL_MAX_MS
    await shop.dispatcher.published(done)
    far = (await shop.store.load(["FAR"]))["FAR"]
    assert far.state.job.deadline_at_ms == 2**63 - 1 and far.outbox == ()


async def test_a_key_redis_will_not_write_poisons_only_its_request(shop: Shop) -> None:
    await shop.redis.set(shop.keys.request("BAD"), "not a hash")  # every script on it errors
    batch: list[Input] = [NewJob(job(r)) for r in ("R1", "BAD", "R2", "R3")]
    done = await shop.dispatcher.decide(batch, T0)
    assert offered(done) - {"BAD"} == set(GOOD)
    assert await shop.timed() == set(GOOD)
    assert await held_for(shop) == sorted(GOOD)  # BAD's workers went back
    [letter] = letters(done)
    assert letter.key == "BAD" and "WRONGTYPE" in letter.reason


async def test_a_corrupt_stored_state_poisons_only_its_request(shop: Shop) -> None:
    d = shop.dispatcher
    await d.handle([NewJob(job(r)) for r in ("R1", "BAD")], T0)
    await shop.redis.hset(shop.keys.request("BAD"), "s", "{not json")
    assert await held_for(shop) == ["BAD", "R1"]
    # R1's worker declines; BAD gets an answer too, and two new requests come in.
    holders = {f"w{i}": await d.index.holder(f"w{i}") for i in range(WORKERS)}
    r1_worker = next(w for w, rid in holders.items() if rid == "R1")
    batch: list[Input] = [
        Answer("R1", f"R1:{r1_worker}", r1_worker, False),
        Answer("BAD", "BAD:w9", "w9", True),
        NewJob(job("R2")),
        NewJob(job("R3")),
    ]
    done = await d.decide(batch, T0 + 1000)
    assert offered(done) == set(GOOD)  # R1's next wave, and the two new ones
    assert {"R1", "R2", "R3"} <= await shop.timed()
    [letter] = letters(done)
    assert letter.key == "BAD" and letter.source_topic == "gig.offer-responses.v1"
