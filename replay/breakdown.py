"""How reports break the figures down: by prefecture, county, market, skill, day or month.

A grouping says which group a request counts in, which groups a worker's check-in counts in
(a worker with three skills is a job seeker for each), and what a group is called, in Chinese
and English, from the registry (``infra.markets``; skills from ``schemas.names``).

- A request for a market the registry does not hold is rejected by the dispatcher: it counts in
  the group ``unregistered`` ("未登记市场 · 已拒绝 unregistered market · rejected"), never in an
  unlabelled ``?``.
- A worker who checked in by location (no market) counts at the nearest registered market.
- County: the county-town centre the market was placed around (``replay.counties``).
- Days and months are China Standard Time.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal, get_args

import numpy as np

from infra.markets import Market, Prefecture, load_prefectures, registry
from replay.counties import counties
from replay.timeline import LOCAL
from schemas import events as ev
from schemas.names import SKILL_NAMES_ZH, skill_en

By = Literal["prefecture", "county", "market", "skill", "day", "month"]
BY: Final[tuple[str, ...]] = get_args(By)
UNREGISTERED: Final = "unregistered"
OTHERS: Final = "others"
ALL: Final = "all"
FIXED_LABELS: Final = {
    UNREGISTERED: ("未登记市场 · 已拒绝", "unregistered market · rejected"),
    OTHERS: ("其他", "others"),
    ALL: ("合计", "all"),
}


@dataclass(frozen=True, slots=True)
class Grouping:
    """Which group a request, and a check-in, count in; and the groups' names."""

    by: str
    request: Callable[[ev.HireRequested], str]
    seekers: Callable[[ev.WorkerCheckedIn], Iterable[str]]
    label: Callable[[str], tuple[str, str]]  # group -> (Chinese, English)

    def name(self, group: str) -> str:
        """Both names in one, as the command line prints a group."""
        zh, en = self.label(group)
        return f"{zh} {en}".strip()

    def keeping(self, kept: set[str]) -> Grouping:
        """The same grouping with every group not kept folded into ``others``."""

        def fold(g: str) -> str:
            return g if g in kept else OTHERS

        return Grouping(
            self.by,
            lambda r: fold(self.request(r)),
            lambda c: {fold(g) for g in self.seekers(c)},
            self.label,
        )


class Registry:
    """Markets, prefectures and counties by id, with their names, from the shipped registry."""

    def __init__(self) -> None:
        self.markets: dict[str, Market] = registry()
        self.prefectures: dict[str, Prefecture] = {p.code: p for p in load_prefectures()}
        self.counties = counties()
        ids = list(self.markets)
        self._ids = ids
        self._lonlat = np.array([(self.markets[m].lon, self.markets[m].lat) for m in ids])

    # --- names ---------------------------------------------------------------------------

    def market_label(self, market_id: str) -> tuple[str, str]:
        m = self.markets.get(market_id)
        if m is None:
            zh, en = FIXED_LABELS[UNREGISTERED]
            return f"{zh} {market_id}", f"{en} ({market_id})"
        return f"{m.name_zh} ({market_id})", m.name_en

    def prefecture_label(self, code: str) -> tuple[str, str]:
        p = self.prefectures.get(code)
        return (p.name_zh, p.name_en) if p else FIXED_LABELS.get(code, (code, code))

    def county_label(self, key: str) -> tuple[str, str]:
        c = self.counties.centres.get(key)
        if c is None:
            return FIXED_LABELS.get(key, (key, key))
        zh, en = self.prefecture_label(c.prefecture_code)
        return c.label(zh, en), ""

    def names(self) -> dict[str, str]:
        """Market ids and prefecture codes to the names a person reads (Chinese, then English)."""
        out = {m: f"{v.name_zh} {v.name_en} ({m})" for m, v in self.markets.items()}
        return out | {c: f"{p.name_zh} {p.name_en} ({c})" for c, p in self.prefectures.items()}

    # --- places --------------------------------------------------------------------------

    def places(self) -> dict[str, tuple[float, float]]:
        return {m: (v.lon, v.lat) for m, v in self.markets.items()}

    def scope(self, market: str | None, prefecture: str | None) -> set[str] | None:
        """The market ids a command is limited to (None: every market)."""
        if market:
            return {market}
        if prefecture:
            return {m for m, v in self.markets.items() if v.prefecture_code == prefecture}
        return None

    def prefecture_of(self, market_id: str) -> str:
        m = self.markets.get(market_id)
        return m.prefecture_code if m else UNREGISTERED

    def county_of(self, market_id: str) -> str:
        return self.counties.of_market.get(market_id, UNREGISTERED)

    def market_of(self, c: ev.WorkerCheckedIn) -> str:
        """Where a check-in counts: its market, else the registered market nearest to it."""
        if c.market_id is not None:
            return c.market_id
        return self._nearest(round(c.lon, 4), round(c.lat, 4))

    @functools.lru_cache(maxsize=65_536)  # noqa: B019 - one registry per process
    def _nearest(self, lon: float, lat: float) -> str:
        d = (self._lonlat[:, 0] - lon) * np.cos(np.radians(lat))
        i = int(np.argmin(d * d + (self._lonlat[:, 1] - lat) ** 2))
        return self._ids[i]

    # --- groupings -----------------------------------------------------------------------

    def grouping(self, by: str) -> Grouping:
        """The grouping ``by`` one of ``BY``."""
        return {
            "prefecture": lambda: self._by_place(by, self.prefecture_of, self.prefecture_label),
            "county": lambda: self._by_place(by, self.county_of, self.county_label),
            "market": lambda: self._by_place(by, lambda m: m, self.market_label),
            "skill": lambda: Grouping(
                by, lambda r: r.skill, lambda c: c.skills, _fixed(skill_label)
            ),
            "day": lambda: _by_time("day", "%Y-%m-%d"),
            "month": lambda: _by_time("month", "%Y-%m"),
        }[by]()

    def _by_place(
        self, by: str, of: Callable[[str], str], label: Callable[[str], tuple[str, str]]
    ) -> Grouping:
        return Grouping(
            by, lambda r: of(r.market_id), lambda c: (of(self.market_of(c)),), _fixed(label)
        )


def skill_label(skill: str) -> tuple[str, str]:
    return SKILL_NAMES_ZH.get(skill, skill), skill_en(skill)


def day_of(at_ms: int, fmt: str) -> str:
    """The day (``%Y-%m-%d``) or month (``%Y-%m``) of an instant, China Standard Time."""
    return datetime.fromtimestamp(at_ms / 1000, UTC).astimezone(LOCAL).strftime(fmt)


def _by_time(by: str, fmt: str) -> Grouping:
    return Grouping(
        by,
        lambda r: day_of(r.at_ms, fmt),
        lambda c: (day_of(c.at_ms, fmt),),
        _fixed(lambda g: (g, g)),
    )


def _fixed(label: Callable[[str], tuple[str, str]]) -> Callable[[str], tuple[str, str]]:
    """A label function that also names ``all``, ``others`` and ``unregistered``."""

    def named(group: str) -> tuple[str, str]:
        if group in (ALL, OTHERS):
            return FIXED_LABELS[group]
        return label(group)

    return named
