"""Hypothesis invariants of the dispatcher (core and shell, on the in-memory twins):
no worker double-booked, no request over-filled, every candidate inside the radius."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.dispatching import Dispatcher
from dispatch.geo import haversine_km
from dispatch.model import Answer, Cancel, Input, Job, NewJob, OfferStatus, Policy, Tick
from infra.memory import MemoryRequestStore, MemoryWorkerIndex
from infra.ports import Presence
from schemas import events as ev

pytestmark = pytest.mark.unit

POLICY = Policy(offer_ttl_ms=10_000, radii_km=(2.0, 5.0, 10.0), retry_idle_ms=3_000)
LON, LAT = 112.94, 28.23
SKILLS = ("bricklayer", "cleaner")

offsets = st.tuples(st.floats(-0.08, 0.08), st.floats(-0.08, 0.08))
workers_st = st.lists(st.tuples(offsets, st.sampled_from(SKILLS)), min_size=1, max_size=14)
requests_st = st.lists(
    st.tuples(offsets, st.sampled_from(SKILLS), st.integers(1, 4)), min_size=1, max_size=6
)
# Each round: which offers get answers (by position, accept or not), and how far time moves.
rounds_st = st.lists(
    st.tuples(
        st.lists(st.tuples(st.integers(0, 50), st.booleans()), max_size=6),
        st.integers(0, 12_000),
        st.booleans(),
    ),
    min_size=1,
    max_size=12,
)


class World:
    def __init__(self) -> None:
        self.index = MemoryWorkerIndex()
        self.store = MemoryRequestStore()
        self.dispatcher = Dispatcher(self.index, self.store, POLICY)
        self.live: list[ev.OfferMade] = []
        self.waves: list[ev.WaveSent] = []
        self.jobs: dict[str, Job] = {}

    async def run(self, inputs: list[Input], now: int) -> None:
        due = await self.store.pop_due(now, 1000)
        for msg in [
            o.message for o in await self.dispatcher.handle(inputs + [Tick(r) for r in due], now)
        ]:
            if isinstance(msg, ev.OfferMade):
                self.live.append(msg)
            elif isinstance(msg, ev.WaveSent):
                self.waves.append(msg)


async def simulate(workers, requests, rounds) -> World:  # type: ignore[no-untyped-def]
    w = World()
    await w.index.apply(
        [
            Presence(f"w{i}", "checkin", LON + dx, LAT + dy, (skill,))
            for i, ((dx, dy), skill) in enumerate(workers)
        ]
    )
    now = 1_000_000
    jobs = [
        Job(f"r{i}", "G4301001", skill, n, 200.0, LON + dx, LAT + dy, now, now, now + 40_000)
        for i, ((dx, dy), skill, n) in enumerate(requests)
    ]
    w.jobs = {j.request_id: j for j in jobs}
    await w.run([NewJob(j) for j in jobs], now)
    for answers, dt, cancel_first in rounds:
        inputs: list[Input] = []
        for pos, accepted in answers:
            if w.live:
                o = w.live[pos % len(w.live)]
                inputs.append(Answer(o.request_id, o.offer_id, o.worker_id, accepted))
        if cancel_first and dt % 7 == 0:
            inputs.append(Cancel(jobs[0].request_id))
        now += dt
        await w.run(inputs, now)
        await check(w)
    return w


async def check(w: World) -> None:
    states = [s for _, s in w.store.states.values()]
    busy = Counter(
        o.worker_id
        for s in states
        for o in s.offers
        if o.status in (OfferStatus.MADE, OfferStatus.ACCEPTED)
    )
    assert all(n == 1 for n in busy.values()), f"double-booked: {busy}"
    for s in states:
        assert s.assigned <= s.job.headcount, "over-filled"
        for o in s.live:
            assert await w.index.holder(o.worker_id) == s.job.request_id
            assert o.worker_id not in w.index.indexed
    for wave in w.waves:
        job = w.jobs[wave.request_id]
        for c in wave.candidates:
            rec = w.index.records[c.worker_id]
            assert haversine_km(job.lon, job.lat, rec.lon, rec.lat) <= wave.radius_km + 1e-6
            assert job.skill in rec.skills


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workers_st, requests_st, rounds_st)
def test_no_double_booking_no_overfill_candidates_inside_radius(workers, requests, rounds) -> None:  # type: ignore[no-untyped-def]
    asyncio.run(simulate(workers, requests, rounds))


@settings(max_examples=60, deadline=None)
@given(workers_st, requests_st, rounds_st)
def test_same_inputs_same_decisions(workers, requests, rounds) -> None:  # type: ignore[no-untyped-def]
    a = asyncio.run(simulate(workers, requests, rounds))
    b = asyncio.run(simulate(workers, requests, rounds))
    assert a.store.states == b.store.states
    assert [o.model_dump() for o in a.live] == [o.model_dump() for o in b.live]


async def _redelivered() -> tuple[int, int]:
    w = World()
    await w.index.apply([Presence("w1", "checkin", LON, LAT, ("mover",))])
    job = Job("r1", "G4301001", "mover", 1, 200.0, LON, LAT, 0, 0, 60_000)
    await w.run([NewJob(job)], 1)
    await w.run([NewJob(job)], 2)  # the same request again, as after a redelivery
    version, state = w.store.states["r1"]
    return version, len(state.offers)


def test_a_redelivered_request_changes_nothing() -> None:
    assert asyncio.run(_redelivered()) == (1, 1)
