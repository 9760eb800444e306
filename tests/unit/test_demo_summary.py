"""The demo's summary counts what the request events said."""

from __future__ import annotations

import random

import pytest

from producers.demo import Outcomes, percentile, summary
from producers.workers import Behaviour, Crowd
from schemas import events as ev

pytestmark = pytest.mark.unit


def test_percentile_picks_from_the_sorted_values() -> None:
    values = list(range(1, 101))
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (
        51,
        100,
        100,
    )


def test_summary_counts_outcomes_of_this_run_only() -> None:
    out = Outcomes()
    out.requested_at = {"a": 0, "b": 0, "c": 0}
    out.headcount = {"a": 2, "b": 1, "c": 1}
    common = {"event_id": "x", "at_ms": 4000}
    out.take(
        ev.WorkerAssigned(
            **common, request_id="a", worker_id="w1", offer_id="a:w1", assigned=1, headcount=2
        )
    )
    out.take(
        ev.WorkerAssigned(
            **common, request_id="a", worker_id="w2", offer_id="a:w2", assigned=2, headcount=2
        )
    )
    out.take(ev.RequestFilled(**common, request_id="a", headcount=2, offers_made=3))
    out.take(ev.RequestExpired(**common, request_id="b", assigned=0, headcount=1, offers_made=1))
    out.take(ev.RequestFilled(**common, request_id="other-run", headcount=1, offers_made=9))
    crowd = Crowd(None, Behaviour(), random.Random(1))  # type: ignore[arg-type]
    crowd.first_offer_ms = {"a": 20, "b": 40}
    text = summary(out, crowd)
    assert "| requests posted" in text and "| 3 " in text
    assert "1 (33.3 %)" in text  # one filled, one expired
    assert "still open" in text and "| 1 " in text
    assert "2 of 4 wanted" in text
    assert "offers per fill (per worker assigned) | 2.00" in text  # (3 + 1) offers / 2 workers
    assert "4.0 s / 4.0 s" in text
