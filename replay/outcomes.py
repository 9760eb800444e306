"""Outcomes in the service's own indicators, per market, prefecture or overall: pure functions.

From the requests of a window and the decisions about them (recorded or replayed):
requests, positions posted (headcount), assignments (hiring intentions reached), workers served,
fill rate, time to first offer and to fill, offers per assignment, distance to work, and how
evenly offers were spread over the workers offered (Gini: 0 = all got as many, 1 = one got all).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel

from schemas import events as ev


@dataclass
class Tally:
    """Running counts for one group of requests."""

    requests: int = 0
    positions: int = 0
    filled: int = 0
    assigned: set[str] = field(default_factory=set)  # offer ids
    served: set[str] = field(default_factory=set)  # worker ids
    offers: dict[str, int] = field(default_factory=dict)  # worker id -> offers made
    first_offer_ms: list[int] = field(default_factory=list)
    fill_ms: list[int] = field(default_factory=list)
    distance_km: list[float] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One group's indicators (times in seconds, distances in km; NaN where none)."""

    group: str
    requests: int
    positions: int
    assignments: int
    workers_served: int
    fill_rate: float
    positions_filled: float
    first_offer_p50_s: float
    fill_p50_s: float
    fill_p90_s: float
    offers: int
    offers_per_assignment: float
    distance_km: float
    workers_offered: int
    offers_gini: float


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (nearest rank), NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def gini(counts: Iterable[int]) -> float:
    """Gini coefficient of non-negative counts (0 for an even spread)."""
    xs = sorted(counts)
    n, total = len(xs), sum(xs)
    if n == 0 or total == 0:
        return 0.0
    weighted = sum((i + 1) * x for i, x in enumerate(xs))
    return 2 * weighted / (n * total) - (n + 1) / n


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def tally(
    requests: Sequence[ev.HireRequested],
    decisions: Iterable[BaseModel],
    group_of: Callable[[ev.HireRequested], str],
) -> dict[str, Tally]:
    """Fold the decisions about the requests into one tally per group."""
    req = {r.request_id: r for r in requests}
    groups: dict[str, Tally] = {}
    for r in req.values():
        t = groups.setdefault(group_of(r), Tally())
        t.requests += 1
        t.positions += r.headcount
    first: dict[str, int] = {}
    made: dict[str, float] = {}
    for msg in decisions:
        found = req.get(getattr(msg, "request_id", ""))
        if found is not None:
            _take(groups[group_of(found)], found, msg, first, made)
    for rid, at in first.items():
        groups[group_of(req[rid])].first_offer_ms.append(at - req[rid].at_ms)
    return groups


def _take(
    t: Tally, r: ev.HireRequested, msg: BaseModel, first: dict[str, int], made: dict[str, float]
) -> None:
    match msg:
        case ev.OfferMade():
            first.setdefault(r.request_id, msg.at_ms)
            if msg.offer_id not in made:
                made[msg.offer_id] = msg.distance_km
                t.offers[msg.worker_id] = t.offers.get(msg.worker_id, 0) + 1
        case ev.WorkerAssigned() if msg.offer_id not in t.assigned:
            t.assigned.add(msg.offer_id)
            t.served.add(msg.worker_id)
            if msg.offer_id in made:
                t.distance_km.append(made[msg.offer_id])
        case ev.RequestFilled():
            t.filled += 1
            t.fill_ms.append(msg.at_ms - r.at_ms)


def outcome(group: str, t: Tally) -> Outcome:
    """The indicators of one tally."""
    offers = sum(t.offers.values())
    return Outcome(
        group=group,
        requests=t.requests,
        positions=t.positions,
        assignments=len(t.assigned),
        workers_served=len(t.served),
        fill_rate=t.filled / t.requests if t.requests else float("nan"),
        positions_filled=len(t.assigned) / t.positions if t.positions else float("nan"),
        first_offer_p50_s=percentile(t.first_offer_ms, 50) / 1000,
        fill_p50_s=percentile(t.fill_ms, 50) / 1000,
        fill_p90_s=percentile(t.fill_ms, 90) / 1000,
        offers=offers,
        offers_per_assignment=offers / len(t.assigned) if t.assigned else float("nan"),
        distance_km=_mean(t.distance_km),
        workers_offered=len(t.offers),
        offers_gini=gini(t.offers.values()),
    )


def outcomes(
    requests: Sequence[ev.HireRequested],
    decisions: Iterable[BaseModel],
    group_of: Callable[[ev.HireRequested], str],
) -> list[Outcome]:
    """Indicators per group (sorted), then ``all`` over every request."""
    decisions = list(decisions)
    per = tally(requests, decisions, group_of)
    total = tally(requests, decisions, lambda _: "all")
    rows = [outcome(g, per[g]) for g in sorted(per)]
    return rows + [outcome("all", t) for t in total.values()]
