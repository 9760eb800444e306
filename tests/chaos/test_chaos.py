"""Any single component dies under load, and nothing is lost, left unannounced,
double-booked or over-filled.

Each scenario has a Kafka and a Redis of its own (PostgreSQL, the market registry, is the
shared one), checks workers in, posts a burst of requests, kills a component half-way through
the burst, waits until every acknowledged request ended, and runs the auditor over the log and
the store. ``short`` sizes run in ``make test``; ``full`` sizes (marked ``slow``) in
``make chaos``, which also writes bench/results/chaos.json and chaos.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from infra.audit import VIOLATIONS
from infra.keys import Keys
from infra.redis_cluster import Cluster
from tests.chaos.harness import FULL, SHORT, Fault, Outcome, Scene, Size, open_scene, run_with_fault

pytestmark = pytest.mark.chaos

BOTH = [pytest.param(SHORT, id="short"), pytest.param(FULL, id="full", marks=pytest.mark.slow)]
FULL_ONLY = [pytest.param(FULL, id="full", marks=pytest.mark.slow)]


def kill_dispatcher(restart: bool) -> Fault:
    async def fault(scene: Scene) -> None:
        victim = scene.dispatchers[0]
        victim.kill()
        if restart:
            victim.start()
        else:
            scene.killed.add(victim.name)

    return fault


async def redis_restarted_empty(scene: Scene) -> None:
    await asyncio.to_thread(scene.redis.restart_empty)


async def broker_killed(scene: Scene) -> None:
    await asyncio.to_thread(scene.cluster.kill, 0)


async def broker_restarted(scene: Scene) -> None:
    def kill_and_restart() -> None:
        scene.cluster.kill(0)
        scene.cluster.restart(0)

    await asyncio.to_thread(kill_and_restart)


async def primary_failed_over(scene: Scene) -> None:
    """``kill -9`` the primary of the timers (every batch writes there); once its replica has
    taken over, start the old primary again: it rejoins as the new primary's replica."""
    nodes = scene.redis
    assert isinstance(nodes, Cluster)
    key = Keys(scene.settings.key_prefix).timers()

    def kill_and_rejoin() -> None:
        port = nodes.primary_of(key)
        nodes.kill(port)
        nodes.wait_failed_over(port)
        nodes.start_node(port)
        nodes.wait_ok()

    await asyncio.to_thread(kill_and_rejoin)


async def scenario(
    tmp_path: Path,
    size: Size,
    name: str,
    fault: Fault,
    record_row: Callable[[dict[str, Any]], None],
    brokers: int = 1,
    redis_cluster: bool = False,
) -> Outcome:
    async with open_scene(tmp_path, size, brokers, redis_cluster) as scene:
        outcome = await run_with_fault(scene, name, fault)
        died = [s.name for s in scene.services if not s.alive() and s.name not in scene.killed]
    record_row(outcome.row())
    report = outcome.report
    assert {k: report.counts[k] for k in VIOLATIONS} == dict.fromkeys(VIOLATIONS, 0), report.table()
    assert (report.open, report.pending_outboxes) == (0, 0), report.table()
    assert outcome.acknowledged > 0 and outcome.ended == outcome.acknowledged, report.table()
    assert died == [], f"services that died on their own: {died}"
    return outcome


@pytest.mark.parametrize("size", BOTH)
async def test_a_dispatcher_killed_mid_burst_and_restarted(
    tmp_path: Path, size: Size, record_row: Callable[[dict[str, Any]], None]
) -> None:
    await scenario(
        tmp_path, size, "dispatcher kill -9, restarted", kill_dispatcher(True), record_row
    )


@pytest.mark.parametrize("size", FULL_ONLY)
async def test_a_dispatcher_killed_mid_burst_and_not_restarted(
    tmp_path: Path, size: Size, record_row: Callable[[dict[str, Any]], None]
) -> None:
    await scenario(
        tmp_path, size, "dispatcher kill -9, not restarted", kill_dispatcher(False), record_row
    )


@pytest.mark.parametrize("size", BOTH)
async def test_redis_restarted_empty_mid_burst(
    tmp_path: Path, size: Size, record_row: Callable[[dict[str, Any]], None]
) -> None:
    await scenario(tmp_path, size, "Redis restarted empty", redis_restarted_empty, record_row)


@pytest.mark.parametrize("size", FULL_ONLY)
async def test_one_of_three_brokers_killed_mid_burst(
    tmp_path: Path, size: Size, record_row: Callable[[dict[str, Any]], None]
) -> None:
    await scenario(
        tmp_path, size, "one of three brokers kill -9", broker_killed, record_row, brokers=3
    )


@pytest.mark.parametrize("size", BOTH)
async def test_the_single_broker_restarted_mid_burst(
    tmp_path: Path, size: Size, record_row: Callable[[dict[str, Any]], None]
) -> None:
    await scenario(tmp_path, size, "single broker kill -9, restarted", broker_restarted, record_row)


@pytest.mark.parametrize("size", BOTH)
async def test_a_redis_cluster_primary_killed_mid_burst(
    tmp_path: Path, size: Size, record_row: Callable[[dict[str, Any]], None]
) -> None:
    outcome = await scenario(
        tmp_path, size, "Redis Cluster primary kill -9", primary_failed_over, record_row,
        redis_cluster=True,
    )  # fmt: skip
    assert outcome.filled > 0  # dispatch went on: requests were filled across the failover
