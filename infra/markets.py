"""Market registry: the gig markets and community micro-markets of Hunan.

The registry is a deterministic function of the prefecture table
(``data/hunan_prefectures.csv``) and a seed; the shipped ``data/markets.csv``
is simply its output for the default seed, and a unit test keeps the two equal.

Placement rule
--------------
1. **Apportionment.** ``gig_total`` gig markets and ``micro_total`` micro-markets
   are shared out to the 14 prefectures in proportion to their 2020 population
   by the largest-remainder (Hamilton) method, so the totals are exact.
2. **Centres.** Each prefecture gets its seat plus 4-8 satellite "county towns",
   placed at a random bearing and 20-70 km from the seat. Centres are drawn once
   per prefecture and shared by both market kinds.
3. **Markets.** Each market picks a centre (the seat with probability 0.4, else a
   satellite uniformly) and is offset from it at a random bearing by a
   half-normal distance (sigma 18 km, capped at 90 km), so ~97 % of markets lie
   within 40 km of their centre.
4. **Bounds.** Coordinates are clamped to the province box lon 108.8-114.3,
   lat 24.6-30.1, and rounded to 5 decimals (about 1 m).

All randomness comes from one ``random.Random(seed)`` consumed in a fixed order
(prefectures in file order; per prefecture: centres, gig markets, micro-markets),
so the same seed always yields the same list.

Regenerate the data file with ``python -m infra.markets [--seed N] [--out PATH]``.
"""

from __future__ import annotations

import argparse
import csv
import functools
import math
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass
from pathlib import Path

DEFAULT_PREFECTURES = Path(__file__).parent / "data" / "hunan_prefectures.csv"
DEFAULT_MARKETS = Path(__file__).parent / "data" / "markets.csv"

DEFAULT_SEED = 20261126
GIG_TOTAL = 486
MICRO_TOTAL = 4609

LON_MIN, LON_MAX = 108.8, 114.3
LAT_MIN, LAT_MAX = 24.6, 30.1

SATELLITES_MIN, SATELLITES_MAX = 4, 8
SATELLITE_KM_MIN, SATELLITE_KM_MAX = 20.0, 70.0
SEAT_WEIGHT = 0.4
SPREAD_SIGMA_KM = 18.0
SPREAD_CAP_KM = 90.0
KM_PER_DEG_LAT = 111.32
COORD_DECIMALS = 5

MARKET_FIELDS = (
    "market_id",
    "kind",
    "name_zh",
    "name_en",
    "prefecture_code",
    "prefecture_en",
    "lon",
    "lat",
)


@dataclass(frozen=True, slots=True)
class Market:
    market_id: str
    kind: str  # "gig" or "micro"
    name_zh: str
    name_en: str
    prefecture_code: str
    prefecture_en: str
    lon: float
    lat: float


@dataclass(frozen=True, slots=True)
class Prefecture:
    code: str
    name_zh: str
    name_en: str
    seat_lon: float
    seat_lat: float
    population_m: float


Point = tuple[float, float]  # (lon, lat)


# --- prefectures -------------------------------------------------------------


def _prefecture_from_row(row: dict[str, str]) -> Prefecture:
    return Prefecture(
        code=row["code"],
        name_zh=row["name_zh"],
        name_en=row["name_en"],
        seat_lon=float(row["seat_lon"]),
        seat_lat=float(row["seat_lat"]),
        population_m=float(row["population_2020_millions"]),
    )


def load_prefectures(path: Path = DEFAULT_PREFECTURES) -> list[Prefecture]:
    """Read the prefecture table (file order is preserved)."""
    with path.open(encoding="utf-8", newline="") as fh:
        return [_prefecture_from_row(row) for row in csv.DictReader(fh)]


# --- apportionment -----------------------------------------------------------


def apportion(total: int, weights: Sequence[float]) -> list[int]:
    """Largest-remainder apportionment of ``total`` seats; ties go to the earlier index."""
    quotas = [total * w / sum(weights) for w in weights]
    counts = [math.floor(q) for q in quotas]
    by_remainder = sorted(range(len(quotas)), key=lambda i: (counts[i] - quotas[i], i))
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


# --- geometry ----------------------------------------------------------------


def _offset(origin: Point, km: float, bearing: float) -> Point:
    """Move ``km`` from ``origin`` along ``bearing`` (radians, 0 = north); flat-earth approx."""
    lon, lat = origin
    dlat = km * math.cos(bearing) / KM_PER_DEG_LAT
    dlon = km * math.sin(bearing) / (KM_PER_DEG_LAT * math.cos(math.radians(lat)))
    return lon + dlon, lat + dlat


def _clamp(point: Point) -> Point:
    lon, lat = point
    return min(max(lon, LON_MIN), LON_MAX), min(max(lat, LAT_MIN), LAT_MAX)


def _bearing(rng: random.Random) -> float:
    return rng.uniform(0.0, 2.0 * math.pi)


def _centres(pref: Prefecture, rng: random.Random) -> list[Point]:
    """The seat followed by 4-8 satellite county towns 20-70 km away."""
    seat = (pref.seat_lon, pref.seat_lat)
    count = rng.randint(SATELLITES_MIN, SATELLITES_MAX)
    satellites = [
        _clamp(_offset(seat, rng.uniform(SATELLITE_KM_MIN, SATELLITE_KM_MAX), _bearing(rng)))
        for _ in range(count)
    ]
    return [seat, *satellites]


