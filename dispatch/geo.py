"""Distances and the map cells that shard the worker index.

Cells are squares of ``CELL_DEG`` degrees (about 22 by 20 km in Hunan). A 3 km search touches
one or two of them; a cell and skill holds some hundreds of workers around the prefecture seats
at a million workers, so most shards stay in Redis's compact listpack encoding (up to 512
members, ``zset-max-listpack-entries`` in the stack's Redis): about 20 bytes a member instead of
about 100 in a skiplist, and a search that reads a short array. A search of radius r reads every
cell its bounding box overlaps.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Final

CELL_DEG: Final = 0.2
EARTH_RADIUS_KM: Final = 6371.0088
KM_PER_DEG_LAT: Final = 111.32


def haversine_km(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Great-circle distance in kilometres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def cell_of(lon: float, lat: float) -> str:
    """The cell id holding a point, e.g. ``"565:141"``."""
    return f"{math.floor(lon / CELL_DEG)}:{math.floor(lat / CELL_DEG)}"


@lru_cache(maxsize=65536)  # requests come from a few thousand market places and radii
def cells_within(lon: float, lat: float, radius_km: float) -> tuple[str, ...]:
    """Every cell that a circle of ``radius_km`` around the point may reach, home cell first."""
    dlat = radius_km / KM_PER_DEG_LAT
    dlon = radius_km / (KM_PER_DEG_LAT * max(0.01, math.cos(math.radians(lat))))
    xs = range(math.floor((lon - dlon) / CELL_DEG), math.floor((lon + dlon) / CELL_DEG) + 1)
    ys = range(math.floor((lat - dlat) / CELL_DEG), math.floor((lat + dlat) / CELL_DEG) + 1)
    home = cell_of(lon, lat)
    others = sorted(f"{x}:{y}" for x in xs for y in ys if f"{x}:{y}" != home)
    return (home, *others)
