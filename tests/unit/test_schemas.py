"""Validation at the edge: what the schemas accept and how they explain a refusal."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from infra.decoding import explain
from schemas import events as ev

pytestmark = pytest.mark.unit

GOOD = {
    "type": "HireRequested", "v": 1, "event_id": "hr:R1", "at_ms": 1_000, "request_id": "R1",
    "market_id": "G4301001", "skill": "bricklayer", "headcount": 3, "wage_yuan_per_day": 300,
    "start_at_ms": 1_000, "deadline_at_ms": 601_000,
}  # fmt: skip


def refusal(**changes: object) -> str:
    with pytest.raises(ValidationError) as e:
        ev.HIRE_INBOUND.validate_json(json.dumps({**GOOD, **changes}))
    return explain(e.value)


def test_a_good_request_parses_with_the_markets_place_by_default() -> None:
    msg = ev.HIRE_INBOUND.validate_json(json.dumps(GOOD))
    assert isinstance(msg, ev.HireRequested)
    assert (msg.lon, msg.lat, msg.headcount) == (None, None, 3)


@pytest.mark.parametrize(
    ("changes", "phrase"),
    [
        ({"headcount": 0}, "headcount: Input should be greater than or equal to 1"),
        ({"headcount": "3"}, "headcount: Input should be a valid integer"),
        ({"skill": "astronaut"}, "unknown skill 'astronaut'"),
        ({"lon": 113.0, "lat": 50.0}, "lat: Input should be less than or equal to 30.6"),
        ({"lon": 28.2, "lat": 113.0}, "lon: Input should be greater than or equal to 108.3"),
        ({"lon": 113.0}, "give both lon and lat"),
        ({"deadline_at_ms": 500}, "deadline_at_ms must be after at_ms"),
        ({"v": 2}, "v: Input should be 1"),
        ({"surprise": 1}, "surprise: Extra inputs are not permitted"),
        ({"type": "Teleported"}, "does not match any of the expected tags"),
        ({"request_id": "R 1; DROP"}, "request_id: String should match pattern"),
    ],
)
def test_bad_requests_are_refused_with_a_reason(changes: dict[str, object], phrase: str) -> None:
    assert phrase in refusal(**changes)


def test_malformed_json_is_refused() -> None:
    with pytest.raises(ValidationError) as e:
        ev.HIRE_INBOUND.validate_json(b"{nope")
    assert explain(e.value).startswith("message: Invalid JSON")


def test_worker_events_need_known_skills_and_real_places() -> None:
    ok = ev.WORKER_EVENT.validate_json(json.dumps({
        "type": "WorkerCheckedIn", "v": 1, "event_id": "e", "at_ms": 1, "worker_id": "w1",
        "lon": 112.9, "lat": 28.2, "skills": ["mover", "cleaner"],
    }))  # fmt: skip
    assert isinstance(ok, ev.WorkerCheckedIn) and ok.skills == ("mover", "cleaner")
    with pytest.raises(ValidationError):
        ev.WORKER_EVENT.validate_json(json.dumps({
            "type": "WorkerCheckedIn", "v": 1, "event_id": "e", "at_ms": 1, "worker_id": "w1",
            "lon": 112.9, "lat": 28.2, "skills": [],
        }))  # fmt: skip


def test_messages_round_trip() -> None:
    msg = ev.OfferMade(
        event_id="om:R1:w1", at_ms=5, offer_id="R1:w1", request_id="R1", worker_id="w1",
        market_id="G4301001", skill="mover", wage_yuan_per_day=200.0, lon=112.9, lat=28.2,
        distance_km=1.25, score=1.25, wave=1, expires_at_ms=15_005,
    )  # fmt: skip
    assert ev.OFFER_EVENT.validate_json(msg.model_dump_json()) == msg
