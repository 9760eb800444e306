"""Unit tests for the market registry (infra.markets)."""

from __future__ import annotations

from collections import Counter

import pytest

from infra.markets import (
    DEFAULT_MARKETS,
    LAT_MAX,
    LAT_MIN,
    LON_MAX,
    LON_MIN,
    Market,
    Prefecture,
    apportion,
    generate_markets,
    load_markets,
    load_prefectures,
)

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def prefectures() -> list[Prefecture]:
    return load_prefectures()


@pytest.fixture(scope="module")
def markets(prefectures: list[Prefecture]) -> list[Market]:
    return generate_markets(prefectures)


def test_fourteen_prefectures(prefectures: list[Prefecture]) -> None:
    assert len(prefectures) == 14
    assert len({p.code for p in prefectures}) == 14


def test_totals_are_exact(markets: list[Market]) -> None:
    kinds = Counter(m.kind for m in markets)
    assert kinds == {"gig": 486, "micro": 4609}


def test_custom_totals_are_exact(prefectures: list[Prefecture]) -> None:
    small = generate_markets(prefectures, gig_total=17, micro_total=101, seed=1)
    assert Counter(m.kind for m in small) == {"gig": 17, "micro": 101}


def test_apportion_largest_remainder() -> None:
    assert apportion(10, [1.0, 1.0, 1.0]) == [4, 3, 3]
    assert apportion(7, [0.5, 0.3, 0.2]) == [4, 2, 1]
    assert sum(apportion(4609, [10.05, 1.51, 2.49, 3.83])) == 4609


def test_ids_unique_and_well_formed(markets: list[Market]) -> None:
    ids = [m.market_id for m in markets]
    assert len(ids) == len(set(ids))
    for m in markets:
        width = 3 if m.kind == "gig" else 4
        prefix = "G" if m.kind == "gig" else "M"
        assert m.market_id.startswith(prefix + m.prefecture_code)
        assert len(m.market_id) == 1 + 4 + width


def test_names_follow_pattern(markets: list[Market]) -> None:
    gig = next(m for m in markets if m.market_id == "G4301001")
    assert (gig.name_zh, gig.name_en) == ("长沙市第1零工市场", "Changsha Gig Market 1")
    micro = next(m for m in markets if m.market_id == "M43080001")
    assert micro.name_zh == "张家界市社区就业微市场1"
    assert micro.name_en == "Zhangjiajie Community Micro-market 1"


def test_inside_province_bounds(markets: list[Market]) -> None:
    for m in markets:
        assert LON_MIN <= m.lon <= LON_MAX, m
        assert LAT_MIN <= m.lat <= LAT_MAX, m


def test_deterministic(prefectures: list[Prefecture], markets: list[Market]) -> None:
    assert generate_markets(prefectures) == markets
    assert generate_markets(prefectures, seed=1) == generate_markets(prefectures, seed=1)
    assert generate_markets(prefectures, seed=1) != markets


def test_population_drives_counts(markets: list[Market]) -> None:
    per_pref = Counter((m.prefecture_code, m.kind) for m in markets)
    assert per_pref["4301", "gig"] > per_pref["4308", "gig"]
    assert per_pref["4301", "micro"] > per_pref["4308", "micro"]


def test_shipped_csv_matches_generator(markets: list[Market]) -> None:
    assert load_markets(DEFAULT_MARKETS) == markets
