"""The sandbox finds what Redis finds, and a recorded run replays to the same decisions."""

from __future__ import annotations

import random

import pytest
from redis.asyncio import Redis

from dispatch.model import Policy, SearchSpec
from infra.keys import Keys
from infra.ports import Presence
from infra.redis_index import RedisWorkerIndex
from infra.settings import Settings
from replay import bench, runner
from replay.sandbox import ExactIndex


@pytest.mark.contract
@pytest.mark.integration
async def test_exact_index_searches_exactly_as_redis(settings: Settings, redis: Redis) -> None:
    rng = random.Random(5)
    crowd = [
        Presence(
            f"w{i}",
            "checkin",
            round(rng.uniform(112.7, 113.3), 5),
            round(rng.uniform(27.9, 28.5), 5),
            (rng.choice(("cook", "mover")),),
        )
        for i in range(3000)
    ]
    live, twin = RedisWorkerIndex(redis, Keys(settings.key_prefix, 64)), ExactIndex()
    await live.apply(crowd)
    await twin.apply(crowd)
    specs = [
        SearchSpec(
            "r",
            rng.choice(("cook", "mover")),
            rng.uniform(112.8, 113.2),
            rng.uniform(28.0, 28.4),
            rng.choice((3.0, 6.0, 12.0, 25.0)),
            24,
        )
        for _ in range(200)
    ]
    assert await live.search(specs) == await twin.search(specs)


@pytest.mark.unit
async def test_a_recorded_run_replays_to_identical_decisions() -> None:
    rec = bench.synthesise("4303", workers=800, rate=2.0, hours=0.05, seed=9)
    places = bench.places()
    live = await runner.simulate(rec, Policy(), runner.Responses(use_recorded=False), places)
    rec.journal = live.journal
    exact = await runner.replay_journal(rec)
    assert live.decisions and runner.compare(live.decisions, exact.decisions).identical
    other = await runner.simulate(rec, Policy(name="batch"), runner.Responses(), places)
    assert not runner.compare(live.decisions, other.decisions).identical
