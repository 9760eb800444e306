"""Deterministic benchmark data: workers across the province and a realistic request mix.

Workers are placed around the 486 gig markets and 4,609 micro-markets with the simulator's own
helpers (``producers.population``): a gig market draws three times the people of a
micro-market and markets cluster around the prefecture seats, so the index is densest around
Changsha and the other seats, as it is in the province. Requests come from markets in
proportion to their traffic, with the province's skill demand (general labour, moving and
cleaning lead) and headcounts of 1 to 10.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from dispatch.model import Job
from infra.markets import Market, load_markets
from infra.ports import Presence
from producers.population import (
    WORKER_SPREAD_KM,
    MarketPicker,
    near,
    pick_headcount,
    pick_skill,
    worker_skills,
)

T = TypeVar("T")
WORKER_SEED = 7
REQUEST_SEED = 11
DEADLINE_MS = 10 * 60_000


def worker_id(n: int) -> str:
    """The id of the n-th benchmark worker."""
    return f"W{n:07d}"


@dataclass(frozen=True, slots=True)
class Province:
    """The markets and a picker weighted by their traffic."""

    markets: Sequence[Market]
    picker: MarketPicker

    @classmethod
    def load(cls) -> Province:
        markets = load_markets()
        return cls(markets, MarketPicker(markets))


def check_ins(province: Province, count: int, seed: int = WORKER_SEED) -> Iterator[Presence]:
    """``count`` worker check-ins, a few kilometres around the markets."""
    rng = random.Random(seed)
    for n in range(count):
        market = province.picker(rng)
        lon, lat = near(rng, market.lon, market.lat, WORKER_SPREAD_KM)
        yield Presence(worker_id(n), "checkin", lon, lat, worker_skills(rng))


def jobs(province: Province, count: int, tag: str, now_ms: int, seed: int) -> list[Job]:
    """``count`` instant-hire requests at their markets' places, open for ten minutes."""
    rng = random.Random(seed)
    out = []
    for n in range(count):
        market = province.picker(rng)
        out.append(
            Job(
                request_id=f"B{tag}-{n:06d}",
                market_id=market.market_id,
                skill=pick_skill(rng),
                headcount=pick_headcount(rng),
                wage_yuan_per_day=float(rng.choice((180, 200, 250, 300))),
                lon=market.lon,
                lat=market.lat,
                requested_at_ms=now_ms,
                start_at_ms=now_ms + 30 * 60_000,
                deadline_at_ms=now_ms + DEADLINE_MS,
            )
        )
    return out


def chunked(items: Sequence[T], size: int) -> Iterator[list[T]]:
    """Consecutive slices of ``size`` items."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
