"""Outcomes in the service's own indicators and the labour bureau's, per group: pure functions.

From the requests of a window, the decisions about them (recorded or replayed) and the workers'
check-ins, per group (prefecture, county, market, skill, day or month; see ``replay.breakdown``):

- requests, and **positions posted**: the sum of their headcounts (rejected requests included);
- **job seekers** (求职人数): distinct workers with a check-in in the window, and **positions
  per seeker** (求人倍率): positions posted / job seekers;
- **hiring intentions**: assignments (each worker assigned to a request once); **workers
  served**: distinct workers assigned;
- **fill rate**: requests filled in full / requests; positions filled: assignments / positions;
- time to first offer and to fill (p50, p90; nearest rank), from the request's own time;
- requests that **expired**, were **cancelled** or **rejected** (each counted once);
- **wages offered**: mean and median of ``wage_yuan_per_day`` *weighted by headcount* (a
  request for 3 workers at 200 ¥ counts as three positions at 200 ¥);
- offers per assignment, distance to work, and how evenly offers were spread over the workers
  offered (Gini: 0 = all got as many, 1 = one got all).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel

from schemas import events as ev

Seekers = Callable[[ev.WorkerCheckedIn], Iterable[str]]  # the groups a check-in counts in


@dataclass
class Tally:
    """Running counts for one group of requests (and of the workers who checked in)."""

    requests: int = 0
    positions: int = 0
    filled: set[str] = field(default_factory=set)  # request ids
    expired: set[str] = field(default_factory=set)
    cancelled: set[str] = field(default_factory=set)
    rejected: set[str] = field(default_factory=set)
    assigned: set[str] = field(default_factory=set)  # offer ids
    served: set[str] = field(default_factory=set)  # worker ids
    seekers: set[str] = field(default_factory=set)  # worker ids checked in
    offers: dict[str, int] = field(default_factory=dict)  # worker id -> offers made
    wages: list[tuple[float, int]] = field(default_factory=list)  # (¥/day, headcount)
    first_offer_ms: list[int] = field(default_factory=list)
    fill_ms: list[int] = field(default_factory=list)
    distance_km: list[float] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One group's indicators (times in seconds, distances in km, wages in ¥ per day; NaN
    where there is nothing to measure)."""

    group: str
    requests: int
    positions: int
    job_seekers: int
    positions_per_seeker: float
    assignments: int
    workers_served: int
    fill_rate: float
    positions_filled: float
    first_offer_p50_s: float
    first_offer_p90_s: float
    fill_p50_s: float
    fill_p90_s: float
    expired: int
    cancelled: int
    rejected: int
    wage_mean: float
    wage_median: float
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


def weighted_median(pairs: Sequence[tuple[float, int]]) -> float:
    """The median of values repeated by their weights (nearest rank), NaN for none."""
    total = sum(w for _, w in pairs)
    if total == 0:
        return float("nan")
    rank, seen = math.ceil(total / 2), 0
    for value, w in sorted(pairs):
        seen += w
        if seen >= rank:
            return value
    raise AssertionError("unreachable: the weights add up to the total")


def weighted_mean(pairs: Sequence[tuple[float, int]]) -> float:
    total = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / total if total else float("nan")


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


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def tally(
    requests: Sequence[ev.HireRequested],
    decisions: Iterable[BaseModel],
    group_of: Callable[[ev.HireRequested], str],
    checkins: Iterable[ev.WorkerCheckedIn] = (),
    seekers_of: Seekers | None = None,
) -> dict[str, Tally]:
    """Fold the decisions about the requests, and the check-ins, into one tally per group."""
    req = {r.request_id: r for r in requests}
    groups: dict[str, Tally] = {}
    for r in req.values():
        t = groups.setdefault(group_of(r), Tally())
        t.requests += 1
        t.positions += r.headcount
        t.wages.append((r.wage_yuan_per_day, r.headcount))
    first: dict[str, int] = {}
    made: dict[str, float] = {}
    for msg in decisions:
        found = req.get(getattr(msg, "request_id", ""))
        if found is not None:
            _take(groups[group_of(found)], found, msg, first, made)
    for rid, at in first.items():
        groups[group_of(req[rid])].first_offer_ms.append(at - req[rid].at_ms)
    if seekers_of is not None:
        for c in checkins:
            for g in seekers_of(c):
                groups.setdefault(g, Tally()).seekers.add(c.worker_id)
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
        case ev.RequestFilled() if r.request_id not in t.filled:
            t.filled.add(r.request_id)
            t.fill_ms.append(msg.at_ms - r.at_ms)
        case ev.RequestExpired():
            t.expired.add(r.request_id)
        case ev.RequestCancelled():
            t.cancelled.add(r.request_id)
        case ev.RequestRejected():
            t.rejected.add(r.request_id)


def outcome(group: str, t: Tally) -> Outcome:
    """The indicators of one tally."""
    offers = sum(t.offers.values())
    return Outcome(
        group=group,
        requests=t.requests,
        positions=t.positions,
        job_seekers=len(t.seekers),
        positions_per_seeker=_ratio(t.positions, len(t.seekers)),
        assignments=len(t.assigned),
        workers_served=len(t.served),
        fill_rate=_ratio(len(t.filled), t.requests),
        positions_filled=_ratio(len(t.assigned), t.positions),
        first_offer_p50_s=percentile(t.first_offer_ms, 50) / 1000,
        first_offer_p90_s=percentile(t.first_offer_ms, 90) / 1000,
        fill_p50_s=percentile(t.fill_ms, 50) / 1000,
        fill_p90_s=percentile(t.fill_ms, 90) / 1000,
        expired=len(t.expired),
        cancelled=len(t.cancelled),
        rejected=len(t.rejected),
        wage_mean=weighted_mean(t.wages),
        wage_median=weighted_median(t.wages),
        offers=offers,
        offers_per_assignment=_ratio(offers, len(t.assigned)),
        distance_km=_mean(t.distance_km),
        workers_offered=len(t.offers),
        offers_gini=gini(t.offers.values()),
    )


ALL = "all"


def outcomes(
    requests: Sequence[ev.HireRequested],
    decisions: Iterable[BaseModel],
    group_of: Callable[[ev.HireRequested], str],
    checkins: Sequence[ev.WorkerCheckedIn] = (),
    seekers_of: Seekers | None = None,
) -> list[Outcome]:
    """Indicators per group (sorted), then ``all`` over every request and check-in (always
    present, zeros for an empty window). ``seekers_of`` names the groups a check-in counts in
    (none: job seekers are not counted)."""
    decisions = list(decisions)
    per = tally(requests, decisions, group_of, checkins, seekers_of)
    every = None if seekers_of is None else (lambda _: (ALL,))
    total = tally(requests, decisions, lambda _: ALL, checkins, every).get(ALL, Tally())
    return [outcome(g, per[g]) for g in sorted(per)] + [outcome(ALL, total)]
