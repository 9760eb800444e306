"""The job after assignment, through the pure core: arrived, done, no-show, cancelled."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dispatch import core
from dispatch.model import (
    Answer,
    JobChanged,
    JobStep,
    OfferStatus,
    RequestState,
    RequestStatus,
)
from tests.unit.test_core import POLICY, T0, offering

pytestmark = pytest.mark.unit


def hired(*accepting: str, headcount: int = 2) -> RequestState:
    state = offering(headcount=headcount)
    for w in accepting:
        state = core.step(state, Answer("R1", f"R1:{w}", w, True), T0 + 1, POLICY).state  # type: ignore[union-attr]
    return state


def step(state: RequestState, worker: str, what: str, by: str = "station", **kw: str):  # type: ignore[no-untyped-def]
    d = core.step(state, JobStep("R1", worker, what, by, **kw), T0 + 2, POLICY)
    assert d is not None
    return d


def test_a_filled_requests_job_goes_arrived_then_done_and_frees_the_worker() -> None:
    state = hired("w1", "w2")
    assert state.status is RequestStatus.FILLED
    arrived = step(state, "w1", "arrived")
    assert arrived.freed == ()
    assert arrived.happened == (JobChanged("w1", "R1:w1", OfferStatus.ARRIVED, "station", ""),)
    done = step(arrived.state, "w1", "done", by="worker")
    assert done.freed == ("w1",)
    assert done.state.offer("R1:w1").status is OfferStatus.DONE  # type: ignore[union-attr]
    # The request stays filled with both hires counted; only the job moved on.
    assert done.state.status is RequestStatus.FILLED and done.state.assigned == 2


@pytest.mark.parametrize("what", ["no_show", "cancelled"])
def test_a_no_show_or_a_cancelled_job_frees_the_worker_with_its_reason(what: str) -> None:
    d = step(hired("w1", "w2"), "w2", what, reason="did not come")
    assert d.freed == ("w2",)
    assert d.happened == (JobChanged("w2", "R1:w2", OfferStatus(what), "station", "did not come"),)


def test_a_job_steps_before_the_request_fills() -> None:
    state = hired("w1")
    assert state.status is RequestStatus.OFFERING
    d = step(state, "w1", "done")
    assert d.freed == ("w1",) and d.state.status is RequestStatus.OFFERING
    assert d.state.needed == 0  # a finished hire still counts: no new offer for its place


@pytest.mark.parametrize("what", ["no_show", "cancelled"])
def test_a_worker_may_not_mark_their_own_no_show_or_cancel(what: str) -> None:
    d = step(hired("w1", "w2"), "w1", what, by="worker")
    assert d.refused is not None and "worker may not" in d.refused
    assert not d.changed


def test_steps_the_table_lacks_are_refused_and_repeats_ignored() -> None:
    done = step(step(hired("w1", "w2"), "w1", "arrived").state, "w1", "done").state
    assert step(done, "w1", "no_show").refused == (
        "refused: the job is done, it cannot become no_show"
    )
    again = step(done, "w1", "done")
    assert again.refused is None and not again.changed and again.freed == ()
    late_arrival = step(done, "w1", "arrived")  # a redelivered earlier step
    assert late_arrival.refused is None and not late_arrival.changed


def test_only_hired_workers_and_the_requests_own_station_may_step() -> None:
    state = hired("w1", headcount=2)  # w2 has a live offer, not a job
    assert step(state, "w2", "arrived").refused == "refused: w2 was not hired for this request"
    foreign = step(state, "w1", "arrived", market_id="G9999999")
    assert foreign.refused == core.REFUSED_FOREIGN_JOB_STEP
    assert step(state, "w1", "arrived", market_id="G4301001").refused is None


def test_a_repeated_accept_after_arrival_is_not_told_too_late() -> None:
    state = step(hired("w1", "w2"), "w1", "arrived").state
    d = core.step(state, Answer("R1", "R1:w1", "w1", True), T0 + 3, POLICY)
    assert d is not None and not d.changed and d.withdrawn == ()


def test_the_journal_keeps_job_steps_and_the_jobs_details_for_replay() -> None:
    from consumers import journal
    from dispatch.model import NewJob
    from tests.unit.test_core import job

    step = JobStep("R1", "w1", "no_show", "station", "never came", "G4301001")
    assert journal.to_input(journal.taken(step)) == step
    described = NewJob(replace(job(), note="care for an elderly person", contact="0731-1234"))
    assert journal.to_input(journal.taken(described)) == described
