"""Who works and who hires: skill mixes and headcounts for simulated workers and requests.

Demand is skewed the way gig markets are: general labour, moving, cleaning and building trades
are asked for most; a handful of skills are rare. Workers are spread over the markets (so over
the province by population), a few kilometres around each.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from itertools import accumulate
from typing import Final

from infra.markets import Market
from schemas.events import SKILLS

# Relative demand per skill, in the order of schemas.events.SKILLS.
DEMAND: Final = (
    9,
    5,
    4,
    4,
    4,
    3,
    4,
    3,
    14,
    9,
    8,
    6,
    4,
    3,
    4,
    4,
    6,
    3,
    6,
    3,
)
HEADCOUNTS: Final = (1, 2, 3, 4, 5, 6, 8, 10)
HEADCOUNT_WEIGHTS: Final = (34, 24, 14, 9, 7, 5, 4, 3)
WORKER_SPREAD_KM: Final = 4.0


def pick_skill(rng: random.Random) -> str:
    return rng.choices(SKILLS, weights=DEMAND)[0]


def worker_skills(rng: random.Random) -> tuple[str, ...]:
    """One main skill, and a second one for about a quarter of workers."""
    first = pick_skill(rng)
    if rng.random() < 0.25:
        second = pick_skill(rng)
        if second != first:
            return (first, second)
    return (first,)


def pick_headcount(rng: random.Random) -> int:
    return rng.choices(HEADCOUNTS, weights=HEADCOUNT_WEIGHTS)[0]


def near(rng: random.Random, lon: float, lat: float, spread_km: float) -> tuple[float, float]:
    """A point at a random bearing, half-normally distributed distance from (lon, lat)."""
    d = min(abs(rng.gauss(0, spread_km)), 3 * spread_km)
    bearing = rng.uniform(0, 2 * math.pi)
    dlat = d * math.cos(bearing) / 111.32
    dlon = d * math.sin(bearing) / (111.32 * math.cos(math.radians(lat)))
    return round(lon + dlon, 5), round(lat + dlat, 5)


class MarketPicker:
    """Draws markets; a gig market sees three times the traffic of a community micro-market."""

    def __init__(self, markets: Sequence[Market]) -> None:
        self.markets = list(markets)
        self.cum = list(accumulate(3.0 if m.kind == "gig" else 1.0 for m in self.markets))

    def __call__(self, rng: random.Random) -> Market:
        return rng.choices(self.markets, cum_weights=self.cum)[0]
