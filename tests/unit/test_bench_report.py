"""The benchmark report: the targets for one Redis and a Redis Cluster side by side, the
PostGIS peer beside the project on the same requests, the scaling runs; and the keys the
suite writes are the ones ``docs/benchmarks.md`` explains."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import match, report, run

pytestmark = pytest.mark.unit

DOCS = (Path(__file__).parents[2] / "docs" / "benchmarks.md").read_text()


def project_round(rate: float, filled: int) -> match.ProjectRound:
    return match.ProjectRound(
        decisions_per_s=rate, offers=12, requests_offered=4, held=[], filled=filled,
        offered_near=3, filled_near=2, batch_ms=(100.0, 120.0, 400.0),
    )  # fmt: skip


def store_figures(full_vs_postgis: float, bytes_per_worker: float) -> dict[str, Any]:
    return {
        "presence": {"events_per_s": 60_000, "checkin_events_per_s": 40_000},
        "memory": {"redis_bytes_per_worker": bytes_per_worker},
        "match": {
            "project_decisions_per_s": 9000.0, "project_full_decisions_per_s": 3000.0,
            "naive_decisions_per_s": 300.0, "redis_ceiling_per_s": 30_000.0,
            "project_vs_naive": 30.0, "project_vs_ceiling": 0.3,
        },
        "same_requests": run.same_summary([project_round(3000, 3), project_round(2000, 1)], 4, 500),
        "full_decision_vs_postgis": full_vs_postgis,
    }  # fmt: skip


def result() -> dict[str, Any]:
    spec = match.ScalingSpec("redis://x", False, "p", 64, 2, 4000, 500, 1)
    timed: dict[int, list[match.Timed]] = {
        0: [(0.0, 2.0, 4000, (90.0, 110.0))],
        1: [(0.5, 2.5, 4000, (95.0, 300.0))],
    }
    peer = {"decisions_per_s": 1000.0, "p50_ms": 1.0, "p99_ms": 4.0, "offered": 3, "filled": 2}
    size = {
        "workers": 100_000,
        **store_figures(3.5, 140.0),
        "e2e": {"max_sustained_requests_per_s": 3200.0,
                "latency_ms_at_1000_rps": {"p50": 20.0, "p99": 60.0, "p999": 90.0}},
        "cluster": store_figures(2.5, 160.0),
        "postgis": {"by_connections": {"4": peer}, "best": {"connections": 4, **peer}},
        "scaling": {"workers": 100_000, "batch": 500, "requests_per_process": 4000, "rounds": 1,
                    "runs": [{"store": "redis", "redis_nodes": 1,
                              **match.scaling_summary(spec, timed)}]},
    }  # fmt: skip
    return {**size, "sizes": [size], "run": {"started": "t", "command": "c", "machine": "m",
                                             "rounds": 1}}  # fmt: skip


def test_targets_are_judged_for_each_store_and_unmeasured_ones_say_so() -> None:
    rows = {row[0]: row[1:] for row in report.target_rows(result())}
    assert rows["full decision ÷ PostGIS peer, same requests"] == (
        "≥ 3",
        "3.50",
        "yes",
        "2.50",
        "**no**",
    )
    assert rows["memory: Redis bytes per worker"][1:] == ("140.00", "yes", "160.00", "**no**")
    assert rows["e2e: p99 at 1,000 requests/s (ms)"][1:] == ("60.00", "**no**", "—", "not measured")


def test_the_report_shows_the_peer_the_project_and_the_scaling_runs() -> None:
    text = report.markdown(result())
    assert "| 100,000 | PostGIS, 4 connections | 1,000 | 1.00 | 4.00 | 3 | 2 | — | — |" in text
    # medians of the two rounds: 2,500/s, within the first radius 3 offered and 2 filled
    assert "| 100,000 | project, Redis Cluster, batch 500 | 2,500 |" in text
    # two processes, 8,000 decisions from the first start (0 s) to the last end (2.5 s)
    assert "| redis | 1 | 2 | 3,200 | 95 | 300 | 4 |" in text


def test_a_project_decision_is_filled_when_it_holds_every_worker_its_first_wave_wants() -> None:
    same = run.same_summary([project_round(3000, 3)], 4, 500)
    assert (same["offered"], same["filled"]) == (4, 3)
    assert (same["offered_within_first_radius"], same["filled_within_first_radius"]) == (3, 2)
    assert same["p99_ms"] == 400.0


def test_the_keys_the_suite_writes_are_documented() -> None:
    same = run.same_summary([project_round(3000, 3)], 4, 500)
    spec = match.ScalingSpec("redis://x", False, "p", 64, 1, 10, 5, 1)
    scaling = match.scaling_summary(spec, {0: [(0.0, 1.0, 10, (1.0, 2.0))]})
    for key in ("cluster", "postgis.best", "full_decision_vs_postgis", "redis_nodes"):
        assert f"`{key}" in DOCS, key
    for key in same:
        assert key in DOCS or key.endswith("_fraction"), key
    for key in scaling:
        assert f"`{key}`" in DOCS or f".{key}`" in DOCS, key