def _pick_centre(centres: Sequence[Point], rng: random.Random) -> Point:
    if rng.random() < SEAT_WEIGHT:
        return centres[0]
    return rng.choice(centres[1:])


def _place(centres: Sequence[Point], rng: random.Random) -> Point:
    centre = _pick_centre(centres, rng)
    km = min(abs(rng.gauss(0.0, SPREAD_SIGMA_KM)), SPREAD_CAP_KM)
    lon, lat = _clamp(_offset(centre, km, _bearing(rng)))
    return round(lon, COORD_DECIMALS), round(lat, COORD_DECIMALS)


# --- markets -----------------------------------------------------------------


def _gig_market(pref: Prefecture, n: int, point: Point) -> Market:
    return Market(
        market_id=f"G{pref.code}{n:03d}",
        kind="gig",
        name_zh=f"{pref.name_zh}第{n}零工市场",
        name_en=f"{pref.name_en} Gig Market {n}",
        prefecture_code=pref.code,
        prefecture_en=pref.name_en,
        lon=point[0],
        lat=point[1],
    )


def _micro_market(pref: Prefecture, n: int, point: Point) -> Market:
    return Market(
        market_id=f"M{pref.code}{n:04d}",
        kind="micro",
        name_zh=f"{pref.name_zh}社区就业微市场{n}",
        name_en=f"{pref.name_en} Community Micro-market {n}",
        prefecture_code=pref.code,
        prefecture_en=pref.name_en,
        lon=point[0],
        lat=point[1],
    )


def _prefecture_markets(
    pref: Prefecture, gigs: int, micros: int, rng: random.Random
) -> tuple[list[Market], list[Market]]:
    centres = _centres(pref, rng)
    gig = [_gig_market(pref, n, _place(centres, rng)) for n in range(1, gigs + 1)]
    micro = [_micro_market(pref, n, _place(centres, rng)) for n in range(1, micros + 1)]
    return gig, micro


def generate_markets(
    prefectures: Sequence[Prefecture],
    gig_total: int = GIG_TOTAL,
    micro_total: int = MICRO_TOTAL,
    seed: int = DEFAULT_SEED,
) -> list[Market]:
    """All markets, gig markets first then micro-markets, each in prefecture file order."""
    rng = random.Random(seed)
    weights = [p.population_m for p in prefectures]
    plan = zip(
        prefectures, apportion(gig_total, weights), apportion(micro_total, weights), strict=True
    )
    gig: list[Market] = []
    micro: list[Market] = []
    for pref, n_gig, n_micro in plan:
        pref_gig, pref_micro = _prefecture_markets(pref, n_gig, n_micro, rng)
        gig += pref_gig
        micro += pref_micro
    return gig + micro


# --- CSV I/O -----------------------------------------------------------------


def write_markets_csv(markets: Iterable[Market], path: Path) -> None:
    """Write ``markets`` with the header ``MARKET_FIELDS`` (UTF-8, no BOM)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(MARKET_FIELDS)
        writer.writerows(astuple(m) for m in markets)


def _market_from_row(row: dict[str, str]) -> Market:
    return Market(
        market_id=row["market_id"],
        kind=row["kind"],
        name_zh=row["name_zh"],
        name_en=row["name_en"],
        prefecture_code=row["prefecture_code"],
        prefecture_en=row["prefecture_en"],
        lon=float(row["lon"]),
        lat=float(row["lat"]),
    )


def load_markets(path: Path = DEFAULT_MARKETS) -> list[Market]:
    """Read the market registry CSV (file order is preserved)."""
    with path.open(encoding="utf-8", newline="") as fh:
        return [_market_from_row(row) for row in csv.DictReader(fh)]


@functools.cache
def registry() -> dict[str, Market]:
    """The shipped registry by market id, read once per process."""
    return {m.market_id: m for m in load_markets()}


# --- CLI ---------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m infra.markets",
        description="Regenerate the Hunan market registry CSV deterministically from the "
        "prefecture table and a seed, then print the counts per prefecture.",
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help="RNG seed (default: %(default)s)"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_MARKETS, help="output CSV path (default: %(default)s)"
    )
    parser.add_argument(
        "--prefectures",
        type=Path,
        default=DEFAULT_PREFECTURES,
        help="prefecture table CSV (default: %(default)s)",
    )
    return parser.parse_args(argv)


def _print_counts(prefectures: Sequence[Prefecture], markets: Sequence[Market]) -> None:
    counts = Counter((m.prefecture_code, m.kind) for m in markets)
    print(f"{'code':<6}{'prefecture':<14}{'gig':>6}{'micro':>7}")
    for p in prefectures:
        print(f"{p.code:<6}{p.name_en:<14}{counts[p.code, 'gig']:>6}{counts[p.code, 'micro']:>7}")
    gig, micro = sum(m.kind == "gig" for m in markets), sum(m.kind == "micro" for m in markets)
    print(f"{'total':<20}{gig:>6}{micro:>7}")


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    prefectures = load_prefectures(args.prefectures)
    markets = generate_markets(prefectures, seed=args.seed)
    write_markets_csv(markets, args.out)
    _print_counts(prefectures, markets)
    print(f"wrote {len(markets)} markets to {args.out}")


if __name__ == "__main__":
    main()
