"""A hired worker's job on the real broker, Redis and PostgreSQL: hired with the job's details,
arrived, done, back in the pool and offered the next job; a no-show frees a worker too, and
the auditor finds nobody double-booked though one worker held two jobs in turn."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from consumers.services import run_dispatcher, run_presence
from infra.audit import double_booked
from infra.clock import now_ms
from infra.keys import ASSIGNED_PREFIX, Keys
from infra.publish import Outgoing
from infra.redis_index import RedisWorkerIndex
from infra.settings import Settings
from producers.workers import Behaviour
from schemas import events as ev
from schemas.topics import HIRE_REQUESTS, OFFERS, REQUEST_EVENTS
from tests.conftest import eventually, running
from tests.integration.helpers import answering, checkin, hire, publisher, tap

pytestmark = pytest.mark.integration

LON, LAT = 113.26145, 28.20326  # G4301001, 长沙市第1零工市场


def report(rid: str, worker: str, step: str, by: str = "station", reason: str = "") -> Outgoing:
    msg = ev.JobReported(
        event_id=f"jr:{rid}:{worker}:{step}", at_ms=now_ms(), request_id=rid, worker_id=worker,
        market_id="G4301001", step=step, by=by, reason=reason,  # type: ignore[arg-type]
    )  # fmt: skip
    return Outgoing(HIRE_REQUESTS, rid, msg)


def described(rid: str) -> Outgoing:
    out = hire(rid, headcount=2)
    msg = out.message.model_copy(  # type: ignore[attr-defined]
        update={"note": "砌墙，8点到17点", "contact": "0731-8888", "address": "岳麓区 12 号"}
    )
    return Outgoing(out.topic, out.key, msg)


async def test_hired_arrived_done_and_offered_the_next_job(
    settings: Settings, redis: Redis
) -> None:
    index = RedisWorkerIndex(redis, Keys(settings.key_prefix, settings.worker_buckets))
    everyone_accepts = Behaviour(accept=1.0, silent=0.0, min_delay_ms=20, max_delay_ms=60)
    async with (
        running((run_presence, settings), (run_dispatcher, settings)),
        publisher(settings) as pub,
        tap(settings, OFFERS, REQUEST_EVENTS) as seen,
    ):
        await pub.publish([checkin("b1", LON + 0.001, LAT), checkin("b2", LON + 0.002, LAT)])
        await eventually(lambda: _available(index, 2), what="two workers in the index")
        async with answering(settings, pub, everyone_accepts, seed=1):
            await pub.publish([described("R-job")])
            await eventually(lambda: _count(seen, ev.Hired, "R-job", 2), what="two hires")
            no_show = report("R-job", "b2", "no_show", reason="never came")
            await pub.publish([report("R-job", "b1", "arrived"), no_show])
            await pub.publish([report("R-job", "b1", "done", by="worker")])
            await eventually(lambda: _count(seen, ev.JobChanged, "R-job", 3), what="three steps")
            await eventually(lambda: _available(index, 2), what="both back in the pool")
            await pub.publish([hire("R-next")])
            await eventually(lambda: _count(seen, ev.Hired, "R-next", 1), what="the next hire")

    offer = next(o for o in seen.of(ev.OfferMade) if o.request_id == "R-job")
    assert (offer.note, offer.headcount, offer.address) == ("砌墙，8点到17点", 2, "岳麓区 12 号")
    assert (offer.market_name_zh, offer.market_name_en) == (
        "长沙市第1零工市场",
        "Changsha Gig Market 1",
    )
    hired = {h.worker_id: h for h in seen.of(ev.Hired) if h.request_id == "R-job"}
    assert set(hired) == {"b1", "b2"}
    assert (hired["b1"].contact, hired["b1"].others, hired["b1"].wage_yuan_per_day) == (
        "0731-8888", 1, 260.0)  # fmt: skip
    steps = [(c.worker_id, c.status, c.by, c.reason) for c in seen.of(ev.JobChanged)]
    assert sorted(steps) == [
        ("b1", "arrived", "station", ""),
        ("b1", "done", "worker", ""),
        ("b2", "no_show", "station", "never came"),
    ]
    nxt = next(h for h in seen.of(ev.Hired) if h.request_id == "R-next")
    assert await index.holder(nxt.worker_id) == ASSIGNED_PREFIX + "R-next"
    # Hired twice in turn is not double-booked; the auditor reads the log the same way.
    assert double_booked(seen.of(ev.WorkerAssigned) + seen.of(ev.JobChanged)) == []


async def _available(index: RedisWorkerIndex, n: int) -> bool:
    return await index.available() == n


async def _count(seen: object, kind: type, rid: str, n: int) -> bool:
    return sum(1 for m in seen.of(kind) if m.request_id == rid) >= n  # type: ignore[attr-defined]
