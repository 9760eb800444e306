"""The dispatcher's outbox on the in-memory twins: a decision's messages are saved with its
state, published, then cleared; a dispatcher that dies in between loses no announcement."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

import pytest

from consumers.dispatching import Dispatcher, Handled
from dispatch.model import Answer, Job, NewJob, Policy, RequestStatus, Tick
from infra.memory import MemoryRequestStore, MemoryWorkerIndex
from infra.ports import Presence
from infra.publish import Outgoing
from infra.redis_index import TIMER_LEASE_MS
from schemas import events as ev
from schemas.topics import OFFERS, REQUEST_EVENTS, REQUEST_STATE

pytestmark = pytest.mark.unit

POLICY = Policy(offer_ttl_ms=10_000, radii_km=(2.0, 5.0), retry_idle_ms=3_000)
LON, LAT = 112.94, 28.23
T0 = 1_000_000


def job(rid: str = "R1", headcount: int = 1, deadline: int = T0 + 60_000) -> Job:
    return Job(rid, "G4301001", "mover", headcount, 200.0, LON, LAT, T0, T0, deadline)


async def world(workers: int = 3) -> tuple[MemoryWorkerIndex, MemoryRequestStore]:
    index = MemoryWorkerIndex()
    await index.apply(
        [
            Presence(f"w{i}", "checkin", LON + 0.001 * (i + 1), LAT, ("mover",))
            for i in range(workers)
        ]
    )
    return index, MemoryRequestStore()


def wire(done: Handled) -> list[tuple[str, str, str]]:
    """What would go on the wire: topic, key and the exact bytes of each message."""
    return [(o.topic, o.key, o.message.model_dump_json()) for o in done.wire]


def event_ids(messages: Sequence[tuple[str, str, str]]) -> list[str]:
    return [json.loads(v)["event_id"] for t, _, v in messages if t != REQUEST_STATE]


def of_type(done: Handled, kind: type) -> list[Outgoing]:
    return [o for o in done.out if isinstance(o.message, kind)]


async def test_a_decision_is_saved_with_its_outbox_and_cleared_once_published() -> None:
    index, store = await world()
    d = Dispatcher(index, store, POLICY)
    done = await d.decide([NewJob(job())], T0)
    sent = wire(done)
    assert [t for t, _, _ in sent] == [OFFERS, REQUEST_EVENTS, REQUEST_STATE]
    pending = (await store.load(["R1"]))["R1"]
    assert [(e.topic, e.key, e.value) for e in pending.outbox] == sent
    snap = ev.REQUEST_STATE_SAVED.validate_json(sent[-1][2])
    assert (snap.request_id, snap.version, snap.at_ms) == ("R1", 1, T0)
    await d.published(done)
    assert (await store.load(["R1"]))["R1"].outbox == ()


async def test_a_redelivery_after_a_crash_publishes_the_same_events() -> None:
    index, store = await world()
    first = await Dispatcher(index, store, POLICY).decide([NewJob(job())], T0)
    # Killed before publishing: nothing of ``first`` reached the broker.
    again = Dispatcher(index, store, POLICY)  # the next owner of the partition
    redelivered = await again.decide([NewJob(job())], T0 + 500)
    assert wire(redelivered) == wire(first)  # same bytes, so the same event ids
    assert redelivered.out == []  # the state had advanced: nothing new was decided
    assert len(index.holds) == 1  # and no second worker held
    await again.published(redelivered)
    assert (await store.load(["R1"]))["R1"].outbox == ()


async def test_a_timer_publishes_a_pending_outbox_before_acting() -> None:
    index, store = await world()
    d = Dispatcher(index, store, POLICY)
    await d.handle([NewJob(job(headcount=1))], T0)
    offer = next(iter(index.holds))
    accepted = await d.decide([Answer("R1", f"R1:{offer}", offer, True)], T0 + 1000)
    assert [type(o.message) for o in accepted.out] == [
        ev.WorkerAssigned,
        ev.RequestFilled,
        ev.Hired,
    ]
    # Killed before publishing. The request is over, but its timer is still set (a request
    # over loses its timer only once its last messages are out), so it wakes and heals.
    due = await store.pop_due(T0 + POLICY.offer_ttl_ms, 10)
    assert due == ["R1"]
    healed = await d.decide([Tick("R1")], T0 + POLICY.offer_ttl_ms)
    assert wire(healed) == wire(accepted)
    await d.published(healed)
    assert (await store.load(["R1"]))["R1"].outbox == ()
    assert "R1" not in store.timers  # over and announced: no more ticks


async def test_a_leased_timer_heals_a_dispatcher_that_died_after_popping_it() -> None:
    index, store = await world(workers=0)  # nobody around: the request waits and expires
    d = Dispatcher(index, store, POLICY)
    await d.handle([NewJob(job(deadline=T0 + 5000))], T0)
    assert await store.pop_due(T0 + 5000, 10) == ["R1"]
    expired = await d.decide([Tick("R1")], T0 + 5000)  # then killed before publishing
    assert of_type(expired, ev.RequestExpired)
    assert await store.pop_due(T0 + 5000, 10) == []  # leased
    assert await store.pop_due(T0 + 5000 + TIMER_LEASE_MS, 10) == ["R1"]
    healed = await d.decide([Tick("R1")], T0 + 5000 + TIMER_LEASE_MS)
    assert event_ids(wire(healed)) == event_ids(wire(expired)) == ["re:R1"]
    await d.published(healed)
    assert store.timers == {} and (await store.load(["R1"]))["R1"].outbox == ()


async def test_a_pending_outbox_is_published_ahead_of_the_next_decision() -> None:
    index, store = await world()
    d = Dispatcher(index, store, POLICY)
    first = await d.decide([NewJob(job(headcount=2))], T0)  # never published
    offer = next(iter(index.holds))
    later = await d.decide([Answer("R1", f"R1:{offer}", offer, False)], T0 + 1000)
    assert wire(later)[: len(first.wire)] == wire(first)
    # Still pending until the later batch is out: its outbox carries the first one's too.
    pending = (await store.load(["R1"]))["R1"].outbox
    first_ids = event_ids(wire(first))
    assert event_ids([(e.topic, e.key, e.value) for e in pending])[: len(first_ids)] == first_ids
    await d.published(first)  # an older version: clears nothing
    assert (await store.load(["R1"]))["R1"].outbox == pending
    await d.published(later)
    assert (await store.load(["R1"]))["R1"].outbox == ()


async def test_a_crash_before_the_timer_was_set_is_healed_by_the_redelivery() -> None:
    index, store = await world()

    class DiesBeforeTimers(MemoryRequestStore):
        async def schedule(self, due: Sequence[tuple[str, int | None]]) -> None:
            raise ConnectionError("killed")

    broken = DiesBeforeTimers()
    with pytest.raises(ConnectionError):
        await Dispatcher(index, broken, POLICY).decide([NewJob(job())], T0)
    store.entries = broken.entries  # what Redis kept of the dead dispatcher's batch
    assert store.timers == {}
    healed = await Dispatcher(index, store, POLICY).decide([NewJob(job())], T0 + 100)
    assert event_ids(wire(healed)) and "R1" in store.timers


async def test_a_crash_between_saving_an_assignment_and_making_it_is_healed() -> None:
    index, store = await world(workers=2)
    d = Dispatcher(index, store, POLICY)
    await d.published(await d.decide([NewJob(job())], T0))
    offered = next(iter(index.holds))

    class DiesBeforeAssigning(MemoryWorkerIndex):
        async def assign(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
            raise ConnectionError("killed")

    broken = DiesBeforeAssigning()
    broken.holds, broken.records, broken.indexed = index.holds, index.records, index.indexed
    accept = Answer("R1", f"R1:{offered}", offered, True)
    with pytest.raises(ConnectionError):
        await Dispatcher(broken, store, POLICY).decide([accept], T0 + 1_000)
    # Saved and about to be announced ("assigned"), but the hold is still the offer's.
    assert index.holds[offered] == "R1" and (await store.load(["R1"]))["R1"].outbox
    del index.holds[offered]  # and it lapses before anyone looks again
    healed = await Dispatcher(index, store, POLICY).decide([accept], T0 + 2_000)
    assert any(json.loads(v).get("type") == "WorkerAssigned" for _, _, v in wire(healed))
    assert index.holds[offered] == "A|R1"  # what was announced holds: nobody else gets them
    assert offered not in index.indexed


async def test_the_sweep_repairs_stranded_requests_and_stale_outboxes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    index, store = await world()
    d = Dispatcher(index, store, POLICY)
    lost = await d.decide([NewJob(job("R1"))], T0)  # never published
    await d.handle([NewJob(job("R2"))], T0)
    del store.timers["R2"]  # stranded: offering, and nothing will wake it
    caplog.set_level(logging.WARNING, "dispatcher")
    assert (await d.sweep(T0 + 1000)).wire == []  # R1's outbox is young yet
    assert "R2" not in store.timers  # its batch may still be setting it: looked at again
    assert (await d.sweep(T0 + 2000)).wire == []
    assert store.timers["R2"] == (await store.load(["R2"]))["R2"].state.due_at_ms()
    done = await d.sweep(T0 + 60_000)
    assert wire(done) == wire(lost)
    repairs = [r.message for r in caplog.records if "sweep:" in r.message]
    assert len(repairs) == 2 and "R2 is offering" in repairs[0] and "R1 v1" in repairs[1]
    await d.published(done)
    assert (await d.sweep(T0 + 60_000)).wire == []
    assert (await store.load(["R1"]))["R1"].state.status is RequestStatus.OFFERING
