"""Counties, as far as the registry knows them: the county-town centre each market lies around.

The registry holds prefectures and markets, not counties. Its generator (``infra.markets``)
places every market around a *centre*: the prefecture's seat or one of 4-8 satellite county
towns. Replaying the generator's random draws in their fixed order gives back each market's
centre exactly (and the replay is checked: every market must come out at its registered
coordinates). A market that does not (a registry edited by hand) gets its nearest centre.

So here **county = the county-town centre a market was placed around**. The centres have no
names in the registry; they are labelled by prefecture and number (centre 0 is the seat) and
nothing else is made up.
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass

from infra import markets as mk

Point = tuple[float, float]


@dataclass(frozen=True, slots=True)
class County:
    """A county-town centre: ``4301-0`` is Changsha's seat, ``4301-3`` its third county town."""

    key: str
    prefecture_code: str
    number: int
    lon: float
    lat: float

    def label(self, prefecture_zh: str, prefecture_en: str) -> str:
        if self.number == 0:
            return f"{prefecture_zh}·中心城区 {prefecture_en} seat"
        return f"{prefecture_zh}·第{self.number}县城 {prefecture_en} county town {self.number}"


@dataclass(frozen=True, slots=True)
class Counties:
    centres: dict[str, County]  # key -> centre
    of_market: dict[str, str]  # market id -> county key
    exact: int  # markets whose centre came from the replayed generator (the rest: nearest)


def _placed(centres: list[Point], rng: random.Random) -> tuple[int, Point]:
    """``infra.markets._place``, also telling which centre it drew (same draws, same order)."""
    centre = mk._pick_centre(centres, rng)
    km = min(abs(rng.gauss(0.0, mk.SPREAD_SIGMA_KM)), mk.SPREAD_CAP_KM)
    lon, lat = mk._clamp(mk._offset(centre, km, mk._bearing(rng)))
    point = round(lon, mk.COORD_DECIMALS), round(lat, mk.COORD_DECIMALS)
    return centres.index(centre), point


def _replay(seed: int) -> tuple[dict[str, County], dict[str, tuple[int, Point]]]:
    """Every prefecture's centres, and for each market id its centre and generated place."""
    rng = random.Random(seed)
    prefectures = mk.load_prefectures()
    weights = [p.population_m for p in prefectures]
    gig, micro = mk.apportion(mk.GIG_TOTAL, weights), mk.apportion(mk.MICRO_TOTAL, weights)
    centres: dict[str, County] = {}
    placed: dict[str, tuple[int, Point]] = {}
    for pref, n_gig, n_micro in zip(prefectures, gig, micro, strict=True):
        points = mk._centres(pref, rng)
        for i, (lon, lat) in enumerate(points):
            centres[f"{pref.code}-{i}"] = County(f"{pref.code}-{i}", pref.code, i, lon, lat)
        for n in range(1, n_gig + 1):
            placed[f"G{pref.code}{n:03d}"] = _placed(points, rng)
        for n in range(1, n_micro + 1):
            placed[f"M{pref.code}{n:04d}"] = _placed(points, rng)
    return centres, placed


def _nearest(centres: dict[str, County], m: mk.Market) -> str:
    mine = [c for c in centres.values() if c.prefecture_code == m.prefecture_code]
    scale = math.cos(math.radians(m.lat))
    return min(mine, key=lambda c: ((c.lon - m.lon) * scale) ** 2 + (c.lat - m.lat) ** 2).key


@functools.cache
def counties(seed: int = mk.DEFAULT_SEED) -> Counties:
    """The county of every registered market (computed once per process)."""
    centres, placed = _replay(seed)
    of_market: dict[str, str] = {}
    exact = 0
    for m in mk.load_markets():
        got = placed.get(m.market_id)
        if got is not None and got[1] == (m.lon, m.lat):
            of_market[m.market_id] = f"{m.prefecture_code}-{got[0]}"
            exact += 1
        else:
            of_market[m.market_id] = _nearest(centres, m)
    return Counties(centres, of_market, exact)
