"""Indicators from decisions, as tables."""

from __future__ import annotations

import pytest

from replay import outcomes as oc
from schemas import events as ev

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("counts", "expected"), [([], 0.0), ([3, 3, 3], 0.0), ([0, 0, 0, 4], 0.75), ([1, 3], 0.25)]
)
def test_gini(counts: list[int], expected: float) -> None:
    assert oc.gini(counts) == pytest.approx(expected)


def _req(rid: str, market: str, headcount: int, at: int) -> ev.HireRequested:
    return ev.HireRequested(event_id=f"hr:{rid}", at_ms=at, request_id=rid, market_id=market,
                            skill="cook", headcount=headcount, wage_yuan_per_day=200.0,
                            start_at_ms=at, deadline_at_ms=at + 60_000)  # fmt: skip


def _offer(rid: str, wid: str, at: int, km: float) -> ev.OfferMade:
    return ev.OfferMade(event_id=f"om:{rid}:{wid}", at_ms=at, offer_id=f"{rid}:{wid}",
                        request_id=rid, worker_id=wid, market_id="M", skill="cook",
                        wage_yuan_per_day=200.0, lon=112.0, lat=28.0, distance_km=km, score=km,
                        wave=1, expires_at_ms=at + 15_000)  # fmt: skip


def test_indicators_of_one_filled_and_one_expired_request() -> None:
    reqs = [_req("A", "M1", 1, 1000), _req("B", "M2", 2, 2000)]
    decisions = [
        _offer("A", "W1", 1100, 2.0),
        _offer("B", "W1", 2500, 4.0),
        ev.WorkerAssigned(
            event_id="wa",
            at_ms=3000,
            request_id="A",
            worker_id="W1",
            offer_id="A:W1",
            assigned=1,
            headcount=1,
        ),
        ev.RequestFilled(event_id="rf", at_ms=3000, request_id="A", headcount=1, offers_made=1),
    ]
    rows = oc.outcomes(reqs, decisions, lambda r: r.market_id)
    by = {o.group: o for o in rows}
    assert by["all"].requests == 2 and by["all"].positions == 3
    assert by["all"].assignments == 1 and by["all"].fill_rate == 0.5
    assert by["M1"].fill_p50_s == 2.0 and by["M1"].distance_km == 2.0
    assert by["all"].first_offer_p50_s == 0.1 and by["all"].offers_gini == 0.0
    assert by["M2"].assignments == 0
