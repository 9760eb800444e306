"""One contract suite, run against the in-memory twins and the real Redis adapters, on one
Redis and on a Redis Cluster of three primaries and three replicas."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from dispatch.model import Job, RequestState, RequestStatus, SearchSpec
from infra.clients import redis_session
from infra.keys import ASSIGNED_PREFIX, Keys
from infra.memory import MemoryRequestStore, MemoryWorkerIndex
from infra.ports import Envelope, Presence, RequestStore, Stored, WorkerIndex, Write
from infra.redis_cluster import Cluster
from infra.redis_index import TIMER_LEASE_MS, RedisRequestStore, RedisWorkerIndex
from infra.redis_nodes import AnyRedis
from infra.settings import Settings
from infra.state_codec import dump_state, snapshot
from schemas.topics import OFFERS
from tests.conftest import TEST_REDIS

pytestmark = pytest.mark.contract

LON, LAT = 112.94, 28.23  # Changsha


KINDS = ["memory", "redis", "redis-cluster"]


@contextlib.asynccontextmanager
async def client(kind: str, request: pytest.FixtureRequest) -> AsyncIterator[AnyRedis]:
    """One Redis, or the session's Redis Cluster (started only when a test asks for it)."""
    if kind == "redis":
        settings = Settings(redis_url=TEST_REDIS, _env_file=None)
    else:
        cluster: Cluster = request.getfixturevalue("redis_cluster")
        settings = Settings(redis_url=cluster.url, redis_cluster=True, _env_file=None)
    async with redis_session(settings) as redis:
        yield redis


