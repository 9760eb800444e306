"""The batch policy as tables: joint matching beats greedy on total distance, deterministically."""

from __future__ import annotations

import pytest

from dispatch import batch, core
from dispatch.model import Candidate, Job, Policy, RequestState

pytestmark = pytest.mark.unit
POLICY = Policy(name="batch")


def state(rid: str, headcount: int = 1) -> RequestState:
    return RequestState(Job(rid, "M1", "cook", headcount, 200.0, 112.9, 28.2, 0, 0, 60_000))


def test_joint_matching_takes_the_smaller_total_distance() -> None:
    # Greedy gives W1 to A (1 km) and leaves B with W2 at 9 km: 10 km in all.
    # Matched jointly, A takes W2 (2 km) and B takes W1 (1.5 km): 3.5 km.
    a = (state("A"), [Candidate("W1", 1.0), Candidate("W2", 2.0)])
    b = (state("B"), [Candidate("W1", 1.5), Candidate("W2", 9.0)])
    plans = batch.plan_batch([a, b], POLICY, frozenset())
    assert [[c.worker_id for c in p] for p in plans] == [["W2"], ["W1"]]
    greedy_a = core.plan_wave(a[0], a[1], POLICY, frozenset())
    assert [c.worker_id for c in greedy_a] == ["W1"]


@pytest.mark.parametrize(
    ("now", "window", "end"),
    [(0, 1500, 0), (1, 1500, 1500), (1499, 1500, 1500), (1500, 1500, 1500), (1501, 1500, 3000)],
)
def test_windows_close_on_multiples(now: int, window: int, end: int) -> None:
    assert batch.window_end(now, window) == end


def test_slots_follow_headcount_and_no_worker_twice() -> None:
    a = (state("A", 2), [Candidate(f"W{i}", float(i)) for i in range(1, 4)])
    b = (state("B", 2), [Candidate(f"W{i}", float(4 - i)) for i in range(1, 4)])
    plans = batch.plan_batch([a, b], POLICY, frozenset())
    chosen = [c.worker_id for p in plans for c in p]
    assert len(chosen) == len(set(chosen)) == 3
    assert all(len(p) <= 2 for p in plans)


def test_taken_and_already_offered_workers_are_skipped() -> None:
    a = (state("A"), [Candidate("W1", 1.0), Candidate("W2", 2.0)])
    plans = batch.plan_batch([a], POLICY, frozenset({"W1"}))
    assert [c.worker_id for c in plans[0]] == ["W2"]


def test_independent_groups_are_found() -> None:
    opts = [[Candidate("W1", 1)], [Candidate("W2", 1)], [Candidate("W1", 2), Candidate("W3", 1)]]
    assert sorted(batch.groups(opts)) == [[0, 2], [1]]


def test_defer_sets_the_search_at_the_window_close() -> None:
    assert batch.defer(state("A"), 1_001, 1_000).next_search_at_ms == 2_000
