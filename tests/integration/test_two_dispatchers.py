"""Two dispatcher instances in one consumer group, a burst of requests for a few workers:
no worker ever holds two live offers or assignments, no request gets more than its headcount."""

from __future__ import annotations

from collections import defaultdict
from itertools import pairwise

import pytest
from redis.asyncio import Redis

from consumers.services import run_dispatcher, run_presence
from infra.keys import Keys
from infra.redis_index import RedisRequestStore, RedisWorkerIndex
from infra.settings import PolicySettings, Settings
from producers.workers import Behaviour
from schemas import events as ev
from schemas.topics import OFFER_RESPONSES, OFFERS, REQUEST_EVENTS
from tests.conftest import eventually, running
from tests.integration.helpers import Tap, answering, checkin, hire, publisher, tap

pytestmark = pytest.mark.integration

LON, LAT = 113.26145, 28.20326  # market G4301001
WORKERS = [f"w{i}" for i in range(5)]
REQUESTS = {f"R-burst-{i:02d}": 1 + i % 3 for i in range(14)}


async def test_two_dispatchers_never_double_book(settings: Settings, redis: Redis) -> None:
    s = settings.model_copy(update={"policy": PolicySettings(offer_ttl_s=1.0, radii_km=(5.0,))})
    index = RedisWorkerIndex(redis, Keys(s.key_prefix, s.worker_buckets))
    async with (
        running((run_presence, s), (run_dispatcher, s), (run_dispatcher, s)),
        publisher(s) as pub,
        tap(s, OFFERS, REQUEST_EVENTS, OFFER_RESPONSES) as seen,
    ):
        await pub.publish([checkin(w, LON + 0.003 * i, LAT) for i, w in enumerate(WORKERS)])
        await eventually(lambda: _count(index, len(WORKERS)), what="workers indexed")
        # Some accept, some decline, some stay silent so their offers lapse and move on.
        mixed = Behaviour(accept=0.4, silent=0.2, min_delay_ms=10, max_delay_ms=300)
        async with answering(s, pub, mixed, seed=5):
            burst = [hire(rid, headcount=n, deadline_s=6.0) for rid, n in REQUESTS.items()]
            await pub.publish(burst)
            await eventually(lambda: _all_ended(seen), timeout_s=40, what="every request to end")

    assert len(seen.of(ev.OfferMade)) >= len(WORKERS)  # there was real competition
    _assert_no_overlapping_offers(seen)
    assigned: dict[str, set[str]] = defaultdict(set)
    for a in seen.of(ev.WorkerAssigned):
        assigned[a.request_id].add(a.worker_id)
    for rid, workers in assigned.items():
        assert len(workers) <= REQUESTS[rid], f"{rid} over-filled: {workers}"
    everyone = [w for ws in assigned.values() for w in ws]
    assert len(everyone) == len(set(everyone)), "a worker was assigned twice"
    states = await RedisRequestStore(redis, Keys(s.key_prefix)).load(list(REQUESTS))
    assert {rid: stored.state.assigned for rid, stored in states.items()} == {
        rid: len(assigned.get(rid, ())) for rid in REQUESTS
    }


def _assert_no_overlapping_offers(seen: Tap) -> None:
    """Per worker, each offer is made only after the previous one ended, and never after an
    accepted one. The end is taken as the earliest sign of it (answer or withdrawal), which is
    no later than the dispatcher's own release, so this can only under-report an overlap."""
    ends: dict[str, int] = {}
    for w in seen.of(ev.OfferWithdrawn):
        ends[w.offer_id] = min(ends.get(w.offer_id, w.at_ms), w.at_ms)
    for d in seen.of(ev.OfferDeclined):
        ends[d.offer_id] = min(ends.get(d.offer_id, d.at_ms), d.at_ms)
    accepted = {a.offer_id for a in seen.of(ev.WorkerAssigned)}
    by_worker: dict[str, list[ev.OfferMade]] = defaultdict(list)
    for o in seen.of(ev.OfferMade):
        by_worker[o.worker_id].append(o)
    for worker, offers in by_worker.items():
        offers.sort(key=lambda o: o.at_ms)
        for before, after in pairwise(offers):
            assert before.offer_id not in accepted, f"{worker} offered again after assignment"
            assert before.offer_id in ends, f"{worker}: {before.offer_id} never ended"
            assert after.at_ms >= ends[before.offer_id], f"{worker} held two live offers"


async def _count(index: RedisWorkerIndex, n: int) -> bool:
    return await index.available() == n


async def _all_ended(seen: Tap) -> bool:
    final = (ev.RequestFilled, ev.RequestExpired)
    return {e.request_id for e in seen.records_of(final)} >= REQUESTS.keys()
