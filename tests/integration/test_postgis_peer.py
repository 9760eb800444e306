"""The PostgreSQL + PostGIS benchmark peer (``bench.postgis``) decides correctly: concurrent
decisions never hold one worker twice, every hold has the request's skill within 3 km, and a
request with fewer workers than its headcount holds just those.

Runs against the real PostgreSQL with PostGIS, in a database of its own, dropped afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import NamedTuple

import asyncpg
import pytest

from bench import postgis
from bench.population import Province, check_ins, worker_id
from dispatch.geo import haversine_km
from dispatch.model import Job
from infra.ports import Presence
from tests.conftest import TEST_DSN

pytestmark = pytest.mark.integration

WORKERS = 2000
REQUESTS = 200
CONNECTIONS = 8
NOW_MS = 1_800_000_000_000
RADIUS_KM = postgis.RADIUS_M / 1000
# UTM metres against great-circle metres on a sphere: the projection's scale (up to 0.1 % in
# Hunan) and the sphere's curvature against the ellipsoid's (up to 0.35 %) make them differ.
PROJECTION_SLACK = 1.005


class Peer(NamedTuple):
    dsn: str
    province: Province
    workers: dict[str, Presence]


@pytest.fixture(scope="module")
async def peer() -> AsyncIterator[Peer]:
    dsn = postgis.server_dsn(TEST_DSN, f"gig_test_postgis_{uuid.uuid4().hex[:8]}")
    province = Province.load()
    try:
        await postgis.prepare(dsn, province, WORKERS, progress=lambda _: None)
        yield Peer(dsn, province, {p.worker_id: p for p in check_ins(province, WORKERS)})
    finally:
        await postgis.drop_database(dsn)


async def decide(peer: Peer, requests: list[Job]) -> dict[str, list[str]]:
    """Decide the requests on CONNECTIONS connections; the workers each request held."""
    async with postgis.pool_of(peer.dsn, CONNECTIONS) as pool:
        await postgis.release(pool)
        got = await postgis.decide_all(pool, CONNECTIONS, requests)
    return {rid: [worker_id(n) for n in ids] for rid, ids in got.held.items()}


async def holds(dsn: str) -> dict[str, str]:
    """Worker -> request, as the holds table has it."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT id, held_by FROM worker WHERE held_by IS NOT NULL")
    finally:
        await conn.close()
    return {worker_id(r["id"]): r["held_by"] for r in rows}


def eligible(peer: Peer, job: Job, radius_km: float = RADIUS_KM) -> set[str]:
    """The workers with the job's skill within ``radius_km``, by great-circle distance."""
    return {
        w.worker_id
        for w in peer.workers.values()
        if job.skill in w.skills and haversine_km(job.lon, job.lat, w.lon, w.lat) <= radius_km
    }


def crowded(peer: Peer) -> list[Job]:
    """REQUESTS requests for one skill at one place where many workers have it: they fight."""
    base = postgis.same_requests(peer.province, REQUESTS, NOW_MS)
    spot = max(base, key=lambda j: len(eligible(peer, j)))
    return [replace(spot, request_id=f"crowd-{n:04d}", headcount=3) for n in range(REQUESTS)]


def assert_each_worker_held_once(decided: dict[str, list[str]], table: dict[str, str]) -> None:
    returned = [(w, rid) for rid, ids in decided.items() for w in ids]
    assert len(returned) == len({w for w, _ in returned}), "a worker was held twice"
    assert dict(returned) == table  # what each decision returned is what the table holds


async def test_concurrent_decisions_never_hold_a_worker_twice(peer: Peer) -> None:
    requests = postgis.same_requests(peer.province, REQUESTS, NOW_MS)
    decided = await decide(peer, requests)
    assert len(decided) == len(requests)
    assert_each_worker_held_once(decided, await holds(peer.dsn))

    fight = crowded(peer)
    decided = await decide(peer, fight)
    table = await holds(peer.dsn)
    assert_each_worker_held_once(decided, table)
    # 600 places for fewer workers: every worker with the skill in reach is held, once.
    inner = eligible(peer, fight[0], RADIUS_KM / PROJECTION_SLACK)
    assert inner <= set(table) <= eligible(peer, fight[0], RADIUS_KM * PROJECTION_SLACK)


async def test_holds_have_the_skill_within_the_radius(peer: Peer) -> None:
    requests = postgis.same_requests(peer.province, REQUESTS, NOW_MS)
    decided = await decide(peer, requests)
    table = await holds(peer.dsn)
    assert table, "no request held anyone: the checks below would prove nothing"
    by_id = {j.request_id: j for j in requests}
    for wid, rid in table.items():
        job, worker = by_id[rid], peer.workers[wid]
        assert job.skill in worker.skills
        distance = haversine_km(job.lon, job.lat, worker.lon, worker.lat)
        assert distance <= RADIUS_KM * PROJECTION_SLACK
    # Fill or not: a request short of its headcount left no free worker in reach behind.
    for job in requests:
        if len(decided[job.request_id]) < postgis.wanted(job):
            assert eligible(peer, job, RADIUS_KM / PROJECTION_SLACK) <= set(table)


async def test_fewer_workers_than_headcount_holds_just_those(peer: Peer) -> None:
    job = short_handed(peer)
    decided = await decide(peer, [job])
    assert set(decided[job.request_id]) == eligible(peer, job)
    assert len(decided[job.request_id]) < job.headcount


def short_handed(peer: Peer) -> Job:
    """A request for ten at a worker's place with fewer than ten of the skill in reach, and
    nobody near the edge of the radius (where the two distance measures may disagree)."""
    template = postgis.same_requests(peer.province, 1, NOW_MS)[0]
    for w in peer.workers.values():
        job = replace(template, skill=w.skills[0], lon=w.lon, lat=w.lat, headcount=10)
        inner = eligible(peer, job, RADIUS_KM / PROJECTION_SLACK)
        if len(inner) < job.headcount and inner == eligible(peer, job, RADIUS_KM * 1.01):
            return replace(job, request_id=f"short-{w.worker_id}")
    raise AssertionError("no short-handed place in the population")
