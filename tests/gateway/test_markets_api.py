"""The market picker's search (GET /api/v1/markets) and the skills' names (GET /api/v1/skills).

Both answer from the registry and the names table alone, so the app is driven in process
without its lifespan: no Kafka, Redis or PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from dispatch.geo import haversine_km
from gateway.app import create_app
from gateway.market_search import LIMIT_MAX, QUERY_MAX, fold, registry, search
from infra.settings import Settings
from schemas import events as ev

pytestmark = pytest.mark.unit
XIANGTAN_SEAT = (112.94, 27.83)  # lon, lat


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(Settings()))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        yield client


async def find(http: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    response = await http.get("/api/v1/markets", params=params)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()
    return found


async def test_chinese_names_match(http: httpx.AsyncClient) -> None:
    found = await find(http, q="湘潭市第3零工", limit=5)
    assert found[0]["market_id"] == "G4303003"
    assert found[0]["name_zh"] == "湘潭市第3零工市场"
    assert found[0]["name_en"] == "Xiangtan Gig Market 3"
    assert found[0]["prefecture"] == "4303" and found[0]["prefecture_zh"] == "湘潭市"
    assert all("湘潭市第3" in m["name_zh"] for m in found)
    assert all(m.get("distance_km") is None for m in found)  # no position, no distance


async def test_english_names_match_in_any_case_word_by_word(http: httpx.AsyncClient) -> None:
    found = await find(http, q="CHANGSHA gig market 1", limit=3)
    # The name as written comes first, then names that hold it (10, 11, …).
    assert [m["market_id"] for m in found] == ["G4301001", "G4301010", "G4301011"]
    words = await find(http, q="micro zhuzhou", limit=50)
    assert len(words) == 50
    assert all(m["kind"] == "micro" and m["prefecture_en"] == "Zhuzhou" for m in words)


async def test_a_code_matches_exactly_first_even_in_full_width(http: httpx.AsyncClient) -> None:
    assert [m["market_id"] for m in await find(http, q="g4301002")][:1] == ["G4301002"]
    assert [m["market_id"] for m in await find(http, q="Ｇ４３０１００２")] == ["G4301002"]
    # A prefecture's code finds its markets.
    assert {m["prefecture"] for m in await find(http, q="4305", limit=50)} == {"4305"}


async def test_nearest_first_with_distances(http: httpx.AsyncClient) -> None:
    lon, lat = XIANGTAN_SEAT
    found = await find(http, lon=lon, lat=lat, limit=20)
    distances = [m["distance_km"] for m in found]
    assert distances == sorted(distances)
    nearest = min(registry(), key=lambda e: haversine_km(lon, lat, e.hit.lon, e.hit.lat))
    assert found[0]["market_id"] == nearest.hit.market_id
    assert distances[0] == pytest.approx(haversine_km(lon, lat, found[0]["lon"], found[0]["lat"]),
                                         abs=0.01)  # fmt: skip
    # With a query too: only matches, still nearest first.
    gig = await find(http, q="gig", lon=lon, lat=lat, limit=5)
    assert all(m["kind"] == "gig" for m in gig)
    assert [m["distance_km"] for m in gig] == sorted(m["distance_km"] for m in gig)
    assert gig[0]["prefecture_en"] == "Xiangtan"


async def test_no_match_is_an_empty_list(http: httpx.AsyncClient) -> None:
    assert await find(http, q="Atlantis") == []


@pytest.mark.parametrize(
    "params",
    [
        {"q": "x" * (QUERY_MAX + 1)},
        {"limit": LIMIT_MAX + 1},
        {"limit": 0},
        {"limit": "many"},
        {"lon": 112.9},  # lat missing
        {"lat": 27.8},  # lon missing
        {"lon": 181, "lat": 27.8},
        {"lon": 112.9, "lat": -91},
        {"lon": "nan", "lat": 27.8},
        {"lon": "inf", "lat": 27.8},
    ],
)
async def test_bounds_are_422(http: httpx.AsyncClient, params: dict[str, Any]) -> None:
    response = await http.get("/api/v1/markets", params=params)
    assert response.status_code == 422, response.text
    assert "detail" in response.json()


async def test_limits_hold(http: httpx.AsyncClient) -> None:
    assert len(await find(http)) == 20
    assert len(await find(http, limit=LIMIT_MAX)) == LIMIT_MAX
    assert len(await find(http, q="x" * QUERY_MAX)) == 0


async def test_skills_have_chinese_and_english_names(http: httpx.AsyncClient) -> None:
    response = await http.get("/api/v1/skills")
    assert response.status_code == 200
    skills = response.json()
    assert [s["skill"] for s in skills] == list(ev.SKILLS)
    assert {"skill": "rebar_worker", "name_zh": "钢筋工", "name_en": "rebar worker"} in skills
    assert all(s["name_zh"] and s["name_en"] for s in skills)


def test_search_is_pure_and_folds_case_and_width() -> None:
    assert fold("  Ｇ４３０１  Gig ") == "g4301 gig"
    index = registry()
    assert search(index, "长沙市第1零工市场", None, 1)[0].market_id == "G4301001"
    assert search(index, "", (113.0, 28.2), 3)[0].distance_km is not None
