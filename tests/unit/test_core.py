"""Table tests for the pure dispatch core."""

from __future__ import annotations

import pytest

from dispatch import core
from dispatch.lifecycle import IllegalTransition, next_offer_status, next_request_status
from dispatch.model import (
    Answer,
    Candidate,
    Job,
    NewJob,
    OfferStatus,
    Policy,
    RadiusWidened,
    RequestExpired,
    RequestFilled,
    RequestState,
    RequestStatus,
    Tick,
    WaveSent,
    WorkerAssigned,
)

pytestmark = pytest.mark.unit

POLICY = Policy(offer_ttl_ms=15_000, radii_km=(3.0, 6.0, 12.0), retry_idle_ms=5_000)
T0 = 1_000_000


def job(headcount: int = 2, deadline_ms: int = 600_000) -> Job:
    return Job(
        "R1", "G4301001", "bricklayer", headcount, 250.0, 112.94, 28.23, T0, T0, T0 + deadline_ms
    )


def cands(*pairs: tuple[str, float]) -> list[Candidate]:
    return [Candidate(w, d) for w, d in pairs]


def offering(headcount: int = 2, workers: tuple[str, ...] = ("w1", "w2")) -> RequestState:
    state = core.open_request(job(headcount), T0, POLICY).state
    found = cands(*((w, 1.0 + i) for i, w in enumerate(workers)))
    return core.apply_wave(state, found, frozenset(workers), frozenset(), T0, POLICY).state


def test_open_request_asks_for_a_search_at_the_first_radius() -> None:
    d = core.open_request(job(), T0, POLICY)
    assert d.state.status is RequestStatus.OPEN
    assert d.search is not None and d.search.radius_km == 3.0 and d.search.skill == "bricklayer"


def test_open_request_past_its_deadline_expires_at_once() -> None:
    d = core.open_request(job(deadline_ms=10), T0 + 10, POLICY)
    assert d.state.status is RequestStatus.EXPIRED
    assert d.happened == (RequestExpired(assigned=0, offers_made=0),)


@pytest.mark.parametrize(
    ("found", "taken", "headcount", "expected"),
    [
        (cands(("b", 2.0), ("a", 1.0), ("c", 3.0)), set(), 2, ["a", "b"]),
        (cands(("b", 1.0), ("a", 1.0)), set(), 1, ["a"]),  # tie: worker id decides
        (cands(("a", 1.0), ("b", 2.0), ("c", 3.0)), {"a"}, 2, ["b", "c"]),
        (cands(("a", 1.0)), set(), 3, ["a"]),
        ([], set(), 2, []),
    ],
)
def test_plan_wave_takes_the_nearest_free_workers(
    found: list[Candidate], taken: set[str], headcount: int, expected: list[str]
) -> None:
    state = core.open_request(job(headcount), T0, POLICY).state
    plan = core.plan_wave(state, found, POLICY, frozenset(taken))
    assert [c.worker_id for c in plan] == expected


def test_plan_wave_never_offers_a_worker_the_same_request_twice() -> None:
    state = offering(headcount=3, workers=("w1",))
    plan = core.plan_wave(state, cands(("w1", 0.5), ("w9", 2.0)), POLICY, frozenset())
    assert [c.worker_id for c in plan] == ["w9"]


def test_apply_wave_makes_offers_with_a_deadline_and_explains_each_candidate() -> None:
    state = core.open_request(job(2), T0, POLICY).state
    found = cands(("w1", 1.0), ("w2", 2.0), ("w3", 2.5))
    d = core.apply_wave(state, found, frozenset({"w1"}), frozenset({"w2"}), T0, POLICY)
    assert [o.worker_id for o in d.made] == ["w1"]
    assert d.made[0].expires_at_ms == T0 + 15_000 and d.made[0].offer_id == "R1:w1"
    assert d.state.status is RequestStatus.OFFERING
    wave = d.happened[0]
    assert isinstance(wave, WaveSent)
    assert [(n.worker_id, n.outcome) for n in wave.notes] == [
        ("w1", "offered"),
        ("w2", "taken"),
        ("w3", "not_needed"),
    ]
    assert d.search is not None  # w2 was taken by someone else: look again for the second worker


@pytest.mark.parametrize(("step", "radius"), [(0, 6.0), (1, 12.0)])
def test_nobody_near_widens_the_radius(step: int, radius: float) -> None:
    state = RequestState(job=job(), radius_step=step)
    d = core.apply_wave(state, [], frozenset(), frozenset(), T0, POLICY)
    assert d.happened == (RadiusWidened(radius),)
    assert d.search is not None and d.search.radius_km == radius


def test_nobody_even_at_the_widest_radius_waits_and_retries_later() -> None:
    state = RequestState(job=job(), radius_step=2)
    d = core.apply_wave(state, [], frozenset(), frozenset(), T0, POLICY)
    assert d.search is None and d.state.next_search_at_ms == T0 + 5_000
    assert d.state.due_at_ms() == T0 + 5_000
    retry = core.on_tick(d.state, T0 + 5_000, POLICY)
    assert retry.search is not None and retry.search.radius_km == 12.0


