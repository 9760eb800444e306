"""The outbox through the running service: a dispatcher killed between saving a decision and
publishing it left the decision's messages in Redis; the redelivered request makes the next
dispatcher publish them, the same bytes with the same event ids, and clear the outbox."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest
from redis.asyncio import Redis

from consumers.dispatching import Dispatcher, job_from
from consumers.services import run_dispatcher, run_presence
from dispatch.model import NewJob
from infra import pg
from infra.clients import policy_from
from infra.clock import now_ms
from infra.keys import Keys
from infra.publish import Outgoing
from infra.redis_index import RedisRequestStore, RedisWorkerIndex
from infra.settings import Settings
from schemas import events as ev
from schemas.topics import OFFERS, REQUEST_EVENTS, REQUEST_STATE
from tests.conftest import eventually, running
from tests.integration.helpers import checkin, hire, publisher, tap

pytestmark = pytest.mark.integration

MARKET = "G4301001"


async def test_a_redelivered_request_publishes_what_a_killed_dispatcher_saved(
    settings: Settings, redis: Redis
) -> None:
    keys = Keys(settings.key_prefix, settings.worker_buckets)
    index, store = RedisWorkerIndex(redis, keys), RedisRequestStore(redis, keys)
    lon, lat = (await pg.market_places(settings.pg_dsn))[MARKET]
    request = hire("R-crash", MARKET, headcount=2)
    assert isinstance(request.message, ev.HireRequested)
    async with (
        running((run_presence, settings), (run_dispatcher, settings)),
        publisher(settings) as pub,
        tap(settings, OFFERS, REQUEST_EVENTS, REQUEST_STATE) as seen,
    ):
        await pub.publish([checkin(f"b{i}", lon + i * 0.003, lat) for i in range(1, 4)])
        await eventually(lambda: _available(index, 3), what="three workers in the index")
        # A dispatcher that took the request, saved its decision, and died before publishing.
        dying = Dispatcher(index, store, policy_from(settings.policy))
        lost = await dying.decide([NewJob(job_from(request.message, (lon, lat)))], now_ms())
        assert await redis.hexists(keys.request("R-crash"), "o")
        # Its offsets were never committed: the request comes again, to a live dispatcher.
        await pub.publish([request])
        await eventually(
            lambda: _cleared(redis, keys), what="the outbox to be published and cleared"
        )
        await eventually(lambda: _seen_all(seen.records, lost.wire), what="the lost messages")

    ids = [json.loads(v)["event_id"] for t, v, _ in seen.records if t != REQUEST_STATE]
    lost_ids = [json.loads(o.message.model_dump_json())["event_id"] for o in lost.wire[:-1]]
    assert set(lost_ids) <= set(ids)
    wave = [m for m in seen.of(ev.WaveSent) if m.request_id == "R-crash"]
    assert {w.event_id for w in wave} == {lost_ids[-1]}  # the dead one's wave, not a new one
    assert {o.worker_id for o in seen.of(ev.OfferMade)} == {"b1", "b2"}


async def _available(index: RedisWorkerIndex, n: int) -> bool:
    return await index.available() == n


async def _cleared(redis: Redis, keys: Keys) -> bool:
    return not await redis.hexists(keys.request("R-crash"), "o")


async def _seen_all(records: list[tuple[str, bytes, object]], wire: Sequence[Outgoing]) -> bool:
    got = {(t, v) for t, v, _ in records}
    return all((o.topic, o.message.model_dump_json().encode()) in got for o in wire)
