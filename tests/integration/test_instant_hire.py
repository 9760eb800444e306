"""The whole path on the real broker, Redis and PostgreSQL: a kiosk request is matched,
offered, accepted and filled."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from consumers.services import run_dispatcher, run_presence
from dispatch.geo import haversine_km
from infra.keys import ASSIGNED_PREFIX, Keys
from infra.redis_index import RedisWorkerIndex
from infra.settings import PolicySettings, Settings
from producers.workers import Behaviour
from schemas import events as ev
from schemas.topics import OFFERS, REQUEST_EVENTS
from tests.conftest import eventually, running
from tests.integration.helpers import answering, checkin, hire, publisher, tap

pytestmark = pytest.mark.integration

MARKET = ("G4301001", 113.26145, 28.20326)


async def test_a_request_is_offered_accepted_and_filled(settings: Settings, redis: Redis) -> None:
    _, lon, lat = MARKET
    # Five bricklayers 0.6..3 km east of the market, one cleaner right beside it.
    workers = {f"b{i}": (lon + i * 0.0058, lat) for i in range(1, 6)}
    index = RedisWorkerIndex(redis, Keys(settings.key_prefix, settings.worker_buckets))
    async with (
        running((run_presence, settings), (run_dispatcher, settings)),
        publisher(settings) as pub,
        tap(settings, OFFERS, REQUEST_EVENTS) as seen,
    ):
        await pub.publish([checkin(w, x, y) for w, (x, y) in workers.items()])
        await pub.publish([checkin("c1", lon, lat, "cleaner")])
        await eventually(lambda: _available(index, 6), what="six workers in the index")
        everyone_accepts = Behaviour(accept=1.0, silent=0.0, min_delay_ms=20, max_delay_ms=60)
        async with answering(settings, pub, everyone_accepts, seed=1):
            await pub.publish([hire("R-fill", headcount=3)])
            await eventually(lambda: _has(seen, ev.RequestFilled), what="the request to fill")

    assigned = [e for e in seen.of(ev.WorkerAssigned) if e.request_id == "R-fill"]
    assert sorted(e.worker_id for e in assigned) == ["b1", "b2", "b3"]  # the three nearest
    assert [e.assigned for e in assigned] == [1, 2, 3]
    made = [o for o in seen.of(ev.OfferMade) if o.request_id == "R-fill"]
    assert {o.worker_id for o in made} == {"b1", "b2", "b3"}
    for o in made:
        x, y = workers[o.worker_id]
        assert o.distance_km == pytest.approx(haversine_km(lon, lat, x, y), abs=0.01)
        assert o.expires_at_ms - o.at_ms == settings.policy.offer_ttl_s * 1000
    for w in ("b1", "b2", "b3"):
        assert await index.holder(w) == ASSIGNED_PREFIX + "R-fill"
    assert await index.available() == 3  # b4, b5 and the cleaner are still free
    wave = seen.of(ev.WaveSent)[0]
    assert [c.outcome for c in wave.candidates] == ["offered"] * 3 + ["not_needed"] * 2


async def test_nobody_near_widens_then_expires_with_reasons(settings: Settings) -> None:
    quick = settings.model_copy(
        update={"policy": PolicySettings(radii_km=(2.0, 4.0), retry_idle_s=0.5, offer_ttl_s=1.0)}
    )
    async with (
        running((run_dispatcher, quick)),
        publisher(quick) as pub,
        tap(quick, REQUEST_EVENTS) as seen,
    ):
        await pub.publish([hire("R-lonely", skill="welder", deadline_s=2.0)])
        await eventually(lambda: _has(seen, ev.RequestExpired), what="the request to expire")
    widened = [e.radius_km for e in seen.of(ev.RadiusWidened) if e.request_id == "R-lonely"]
    assert widened == [4.0]
    expired = seen.of(ev.RequestExpired)[0]
    assert (expired.assigned, expired.headcount, expired.offers_made) == (0, 1, 0)


async def _available(index: RedisWorkerIndex, n: int) -> bool:
    return await index.available() == n


async def _has(seen: object, kind: type) -> bool:
    return bool(seen.of(kind))  # type: ignore[attr-defined]
