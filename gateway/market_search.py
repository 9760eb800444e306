"""Finding a market by name or code, nearest first: the worker page's picker.

Pure functions over the registry (``infra.markets``), made once per process. A query matches a
market when each of its words occurs in the market's code, Chinese or English name, or its
prefecture's code or names; case and full-width forms (a Chinese keyboard's "１") are folded.
Best matches first: the exact code or name, then names holding the query as written, then the
rest; within each, the nearest when a position is given, else registry order.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from pydantic import BaseModel

from dispatch.geo import haversine_km
from infra.markets import Market, load_markets, load_prefectures

QUERY_MAX = 60  # characters of a search, more than any name
LIMIT_MAX = 50  # markets in one answer: a phone screen shows about ten


class MarketHit(BaseModel):
    """A market the search found, with its distance when a position was given."""

    market_id: str
    kind: str
    name_zh: str
    name_en: str
    prefecture: str  # the prefecture's code, e.g. "4301"
    prefecture_zh: str
    prefecture_en: str
    lon: float
    lat: float
    distance_km: float | None = None


@dataclass(frozen=True, slots=True)
class Entry:
    """One market and the folded text a query is matched against."""

    hit: MarketHit
    names: tuple[str, ...]  # the code and names, folded
    text: str  # everything a word may match, folded


def fold(text: str) -> str:
    """Compatibility-normalised, case-folded, single-spaced: how queries and names compare."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def entries(markets: Sequence[Market], prefecture_zh: dict[str, str]) -> tuple[Entry, ...]:
    """The search index of ``markets`` (registry order kept)."""
    return tuple(_entry(m, prefecture_zh.get(m.prefecture_code, "")) for m in markets)


def _entry(m: Market, pref_zh: str) -> Entry:
    hit = MarketHit(market_id=m.market_id, kind=m.kind, name_zh=m.name_zh, name_en=m.name_en,
                    prefecture=m.prefecture_code, prefecture_zh=pref_zh,
                    prefecture_en=m.prefecture_en, lon=m.lon, lat=m.lat)  # fmt: skip
    names = tuple(map(fold, (m.market_id, m.name_zh, m.name_en)))
    words = (m.market_id, m.name_zh, m.name_en, m.prefecture_code, pref_zh, m.prefecture_en)
    return Entry(hit, names, fold(" | ".join(words)))


def search(
    index: Sequence[Entry], query: str, near: tuple[float, float] | None, limit: int
) -> list[MarketHit]:
    """At most ``limit`` markets matching every word of ``query`` (all when it is blank), best
    match first, then nearest to ``near`` (lon, lat) if given, else in registry order."""
    q = fold(query)
    words = q.split()
    found = [(i, e) for i, e in enumerate(index) if all(w in e.text for w in words)]
    hits = [(_rank(e, q), _km(e.hit, near), i, e.hit) for i, e in found]
    hits.sort(key=lambda h: h[:3])
    return [_with_distance(hit, km, near) for _x, km, _i, hit in hits[:limit]]


def _rank(e: Entry, q: str) -> int:
    """0: the code or a name is the query; 1: a name holds it as written; 2: word by word."""
    if q in e.names:
        return 0
    return 1 if any(q in name for name in e.names[1:]) else 2


def _km(hit: MarketHit, near: tuple[float, float] | None) -> float:
    return 0.0 if near is None else haversine_km(near[0], near[1], hit.lon, hit.lat)


def _with_distance(hit: MarketHit, km: float, near: tuple[float, float] | None) -> MarketHit:
    return hit if near is None else hit.model_copy(update={"distance_km": round(km, 2)})


@cache
def registry() -> tuple[Entry, ...]:
    """The shipped registry's index (read once per process)."""
    names = {p.code: p.name_zh for p in load_prefectures()}
    return entries(load_markets(), names)
