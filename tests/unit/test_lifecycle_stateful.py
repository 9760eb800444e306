"""A stateful Hypothesis test of one request's lifecycle through the pure core."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from dispatch import core
from dispatch.lifecycle import JOB_STEPS_BY
from dispatch.model import (
    HIRED,
    WORKING,
    Candidate,
    Decision,
    Job,
    JobStep,
    Policy,
    RequestState,
    RequestStatus,
)

pytestmark = pytest.mark.unit

POLICY = Policy(offer_ttl_ms=1_000, radii_km=(1.0, 2.0), retry_idle_ms=500)
WORKERS = [f"w{i}" for i in range(8)]


class RequestLifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0
        job = Job("R", "M", "mover", 3, 100.0, 0.0, 0.0, 0, 0, 6_000)
        self.state: RequestState = core.open_request(job, self.now, POLICY).state
        self.ended: RequestState | None = None

    def take(self, d: Decision) -> None:
        if self.ended is not None:
            assert d.state == self.ended and not d.made and not d.assigned
        self.state = d.state
        if self.state.terminal and self.ended is None:
            self.ended = self.state

    @rule(found=st.lists(st.sampled_from(WORKERS), unique=True, max_size=5), data=st.data())
    def wave(self, found: list[str], data: st.DataObject) -> None:
        cands = [Candidate(w, 0.1 * i) for i, w in enumerate(found)]
        plan = core.plan_wave(self.state, cands, POLICY, frozenset())
        held = frozenset(
            data.draw(st.sets(st.sampled_from([c.worker_id for c in plan]))) if plan else ()
        )
        d = core.apply_wave(self.state, cands, held, frozenset(), self.now, POLICY)
        assert {o.worker_id for o in d.made} <= held
        self.take(d)

    @precondition(lambda self: bool(self.state.live))
    @rule(data=st.data(), accept=st.booleans())
    def answer(self, data: st.DataObject, accept: bool) -> None:
        offer = data.draw(st.sampled_from(self.state.live))
        before = self.state.assigned
        self.take(core.on_answer(self.state, offer.offer_id, accept, self.now, POLICY))
        in_time = self.now < offer.expires_at_ms
        assert self.state.assigned == before + (1 if accept and in_time else 0)

    @rule(dt=st.integers(0, 1_500))
    def tick(self, dt: int) -> None:
        self.now += dt
        self.take(core.on_tick(self.state, self.now, POLICY))

    @rule()
    def cancel(self) -> None:
        self.take(core.on_cancel(self.state))

    @precondition(lambda self: any(o.status in HIRED for o in self.state.offers))
    @rule(
        data=st.data(),
        step=st.sampled_from(["arrived", "done", "no_show", "cancelled"]),
        by=st.sampled_from(["station", "worker"]),
    )
    def job_step(self, data: st.DataObject, step: str, by: str) -> None:
        """A job moves on, also after its request ended: the request's status and count of
        hires stay; a worker is freed exactly when their job ends; nobody may say more than
        their role allows."""
        offer = data.draw(st.sampled_from([o for o in self.state.offers if o.status in HIRED]))
        before = self.state
        d = core.on_job_step(before, JobStep("R", offer.worker_id, step, by))
        if step not in JOB_STEPS_BY[by]:
            assert d.refused is not None
        after = d.state
        assert (after.status, after.assigned) == (before.status, before.assigned)
        moved = after.offer(offer.offer_id)
        assert moved is not None
        ended_now = offer.status in WORKING and moved.status not in WORKING
        assert d.freed == ((offer.worker_id,) if ended_now else ())
        assert not d.made and not d.assigned and not d.released
        self.state = after
        if self.ended is not None:
            self.ended = after

    @invariant()
    def status_matches_offers(self) -> None:
        s = self.state
        assert s.assigned <= s.job.headcount
        if s.status is RequestStatus.FILLED:
            assert s.assigned == s.job.headcount
        if s.terminal:
            assert not s.live and s.due_at_ms() is None
        else:
            assert (s.status is RequestStatus.OFFERING) == bool(s.live)
        workers = [o.worker_id for o in s.offers]
        assert len(workers) == len(set(workers)), "a worker was offered the request twice"


TestRequestLifecycle = RequestLifecycle.TestCase
TestRequestLifecycle.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
