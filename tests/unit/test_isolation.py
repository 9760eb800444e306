"""One request's failure stays its own: it is tried alone once more, then dead-lettered with
its reason, while every other request of its batch gets its offers and its timer."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from consumers.dispatching import Dispatcher, Handled
from dispatch import core
from dispatch.model import Answer, Cancel, Input, Job, NewJob, Policy, RequestState
from infra.memory import MemoryRequestStore, MemoryWorkerIndex
from infra.ports import Presence, Saved, Write
from schemas import events as ev
from schemas.topics import DEAD_LETTERS, HIRE_REQUESTS

pytestmark = pytest.mark.unit

POLICY = Policy(offer_ttl_ms=10_000, radii_km=(2.0, 5.0), retry_idle_ms=3_000)
LON, LAT = 112.94, 28.23
T0 = 1_000_000
GOOD = ("R1", "R2", "R3")


def job(rid: str, deadline: int = T0 + 60_000) -> Job:
    return Job(rid, "G4301001", "mover", 1, 200.0, LON, LAT, T0, T0, deadline)


async def index_of(workers: int = 8) -> MemoryWorkerIndex:
    index = MemoryWorkerIndex()
    await index.apply(
        [
            Presence(f"w{i}", "checkin", LON + 0.001 * (i + 1), LAT, ("mover",))
            for i in range(workers)
        ]
    )
    return index


def offered(done: Handled) -> set[str]:
    return {o.message.request_id for o in done.out if isinstance(o.message, ev.OfferMade)}


def letters(done: Handled) -> list[ev.DeadLetter]:
    return [o.message for o in done.wire if isinstance(o.message, ev.DeadLetter)]


async def assert_others_served(
    done: Handled, index: MemoryWorkerIndex, store: MemoryRequestStore
) -> None:
    assert offered(done) == set(GOOD)
    assert set(store.timers) == set(GOOD)
    assert sorted(index.holds.values()) == sorted(GOOD)  # nobody held for the poisoned one


class RefusingStore(MemoryRequestStore):
    """Refuses every write of one request, as Redis refuses a value it cannot take."""

    def __init__(self, bad: str, *, raises: bool = False) -> None:
        super().__init__()
        self.bad, self.raises, self.tries = bad, raises, 0

    async def save(self, writes: Sequence[Write]) -> list[Saved]:
        if not any(w.state.job.request_id == self.bad for w in writes):
            return await super().save(writes)
        self.tries += 1
        if self.raises:  # the whole call fails (and, being refused, writes nothing)
            raise ValueError(f"cannot encode {self.bad}")
        done = await super().save([w for w in writes if w.state.job.request_id != self.bad])
        it = iter(done)
        return [
            "ERR invalid expire time" if w.state.job.request_id == self.bad else next(it)
            for w in writes
        ]


@pytest.mark.parametrize("raises", [False, True], ids=["refused-write", "raising-store"])
async def test_a_request_the_store_refuses_is_dead_lettered_alone(raises: bool) -> None:
    index, store = await index_of(), RefusingStore("BAD", raises=raises)
    d = Dispatcher(index, store, POLICY)
    done = await d.decide([NewJob(job(r)) for r in ("R1", "BAD", "R2", "R3")], T0)
    await assert_others_served(done, index, store)
    assert store.tries == 2  # in its batch, then once alone
    [letter] = letters(done)
    assert (letter.key, letter.source_topic, letter.consumer) == (
        "BAD",
        HIRE_REQUESTS,
        "dispatcher",
    )
    assert ("invalid expire time" if not raises else "cannot encode BAD") in letter.reason
    assert '"request_id": "BAD"' in letter.payload
    rejected = [o.message for o in done.out if isinstance(o.message, ev.RequestRejected)]
    assert [r.request_id for r in rejected] == ["BAD"]  # its kiosk hears of it
    assert await store.load(["BAD"]) == {}
    assert await index.available() == 8 - len(GOOD)  # the workers held for it went back


async def test_a_request_the_core_fails_on_is_dead_lettered_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = core.step

    def step(state: RequestState | None, item: Input, now: int, policy: Policy) -> object:
        if isinstance(item, NewJob) and item.job.request_id == "BAD":
            raise ArithmeticError("odd input")
        return real(state, item, now, policy)

    monkeypatch.setattr(core, "step", step)
    index, store = await index_of(), MemoryRequestStore()
    done = await Dispatcher(index, store, POLICY).decide(
        [NewJob(job(r)) for r in ("R1", "BAD", "R2", "R3")], T0
    )
    await assert_others_served(done, index, store)
    assert [letter.reason for letter in letters(done)] == ["ArithmeticError: odd input"]


async def test_a_batch_step_failing_for_all_tries_each_request_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = core.apply_wave
    calls: list[str] = []

    def apply_wave(state: RequestState, *args: object) -> object:
        calls.append(state.job.request_id)
        if state.job.request_id == "BAD":
            raise KeyError("no such cell")
        return real(state, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(core, "apply_wave", apply_wave)
    index, store = await index_of(), MemoryRequestStore()
    done = await Dispatcher(index, store, POLICY).decide(
        [NewJob(job(r)) for r in ("R1", "BAD", "R2", "R3")], T0
    )
    await assert_others_served(done, index, store)
    assert len(letters(done)) == 1 and letters(done)[0].key == "BAD"


async def test_a_far_deadline_is_taken_like_any_other() -> None:
    index, store = await index_of(), MemoryRequestStore()
    far = [NewJob(job("FAR", deadline=2**63 - 1))]
    done = await Dispatcher(index, store, POLICY).decide([NewJob(job(r)) for r in GOOD] + far, T0)
    assert offered(done) == {*GOOD, "FAR"} and set(store.timers) == {*GOOD, "FAR"}
    assert letters(done) == []


async def test_inputs_the_core_refuses_are_dead_lettered() -> None:
    index, store = await index_of(), MemoryRequestStore()
    d = Dispatcher(index, store, POLICY)
    await d.handle([NewJob(job("R1"))], T0)
    done = await d.decide([Cancel("R1", "G9999999")], T0 + 100)  # from another market
    [letter] = letters(done)
    assert letter.key == "R1" and "another market" in letter.reason
    assert [o.topic for o in done.wire] == [DEAD_LETTERS]


async def test_a_late_accept_is_told_it_is_too_late() -> None:
    index, store = await index_of(1), MemoryRequestStore()
    d = Dispatcher(index, store, POLICY)
    await d.handle([NewJob(job("R1"))], T0)
    await d.handle([Answer("R1", "R1:w0", "w0", False)], T0 + 100)
    done = await d.decide([Answer("R1", "R1:w0", "w0", True)], T0 + 200)
    [told] = [o.message for o in done.wire if isinstance(o.message, ev.OfferWithdrawn)]
    assert (told.worker_id, told.reason) == ("w0", "too_late")