def test_accepts_assign_until_filled_then_withdraw_the_rest() -> None:
    state = offering(headcount=1, workers=("w1",))
    state = core.apply_wave(
        state, cands(("w2", 2.0)), frozenset({"w2"}), frozenset(), T0, POLICY
    ).state
    d = core.on_answer(state, "R1:w1", True, T0 + 1000, POLICY)
    assert d.state.status is RequestStatus.FILLED
    assert d.assigned == ("w1",)
    assert [(w.offer.worker_id, w.reason) for w in d.withdrawn] == [("w2", "filled")]
    assert d.released == ("w2",)
    assert d.happened == (WorkerAssigned("w1", "R1:w1", 1), RequestFilled(offers_made=2))


def test_a_partial_fill_keeps_offering() -> None:
    d = core.on_answer(offering(headcount=2), "R1:w1", True, T0 + 1000, POLICY)
    assert d.state.status is RequestStatus.OFFERING and d.state.assigned == 1
    assert d.search is None  # w2's offer is still live


def test_a_decline_releases_the_worker_and_searches_again() -> None:
    d = core.on_answer(offering(headcount=2), "R1:w2", False, T0 + 1000, POLICY)
    assert d.released == ("w2",)
    assert d.search is not None
    assert d.state.offer("R1:w2").status is OfferStatus.DECLINED  # type: ignore[union-attr]


def test_an_answer_after_the_window_is_too_late() -> None:
    d = core.on_answer(offering(headcount=2), "R1:w1", True, T0 + 15_000, POLICY)
    assert d.state.assigned == 0
    assert {w.offer.worker_id for w in d.withdrawn} == {"w1", "w2"}
    assert set(d.released) == {"w1", "w2"}


def test_repeated_answers_change_nothing() -> None:
    once = core.on_answer(offering(), "R1:w1", True, T0 + 1000, POLICY)
    twice = core.on_answer(once.state, "R1:w1", True, T0 + 1001, POLICY)
    assert twice.state == once.state and not twice.changed and not twice.assigned


def test_accepting_a_lapsed_offer_tells_the_worker_it_is_too_late() -> None:
    lapsed = core.on_tick(offering(), T0 + 15_000, POLICY).state
    d = core.on_answer(lapsed, "R1:w1", True, T0 + 16_000, POLICY)
    assert [w.reason for w in d.withdrawn] == ["too_late"] and not d.released


def test_tick_lapses_offers_and_looks_for_others() -> None:
    d = core.on_tick(offering(), T0 + 15_000, POLICY)
    assert d.state.status is RequestStatus.OPEN
    assert sorted(d.released) == ["w1", "w2"]
    assert {w.reason for w in d.withdrawn} == {"expired"}
    assert d.search is not None


def test_the_deadline_expires_the_request_and_withdraws_live_offers() -> None:
    d = core.on_tick(offering(), T0 + 600_000, POLICY)
    assert d.state.status is RequestStatus.EXPIRED
    assert {w.reason for w in d.withdrawn} == {"request_expired"}
    assert core.on_tick(d.state, T0 + 700_000, POLICY).changed is False


def test_cancel_withdraws_live_offers() -> None:
    d = core.on_cancel(offering())
    assert d.state.status is RequestStatus.CANCELLED
    assert {w.reason for w in d.withdrawn} == {"cancelled"}


def test_step_ignores_a_repeated_request_and_a_forged_answer() -> None:
    state = offering()
    assert core.step(state, NewJob(job()), T0, POLICY) is None
    assert core.step(state, Answer("R1", "R1:w1", "w2", True), T0, POLICY) is None
    assert core.step(None, Tick("R1"), T0, POLICY) is None


@pytest.mark.parametrize(
    ("status", "trigger", "to"),
    [
        (RequestStatus.OPEN, "offers_made", RequestStatus.OFFERING),
        (RequestStatus.OFFERING, "filled", RequestStatus.FILLED),
        (RequestStatus.OPEN, "deadline", RequestStatus.EXPIRED),
        (RequestStatus.OFFERING, "cancel", RequestStatus.CANCELLED),
    ],
)
def test_request_transitions(status: RequestStatus, trigger: str, to: RequestStatus) -> None:
    assert next_request_status(status, trigger) is to


@pytest.mark.parametrize(
    ("status", "trigger"),
    [
        (RequestStatus.FILLED, "cancel"),
        (RequestStatus.EXPIRED, "offers_made"),
        (RequestStatus.OPEN, "filled"),
        (RequestStatus.CANCELLED, "deadline"),
    ],
)
def test_illegal_request_transitions_raise(status: RequestStatus, trigger: str) -> None:
    with pytest.raises(IllegalTransition):
        next_request_status(status, trigger)


def test_an_ended_offer_cannot_move_again() -> None:
    with pytest.raises(IllegalTransition):
        next_offer_status(OfferStatus.DECLINED, "accept")


def test_too_few_in_the_radius_offers_them_and_widens_for_the_rest() -> None:
    state = core.open_request(job(3), T0, POLICY).state
    d = core.apply_wave(state, cands(("w1", 1.0)), frozenset({"w1"}), frozenset(), T0, POLICY)
    assert [o.worker_id for o in d.made] == ["w1"]
    assert [type(h) for h in d.happened] == [WaveSent, RadiusWidened]
    assert d.search is not None and d.search.radius_km == 6.0 and d.search.count >= 2


def test_an_accept_that_leaves_work_and_no_live_offer_searches_again() -> None:
    state = offering(headcount=3, workers=("w1",))
    d = core.on_answer(state, "R1:w1", True, T0 + 500, POLICY)
    assert d.state.assigned == 1 and d.search is not None
