"""Every input bounded at the edge: finite floats, bounded strings and times, clock checks at
the dispatcher's edge, and the core's refusals (a cancel from another market, a different
request under a known id)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from pydantic import ValidationError

from consumers import journal
from consumers.dispatching import time_bounds, to_input
from dispatch import core
from dispatch.model import Cancel, Job, NewJob, Policy
from infra.settings import PolicySettings
from schemas import events as ev

pytestmark = pytest.mark.unit

NOW = 1_780_000_000_000
MARKETS = {"G4301001": (112.9, 28.2), "G4301002": (113.0, 28.3)}
HOUR = 3600_000

YEAR_2200 = 7_258_118_400_000
REQUEST: dict[str, Any] = {
    "type": "HireRequested", "v": 1, "event_id": "hr:R1", "at_ms": NOW, "request_id": "R1",
    "market_id": "G4301001", "skill": "bricklayer", "headcount": 3, "wage_yuan_per_day": 300,
    "start_at_ms": NOW, "deadline_at_ms": NOW + 600_000,
}  # fmt: skip
OFFER: dict[str, Any] = {
    "type": "OfferMade", "v": 1, "event_id": "om:R1:w1", "at_ms": NOW, "offer_id": "R1:w1",
    "request_id": "R1", "worker_id": "w1", "market_id": "G4301001", "skill": "mover",
    "wage_yuan_per_day": 200.0, "lon": 112.9, "lat": 28.2, "distance_km": 1.25, "score": 1.25,
    "wave": 1, "expires_at_ms": NOW + 15_000,
}  # fmt: skip


def raw(body: dict[str, Any], **changes: Any) -> str:
    """JSON as a hostile producer writes it: Python's json emits NaN and Infinity literals."""
    return json.dumps({**body, **changes})


# --- floats ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("field", ["distance_km", "score", "wage_yuan_per_day", "lon", "lat"])
def test_offer_floats_must_be_finite(field: str, bad: float) -> None:
    with pytest.raises(ValidationError):
        ev.OFFER_EVENT.validate_json(raw(OFFER, **{field: bad}))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_request_wage_must_be_finite(bad: float) -> None:
    with pytest.raises(ValidationError):
        ev.HIRE_INBOUND.validate_json(raw(REQUEST, wage_yuan_per_day=bad))


def test_an_offer_that_parses_survives_its_own_round_trip() -> None:
    """The finding: a NaN was stored as null and every later read failed."""
    offer = ev.OFFER_EVENT.validate_json(raw(OFFER))
    assert ev.OFFER_EVENT.validate_json(offer.model_dump_json()) == offer


def test_request_event_floats_must_be_finite() -> None:
    wave = {
        "type": "WaveSent", "v": 1, "event_id": "ws:R1:1", "at_ms": NOW, "request_id": "R1",
        "wave": 1, "radius_km": float("nan"), "candidates": [],
    }  # fmt: skip
    with pytest.raises(ValidationError):
        ev.REQUEST_EVENT.validate_json(json.dumps(wave))
    note = {"worker_id": "w1", "distance_km": float("inf"), "score": 1.0, "outcome": "offered"}
    with pytest.raises(ValidationError):
        ev.REQUEST_EVENT.validate_json(json.dumps({**wave, "radius_km": 3.0, "candidates": [note]}))


# --- strings and counts -----------------------------------------------------------------------


REJECTED = {
    "type": "RequestRejected",
    "v": 1,
    "event_id": "rr:R1",
    "at_ms": NOW,
    "request_id": "R1",
}


@pytest.mark.parametrize(
    ("adapter", "body", "field"),
    [
        (ev.HIRE_INBOUND, REQUEST, "note"),
        (ev.HIRE_INBOUND, REQUEST, "request_id"),
        (ev.HIRE_INBOUND, {**REQUEST, "type": "HireCancelled"}, "reason"),
        (ev.REQUEST_EVENT, REJECTED, "reason"),
    ],
)
def test_long_strings_are_refused(adapter: Any, body: dict[str, Any], field: str) -> None:
    if body["type"] == "HireCancelled":
        body = {k: body[k] for k in ("type", "v", "event_id", "at_ms", "request_id", "market_id")}
    with pytest.raises(ValidationError):
        adapter.validate_json(json.dumps({**body, field: "x" * 100_000}))


def test_skill_enum_is_in_the_json_schema() -> None:
    schema = ev.HireRequested.model_json_schema()
    assert schema["properties"]["skill"]["enum"] == list(ev.SKILLS)


