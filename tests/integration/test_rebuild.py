"""Redis comes back empty: the services notice, rebuild the cache from the log, carry on.

Each test empties only its own key prefix (other suites share this Redis), in one
transaction, as a Redis restarted without its data would look to the services.
"""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from consumers.services import run_dispatcher, run_presence
from dispatch.model import Job, Offer, OfferStatus, RequestState, RequestStatus
from infra.clock import now_ms
from infra.keys import ASSIGNED_PREFIX, Keys
from infra.publish import Outgoing
from infra.redis_index import RedisRequestStore, RedisWorkerIndex
from infra.settings import Settings
from infra.state_codec import dump_state
from schemas import events as ev
from schemas.topics import OFFER_RESPONSES, REQUEST_EVENTS, REQUEST_STATE, WORKER_EVENTS
from tests.conftest import eventually, running
from tests.integration.helpers import checkin, publisher, tap

pytestmark = pytest.mark.integration

MARKET = ("G4301001", 113.26145, 28.20326)


async def empty_redis(redis: Redis, prefix: str, then: tuple[str, str] | None = None) -> int:
    """Delete every key under the prefix in one step (and optionally set one key after);
    return how many were deleted."""
    keys = [k async for k in redis.scan_iter(match=f"{prefix}:*", count=5000)]
    pipe = redis.pipeline(transaction=True)
    for i in range(0, len(keys), 1000):
        pipe.delete(*keys[i : i + 1000])
    if then is not None:
        pipe.set(then[0], then[1], px=60_000)
    replies = await pipe.execute()
    return sum(replies[: len(replies) - (then is not None)])


async def snapshot(index: RedisWorkerIndex, ids: list[str]) -> dict[str, Any]:
    return {
        "available": await index.available(),
        "records": {w: await index.record(w) for w in ids},
        "holds": {w: await index.holder(w) for w in ids},
    }


async def epoch_back(redis: Redis, keys: Keys) -> bool:
    return bool(await redis.exists(keys.epoch()))


def presence(wid: str, kind: str, lon: float = 0.0, lat: float = 0.0) -> Outgoing:
    at = now_ms()
    msg: ev.WorkerLocated | ev.WorkerWentOffline = (
        ev.WorkerLocated(event_id=f"loc:{wid}", at_ms=at, worker_id=wid, lon=lon, lat=lat)
        if kind == "locate"
        else ev.WorkerWentOffline(event_id=f"off:{wid}", at_ms=at, worker_id=wid)
    )
    return Outgoing(WORKER_EVENTS, wid, msg)


async def test_the_worker_index_comes_back_after_redis_loses_it(
    settings: Settings, redis: Redis, keys: Keys
) -> None:
    _, lon, lat = MARKET
    ids = [f"w{i:03d}" for i in range(60)]
    index = RedisWorkerIndex(redis, keys)
    async with publisher(settings) as pub, running((run_presence, settings)):
        await pub.publish([checkin(w, lon + i * 0.001, lat) for i, w in enumerate(ids)])
        await pub.publish([presence(w, "locate", lon - 0.01, lat + 0.01) for w in ids[:5]])
        await pub.publish([presence(w, "offline") for w in ids[5:10]])

        async def settled() -> bool:
            moved = await index.record(ids[0])
            gone = await index.record(ids[9])
            return (
                await index.available() == 55  # five went offline
                and moved is not None
                and moved.lon == pytest.approx(lon - 0.01)
                and gone is not None
                and not gone.online
            )

        await eventually(settled, what="the presence service to index the workers")
        before = await snapshot(index, ids)

        # Every record, shard and the epoch gone at once (the service may rebuild them within
        # milliseconds, so what is gone is counted in the same step).
        assert await empty_redis(redis, settings.key_prefix) > len(ids) // 2
        await eventually(lambda: epoch_back(redis, keys), what="the cache to be rebuilt")
        assert await snapshot(index, ids) == before


def job(rid: str, headcount: int, at: int) -> Job:
    market, lon, lat = MARKET
    return Job(rid, market, "bricklayer", headcount, 260.0, lon, lat, at, at, at + 300_000)


def offer(oid: str, wid: str, status: OfferStatus, at: int) -> Offer:
    return Offer(oid, wid, status, 1, 0.5, 1.0, at, at + 120_000)