@pytest.fixture(params=KINDS)
async def index(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[WorkerIndex]:
    if request.param == "memory":
        yield MemoryWorkerIndex()
        return
    async with client(request.param, request) as redis:
        yield RedisWorkerIndex(redis, Keys(redis_prefix, 64))


@pytest.fixture(params=KINDS)
async def store(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[RequestStore]:
    if request.param == "memory":
        yield MemoryRequestStore()
        return
    async with client(request.param, request) as redis:
        yield RedisRequestStore(redis, Keys(redis_prefix))


def spec(skill: str = "mover", radius: float = 5.0, count: int = 10) -> SearchSpec:
    return SearchSpec("R1", skill, LON, LAT, radius, count)


async def checkin(
    index: WorkerIndex, wid: str, dlon: float, skills: tuple[str, ...] = ("mover",)
) -> None:
    await index.apply([Presence(wid, "checkin", LON + dlon, LAT, skills)])


async def found(index: WorkerIndex, s: SearchSpec | None = None) -> list[str]:
    return [c.worker_id for c in (await index.search([s or spec()]))[0]]


async def test_search_finds_checked_in_workers_nearest_first_within_radius(
    index: WorkerIndex,
) -> None:
    await checkin(index, "far", 0.2)  # ~20 km east
    await checkin(index, "b", 0.02)
    await checkin(index, "a", 0.01)
    await checkin(index, "other-skill", 0.0, ("cook",))
    result = (await index.search([spec()]))[0]
    assert [c.worker_id for c in result] == ["a", "b"]
    assert 0.9 < result[0].distance_km < 1.1
    assert await found(index, spec(radius=30.0)) == ["a", "b", "far"]
    assert await found(index, spec(radius=30.0, count=1)) == ["a"]


async def test_search_crosses_cell_borders(index: WorkerIndex) -> None:
    # 113.0 °E is a cell border: a worker just across it is still found.
    await index.apply([Presence("east", "checkin", 113.001, 28.23, ("mover",))])
    s = SearchSpec("R1", "mover", 112.999, 28.23, 2.0, 10)
    assert await found(index, s) == ["east"]


async def test_moving_and_going_offline(index: WorkerIndex) -> None:
    await checkin(index, "a", 0.01)
    await index.apply([Presence("a", "locate", LON + 0.3, LAT)])
    assert await found(index) == []
    assert await found(index, spec(radius=40.0)) == ["a"]
    await index.apply([Presence("a", "offline")])
    assert await found(index, spec(radius=40.0)) == []
    rec = await index.record("a")
    assert rec is not None and not rec.online and rec.skills == ("mover",)
    await index.apply([Presence("ghost", "locate", LON, LAT)])  # unknown worker: ignored
    assert await index.record("ghost") is None


async def test_a_worker_in_several_skills_leaves_every_shard_when_held(index: WorkerIndex) -> None:
    await checkin(index, "a", 0.01, ("mover", "cleaner"))
    assert await index.hold([("a", "R1")], 60_000) == [True]
    assert await found(index, spec("cleaner")) == []
    assert await found(index, spec("mover")) == []


async def test_one_hold_per_worker(index: WorkerIndex) -> None:
    await checkin(index, "a", 0.01)
    await checkin(index, "b", 0.02)
    assert await index.hold([("a", "R1"), ("a", "R2"), ("b", "R2")], 60_000) == [True, False, True]
    assert await index.holder("a") == "R1"
    assert await found(index) == []
    assert await index.available() == 0


async def test_release_returns_online_workers_to_the_index(index: WorkerIndex) -> None:
    await checkin(index, "a", 0.01)
    await checkin(index, "b", 0.02)
    await index.hold([("a", "R1"), ("b", "R1")], 60_000)
    await index.apply([Presence("b", "offline")])
    await index.release([("a", "R2")])  # not R2's hold: nothing happens
    assert await index.holder("a") == "R1"
    await index.release([("a", "R1"), ("b", "R1")])
    assert await index.holder("a") is None
    assert await found(index) == ["a"]  # b is offline, so stays out


async def test_assignment_keeps_the_worker_out_until_their_job_ends(
    index: WorkerIndex,
) -> None:
    await checkin(index, "a", 0.01)
    await index.hold([("a", "R1")], 60_000)
    assert await index.assign([("a", "R1"), ("a", "R2")]) == [True, False]
    assert await index.holder("a") == ASSIGNED_PREFIX + "R1"
    await index.release([("a", "R1")])  # an assignment is not an offer's hold
    assert await found(index) == []
    await index.apply([Presence("a", "locate", LON + 0.01, LAT)])
    assert await found(index) == []
    await checkin(index, "a", 0.01)  # checking in again while at work changes nothing
    assert await index.holder("a") == ASSIGNED_PREFIX + "R1"
    assert await found(index) == []
    await index.unassign([("a", "R1")])
    assert await index.holder("a") is None
    assert await found(index) == ["a"]


async def test_a_job_that_ends_returns_its_worker_where_they_are(index: WorkerIndex) -> None:
    await checkin(index, "a", 0.01)
    await checkin(index, "b", 0.02)
    await index.hold([("a", "R1"), ("b", "R1")], 60_000)
    await index.assign([("a", "R1"), ("b", "R1")])
    await index.apply([Presence("a", "locate", LON + 0.03, LAT), Presence("b", "offline")])
    await index.unassign([("a", "R2")])  # not R2's job: nothing happens
    assert await index.holder("a") == ASSIGNED_PREFIX + "R1"
    await index.unassign([("a", "R1"), ("b", "R1")])
    assert (await index.holder("a"), await index.holder("b")) == (None, None)
    hits = (await index.search([spec()]))[0]
    assert [c.worker_id for c in hits] == ["a"]  # b went offline meanwhile
    assert hits[0].distance_km > 2.5  # where a last was, not where a checked in


async def test_a_checkin_while_offered_keeps_the_worker_held(index: WorkerIndex) -> None:
    await checkin(index, "a", 0.01)
    await index.hold([("a", "R1")], 60_000)
    await checkin(index, "a", 0.02)
    assert await index.holder("a") == "R1"
    assert await found(index) == []
    await index.release([("a", "R1")])
    assert [c.distance_km > 1.5 for c in (await index.search([spec()]))[0]] == [True]


def state(rid: str = "R1", status: RequestStatus = RequestStatus.OPEN) -> RequestState:
    job = Job(rid, "G4301001", "mover", 2, 200.0, LON, LAT, 1000, 1000, 600_000)
    return RequestState(job=job, status=status)


def write(
    st: RequestState, version: int, at_ms: int = 5000, events: tuple[Envelope, ...] = ()
) -> Write:
    return Write(st, version, at_ms, dump_state(st), events)


def event(n: int, key: str = "W1") -> Envelope:
    return Envelope(OFFERS, key, f'{{"event_id":"e{n}","text":"a\\u001e\\"quoted\\""}}')


def snap(version: int, st: RequestState, at_ms: int = 5000) -> Envelope:
    return snapshot(st.job.request_id, version, at_ms, dump_state(st))


async def test_save_is_compare_and_set(store: RequestStore) -> None:
    assert await store.save([write(state(), 0)]) == [True]
    assert await store.save([write(state(), 0)]) == [False]  # a second create loses
    loaded = await store.load(["R1", "nope"])
    assert list(loaded) == ["R1"] and loaded["R1"][:2] == (1, state())
    filled = state(status=RequestStatus.FILLED)
    assert await store.save([write(filled, 1), write(filled, 1)]) == [True, False]
    assert (await store.load(["R1"]))["R1"][:2] == (2, filled)


async def test_state_and_outbox_are_saved_together(store: RequestStore) -> None:
    assert await store.save([write(state(), 0, 5000, (event(1), event(2, "W2")))]) == [True]
    assert await store.load(["R1"]) == {
        "R1": Stored(1, state(), (event(1), event(2, "W2"), snap(1, state())))
    }
    # A save that loses writes neither its state nor its outbox.
    filled = state(status=RequestStatus.FILLED)
    assert await store.save([write(filled, 0, 6000, (event(3),))]) == [False]
    assert (await store.load(["R1"]))["R1"].outbox == (event(1), event(2, "W2"), snap(1, state()))


async def test_a_pending_outbox_is_kept_ahead_of_the_next_one(store: RequestStore) -> None:
    offering = state(status=RequestStatus.OFFERING)
    await store.save([write(state(), 0, 5000, (event(1),))])
    assert await store.save([write(offering, 1, 7000, (event(2),))]) == [True]
    loaded = (await store.load(["R1"]))["R1"]
    assert loaded == Stored(2, offering, (event(1), event(2), snap(2, offering, 7000)))
    await store.clear([("R1", 2)])
    assert await store.save([write(offering, 2, 8000)]) == [True]  # no messages: the snapshot
    assert (await store.load(["R1"]))["R1"].outbox == (snap(3, offering, 8000),)


async def test_an_outbox_is_cleared_only_at_its_version(store: RequestStore) -> None:
    await store.save([write(state(), 0, 5000, (event(1),))])
    await store.clear([("R1", 7), ("nope", 1)])  # another version, an unknown request
    assert (await store.load(["R1"]))["R1"].outbox == (event(1), snap(1, state()))
    await store.clear([("R1", 1)])
    assert await store.load(["R1"]) == {"R1": Stored(1, state())}
    # Published by one writer while another saved on top: the later outbox stays.
    await store.save([write(state(), 1, 6000, (event(2),))])
    await store.clear([("R1", 1)])
    assert (await store.load(["R1"]))["R1"].outbox == (event(2), snap(2, state(), 6000))


async def test_wake_sets_only_missing_timers(store: RequestStore) -> None:
    await store.schedule([("R1", 500)])
    await store.wake([("R1", 100), ("R2", 200)])
    assert await store.pop_due(400, 10) == ["R2"]
    assert await store.pop_due(600, 10) == ["R1"]


async def test_neglected_finds_stale_outboxes_and_untimed_requests(store: RequestStore) -> None:
    offering = state("R2", RequestStatus.OFFERING)
    done = state("R3", RequestStatus.FILLED)
    await store.save([write(state(), 0, 1000, (event(1),)), write(offering, 0, 1000)])
    await store.save([write(done, 0, 1000), write(state("R4"), 0, 9000)])
    await store.clear([("R2", 1), ("R3", 1)])
    await store.schedule([("R1", 50_000), ("R4", 50_000)])
    found = {n.request_id: n for n in await store.neglected(10_000, 5000)}
    # R1: outbox written at 1000, older than 5 s; R2: running with no timer; R3: over;
    # R4: its outbox is young and it has a timer.
    assert {rid: (n.stale_outbox, n.untimed) for rid, n in found.items()} == {
        "R1": (True, False),
        "R2": (False, True),
    }
    assert found["R1"].stored.outbox == (event(1), snap(1, state(), 1000))
    assert found["R2"].stored == Stored(1, offering)


async def test_timers_come_due_once_then_after_a_lease(store: RequestStore) -> None:
    await store.schedule([("R1", 100), ("R2", 200), ("R3", 300)])
    assert await store.pop_due(99, 10) == []
    assert await store.pop_due(250, 10) == ["R1", "R2"]
    assert await store.pop_due(250, 10) == []  # leased to the first caller
    await store.schedule([("R2", None)])
    assert await store.pop_due(250 + TIMER_LEASE_MS, 10) == ["R3", "R1"]  # by due time
    assert await store.pop_due(10**12, 1) == ["R1"]


async def test_a_hold_is_taken_once_and_an_assignment_made_again_counts_as_made(
    index: WorkerIndex,
) -> None:
    # Two dispatchers deciding one request at once must not both hold the worker; a pending
    # outbox carried out again assigns again.
    await checkin(index, "a", 0.01)
    assert await index.hold([("a", "R1")], 60_000) == [True]
    assert await index.hold([("a", "R1")], 60_000) == [False]
    assert await index.hold([("a", "R2")], 60_000) == [False]
    assert await index.assign([("a", "R1")]) == [True]
    assert await index.assign([("a", "R1")]) == [True]
    assert await index.assign([("a", "R2")]) == [False]
    assert await index.holder("a") == ASSIGNED_PREFIX + "R1"
    assert await found(index) == []