# --- times: absolute bounds in the schema, clock-relative ones at the edge ---------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"deadline_at_ms": 2**63 - 1},
        {"deadline_at_ms": 253_402_300_799_000},  # 9999-12-31
        {"at_ms": YEAR_2200, "start_at_ms": YEAR_2200, "deadline_at_ms": YEAR_2200 + 60_000},
        {"at_ms": -1},
    ],
)
def test_absurd_times_fail_the_schema(changes: dict[str, int]) -> None:
    with pytest.raises(ValidationError):
        ev.HIRE_INBOUND.validate_json(raw(REQUEST, **changes))


@pytest.mark.parametrize(
    ("changes", "phrase"),
    [
        (
            {"at_ms": NOW + HOUR, "start_at_ms": NOW + HOUR, "deadline_at_ms": NOW + 2 * HOUR},
            "at_ms",
        ),
        ({"deadline_at_ms": NOW + 25 * HOUR}, "deadline_at_ms is more than"),
        ({"start_at_ms": NOW + 25 * HOUR, "deadline_at_ms": NOW + 26 * HOUR}, "start_at_ms"),
    ],
)
def test_times_too_far_ahead_of_the_clock_are_refused(changes: dict[str, int], phrase: str) -> None:
    msg = ev.HIRE_INBOUND.validate_json(raw(REQUEST, **changes))
    reason = to_input(msg, MARKETS, NOW)
    assert isinstance(reason, str) and phrase in reason


def test_times_within_bounds_pass_and_the_horizon_is_a_setting() -> None:
    msg = ev.HIRE_INBOUND.validate_json(raw(REQUEST, deadline_at_ms=NOW + 23 * HOUR))
    assert isinstance(to_input(msg, MARKETS, NOW), NewJob)
    short = time_bounds(PolicySettings(max_horizon_s=3600))
    assert isinstance(to_input(msg, MARKETS, NOW, short), str)
    late = ev.HIRE_INBOUND.validate_json(raw(REQUEST, at_ms=NOW + 60_000, start_at_ms=NOW + 60_000))
    assert isinstance(to_input(late, MARKETS, NOW), NewJob)  # a minute of clock skew is fine


def test_a_cancel_or_answer_from_the_future_is_refused() -> None:
    later = NOW + HOUR
    cancel = ev.HireCancelled(event_id="hc", at_ms=later, request_id="R1", market_id="G4301001")
    assert isinstance(to_input(cancel, MARKETS, NOW), str)
    answer = ev.OfferAccepted(
        event_id="oa", at_ms=NOW + HOUR, offer_id="R1:w1", request_id="R1", worker_id="w1"
    )
    assert isinstance(to_input(answer, MARKETS, NOW), str)


# --- the core's refusals ----------------------------------------------------------------------

POLICY = Policy()


def job(**changes: Any) -> Job:
    base = Job("R1", "G4301001", "bricklayer", 2, 250.0, 112.9, 28.2, NOW, NOW, NOW + 600_000)
    return replace(base, **changes)


def opened() -> Any:
    return core.open_request(job(), NOW, POLICY).state


def test_the_edge_passes_a_cancels_market_to_the_core() -> None:
    cancel = ev.HireCancelled(event_id="hc", at_ms=NOW, request_id="R1", market_id="G4301002")
    assert to_input(cancel, MARKETS, NOW) == Cancel("R1", "G4301002")


def test_a_cancel_from_another_market_is_refused() -> None:
    state = opened()
    d = core.step(state, Cancel("R1", "G4301002"), NOW, POLICY)
    assert d is not None and d.refused == core.REFUSED_FOREIGN_CANCEL
    assert d.state == state and not d.changed and not d.happened and not d.withdrawn
    own = core.step(state, Cancel("R1", "G4301001"), NOW, POLICY)
    assert own is not None and own.refused is None and own.state.terminal


@pytest.mark.parametrize(
    "changes",
    [{"market_id": "G4301002"}, {"headcount": 5}, {"skill": "cook"}, {"wage_yuan_per_day": 1.0}],
)
def test_a_different_request_under_a_known_id_is_refused(changes: dict[str, Any]) -> None:
    state = opened()
    d = core.step(state, NewJob(job(**changes)), NOW, POLICY)
    assert d is not None and d.refused == core.REFUSED_CONFLICTING_REPEAT
    assert d.state == state and not d.changed


def test_a_redelivered_request_is_still_ignored() -> None:
    state = opened()
    assert core.step(state, NewJob(job()), NOW, POLICY) is None
    retried = job(requested_at_ms=NOW + 5, start_at_ms=NOW + 5, deadline_at_ms=NOW + 600_005)
    assert core.step(state, NewJob(retried), NOW + 5, POLICY) is None


def test_the_journal_keeps_a_cancels_market_for_replay() -> None:
    cancel = Cancel("R1", "G4301002")
    assert journal.to_input(journal.taken(cancel)) == cancel
