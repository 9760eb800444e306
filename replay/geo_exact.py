"""Redis GEO arithmetic, reproduced in Python, so the in-memory sandbox finds exactly what the
live Redis index found: the same members, the same distances to the last printed digit.

Redis stores a member as a 52-bit geohash (26 bits per axis) and measures from the centre of
that hash cell, with a haversine on a sphere of radius 6,372,797.560856 m, printing distances
with four decimals. The functions below follow ``geohash.c`` and ``geohash_helper.c`` step by
step (the same double arithmetic and the same libm), which is what makes a replay exact.
"""

from __future__ import annotations

import math
from typing import Final

EARTH_RADIUS_M: Final = 6372797.560856
D_R: Final = math.pi / 180.0
LON_MIN, LON_MAX = -180.0, 180.0
LAT_MIN, LAT_MAX = -85.05112878, 85.05112878
STEP: Final = 26
SCALE: Final = float(1 << STEP)


def stored_point(lon: float, lat: float) -> tuple[float, float]:
    """Where Redis places a member added at (lon, lat): the centre of its geohash cell."""
    ilat = int((lat - LAT_MIN) / (LAT_MAX - LAT_MIN) * SCALE)
    ilon = int((lon - LON_MIN) / (LON_MAX - LON_MIN) * SCALE)
    lat_scale, lon_scale = LAT_MAX - LAT_MIN, LON_MAX - LON_MIN
    lat_lo = LAT_MIN + (ilat * 1.0 / SCALE) * lat_scale
    lat_hi = LAT_MIN + ((ilat + 1) * 1.0 / SCALE) * lat_scale
    lon_lo = LON_MIN + (ilon * 1.0 / SCALE) * lon_scale
    lon_hi = LON_MIN + ((ilon + 1) * 1.0 / SCALE) * lon_scale
    x = min(LON_MAX, max(LON_MIN, (lon_lo + lon_hi) / 2))
    y = min(LAT_MAX, max(LAT_MIN, (lat_lo + lat_hi) / 2))
    return x, y


def distance_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Redis's haversine (``geohashGetDistance``), in metres."""
    lon1r, lon2r = lon1 * D_R, lon2 * D_R
    v = math.sin((lon2r - lon1r) / 2)
    if v == 0.0:
        return EARTH_RADIUS_M * abs(lat2 * D_R - lat1 * D_R)
    lat1r, lat2r = lat1 * D_R, lat2 * D_R
    u = math.sin((lat2r - lat1r) / 2)
    a = u * u + math.cos(lat1r) * math.cos(lat2r) * v * v
    return 2.0 * EARTH_RADIUS_M * math.asin(math.sqrt(a))


def printed_km(metres: float) -> float:
    """The distance as ``GEOSEARCH … WITHDIST`` prints it in km (four decimals)."""
    return float(f"{metres / 1000.0:.4f}")