def state_saved(state: RequestState, version: int, at: int) -> Outgoing:
    rid = state.job.request_id
    msg = ev.RequestStateSaved(request_id=rid, version=version, at_ms=at, state=dump_state(state))
    return Outgoing(REQUEST_STATE, rid, msg)


async def test_request_states_holds_and_timers_come_back(
    settings: Settings, redis: Redis, keys: Keys
) -> None:
    _, lon, lat = MARKET
    at = now_ms()
    offered = RequestState(
        job("R-held", 2, at),
        RequestStatus.OFFERING,
        wave=1,
        offers=(offer("o-held", "held", OfferStatus.MADE, at),),
    )
    filled = RequestState(
        job("R-done", 1, at),
        RequestStatus.FILLED,
        wave=1,
        offers=(offer("o-done", "assigned", OfferStatus.ACCEPTED, at),),
    )
    index, store = RedisWorkerIndex(redis, keys), RedisRequestStore(redis, keys)
    async with publisher(settings) as pub:
        await pub.publish([checkin(w, lon, lat) for w in ("held", "assigned", "free")])
        await pub.publish(
            [
                state_saved(RequestState(offered.job), 1, at),  # older versions lose
                state_saved(offered, 2, at),
                state_saved(RequestState(filled.job), 1, at),
                state_saved(filled, 3, at),
            ]
        )

    async def restored() -> None:
        assert await index.holder("held") == "R-held"
        assert await index.holder("assigned") == ASSIGNED_PREFIX + "R-done"
        assert await index.holder("free") is None
        assert await index.available() == 1  # held and assigned workers stay out of the index
        stored = await store.load(["R-held", "R-done"])
        assert {rid: (s.version, s.state, s.outbox) for rid, s in stored.items()} == {
            "R-held": (2, offered, ()),
            "R-done": (3, filled, ()),
        }
        assert await redis.zscore(keys.timers(), "R-held") == offered.due_at_ms()
        assert await redis.zscore(keys.timers(), "R-done") is None  # over: no timer

    services = ((run_presence, settings), (run_dispatcher, settings))
    async with running(*services):
        await eventually(lambda: epoch_back(redis, keys), what="the first start's rebuild")
        await restored()
        await empty_redis(redis, settings.key_prefix)
        await eventually(lambda: epoch_back(redis, keys), what="the cache to be rebuilt")
        await restored()


async def test_an_answer_sent_during_the_rebuild_is_applied_after_it(
    settings: Settings, redis: Redis, keys: Keys
) -> None:
    _, lon, lat = MARKET
    at = now_ms()
    offered = RequestState(
        job("R-answer", 1, at),
        RequestStatus.OFFERING,
        wave=1,
        offers=(offer("o-answer", "w-answer", OfferStatus.MADE, at),),
    )
    index = RedisWorkerIndex(redis, keys)
    async with (
        publisher(settings) as pub,
        tap(settings, REQUEST_EVENTS) as seen,
        running((run_dispatcher, settings)),
    ):
        await pub.publish([checkin("w-answer", lon, lat), state_saved(offered, 1, at)])
        await eventually(lambda: epoch_back(redis, keys), what="the first start's rebuild")
        assert await index.holder("w-answer") == "R-answer"

        # Redis comes back empty while another process holds the request store's rebuild.
        lock = keys.epoch("requests")
        await empty_redis(redis, settings.key_prefix, then=(lock, "run:someone-else"))

        async def rebuilding() -> bool:
            return str(await redis.get(keys.epoch("workers"))).startswith("done:")

        await eventually(rebuilding, what="the dispatcher to start rebuilding")
        answer = ev.OfferAccepted(
            event_id="acc-1",
            at_ms=now_ms(),
            offer_id="o-answer",
            request_id="R-answer",
            worker_id="w-answer",
        )
        await pub.publish([Outgoing(OFFER_RESPONSES, "R-answer", answer)])
        await redis.delete(lock)  # the other process died: the dispatcher takes the part over

        async def assigned() -> bool:
            return any(e.request_id == "R-answer" for e in seen.of(ev.WorkerAssigned))

        await eventually(assigned, what="the answer to be applied")
        assert await index.holder("w-answer") == ASSIGNED_PREFIX + "R-answer"
        assert [e.request_id for e in seen.of(ev.RequestFilled)] == ["R-answer"]
