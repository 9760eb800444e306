"""Writing results: ``latest.json``, a markdown table beside it, and a PNG plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TARGETS = (
    ("full decision ÷ PostGIS peer, same requests", ("full_decision_vs_postgis",), 3.0, "≥"),
    ("match: project ÷ naive", ("match", "project_vs_naive"), 20.0, "≥"),
    ("match: project ÷ Redis ceiling", ("match", "project_vs_ceiling"), 0.5, "≥"),
    ("e2e: max sustained requests/s", ("e2e", "max_sustained_requests_per_s"), 3000.0, "≥"),
    ("e2e: p99 at 1,000 requests/s (ms)", ("e2e", "latency_ms_at_1000_rps", "p99"), 50.0, "≤"),
    ("presence: events/s", ("presence", "events_per_s"), 50000.0, "≥"),
    ("memory: Redis bytes per worker", ("memory", "redis_bytes_per_worker"), 150.0, "≤"),
)
STORES = (("single Redis", ()), ("Redis Cluster", ("cluster",)))


def dig(data: dict[str, Any], path: tuple[str, ...]) -> Any:
    for part in path:
        data = data.get(part, {}) if isinstance(data, dict) else {}
    return data if data != {} else None


def target_rows(result: dict[str, Any]) -> list[tuple[str, ...]]:
    """(what, target, then measured and met for each store) for every target."""
    rows = []
    for label, path, bound, op in TARGETS:
        row = [label, f"{op} {bound:,g}"]
        for _, where in STORES:
            value = dig(result, (*where, *path))
            if value is None:
                row += ["—", "not measured"]
                continue
            met = value >= bound if op == "≥" else value <= bound
            row += [f"{value:,.2f}", "yes" if met else "**no**"]
        rows.append(tuple(row))
    return rows


def markdown(result: dict[str, Any]) -> str:
    """The run as markdown: targets at the largest size, then one row per size."""
    sizes = result.get("sizes", [result])
    lines = [
        f"# Benchmark results ({result['run']['started']})",
        "",
        f"`{result['run']['command']}` on {result['run']['machine']}; "
        f"{result['run']['rounds']} rounds, medians. Largest size: {result['workers']:,} workers.",
        "",
        "| target | bound | single Redis | met | Redis Cluster | met |",
        "|---|---:|---:|---|---:|---|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in target_rows(result)]
    lines += ["", "Single Redis:", "", *size_table(sizes)]
    lines += cluster_table(sizes)
    lines += same_requests_table(sizes)
    lines += scaling_table(result.get("scaling"))
    lines += rebuild_table(result.get("rebuild", []))
    lines += baseline_table(result, result.get("baseline"))
    return "\n".join(lines) + "\n"


def cluster_table(sizes: list[dict[str, Any]]) -> list[str]:
    """The match step, full decision, presence and memory on the Redis Cluster, per size."""
    rows = [s for s in sizes if "cluster" in s]
    if not rows:
        return []
    lines = [
        "",
        "Redis Cluster, 3 primaries and 3 replicas (×naive and ×ceiling: against the single "
        "Redis's naive baseline and ceiling at the same size):",
        "",
        "| workers | project dec/s | full dec/s | ×naive | ×ceiling | full ÷ PostGIS "
        "| presence ev/s | bytes/worker |",
        "|" + "---:|" * 8,
    ]
    for s in rows:
        c, m = s["cluster"], s["cluster"]["match"]
        lines.append(
            f"| {s['workers']:,} | {m['project_decisions_per_s']:,.0f} "
            f"| {m['project_full_decisions_per_s']:,.0f} | {m['project_vs_naive']:.1f} "
            f"| {m['project_vs_ceiling']:.2f} | {_num(c.get('full_decision_vs_postgis'), 2)} "
            f"| {c['presence']['events_per_s']:,.0f} "
            f"| {c['memory']['redis_bytes_per_worker']:.0f} |"
        )
    return lines


def same_requests_table(sizes: list[dict[str, Any]]) -> list[str]:
    """The project's full decision and the PostGIS peer on the very same requests."""
    rows = [s for s in sizes if "postgis" in s]
    if not rows:
        return []
    lines = [
        "",
        "The same requests, the project's full decision and the PostGIS peer (a project "
        "decision's latency is its batch's; offered and filled: within the first radius, "
        "then at any radius the decision widened to):",
        "",
        "| workers | contender | decisions/s | p50 (ms) | p99 (ms) | offered | filled "
        "| offered, any radius | filled, any radius |",
        "|---:|---|" + "---:|" * 7,
    ]
    for s in rows:
        for label, where in STORES:
            same = dig(s, (*where, "same_requests"))
            if same:
                lines.append(_same_row(s["workers"], f"project, {label}, batch {same['batch']}",
                                       same))  # fmt: skip
        for n, peer in s["postgis"]["by_connections"].items():
            lines.append(_same_row(s["workers"], f"PostGIS, {n} connections", peer))
    return lines


def _same_row(workers: int, label: str, r: dict[str, Any]) -> str:
    near = r.get("offered_within_first_radius", r.get("offered"))
    near_filled = r.get("filled_within_first_radius", r.get("filled"))
    anywhere = (r["offered"], r["filled"]) if "offered_within_first_radius" in r else (None, None)
    return (
        f"| {workers:,} | {label} | {r['decisions_per_s']:,.0f} | {r['p50_ms']:.2f} "
        f"| {r['p99_ms']:.2f} | {near:,} | {near_filled:,} | {_num(anywhere[0], 0)} "
        f"| {_num(anywhere[1], 0)} |"
    )


def scaling_table(scaling: dict[str, Any] | None) -> list[str]:
    """Full decisions against dispatcher processes and Redis nodes."""
    if not scaling:
        return []
    lines = [
        "",
        f"Scaling at {scaling['workers']:,} workers: full decisions of "
        f"{scaling['requests_per_process']:,} requests per process and round, in batches of "
        f"{scaling['batch']}, every process started together; a decision's latency is its "
        "batch's:",
        "",
        "| store | Redis nodes (primaries) | processes | decisions/s | p50 (ms) | p99 (ms) "
        "| batches |",
        "|---|" + "---:|" * 6,
    ]
    for r in scaling["runs"]:
        if "error" in r:
            lines.append(f"| {r['store']} | {r['redis_nodes']} | {r['processes']} "
                         f"| failed: {r['error']} | | | |")  # fmt: skip
            continue
        lines.append(
            f"| {r['store']} | {r['redis_nodes']} | {r['processes']} "
            f"| {r['decisions_per_s']:,.0f} | {r['p50_ms']:,.0f} | {r['p99_ms']:,.0f} "
            f"| {r['batches']} |"
        )
    return lines


def _num(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def rebuild_table(rows: list[dict[str, Any]]) -> list[str]:
    """How long rebuilding an empty Redis from the log took (``bench.rebuild``)."""
    if not rows:
        return []
    lines = [
        "",
        "Rebuilding an empty Redis from the Kafka log:",
        "",
        "| workers | worker index (s) | worker events/s | requests | request store (s) |",
        "|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['workers']:,} | {r['worker_index_s']:.1f} | {r['worker_events_per_s']:,} "
        f"| {r['requests']:,} | {r['request_store_s']:.1f} |"
        for r in rows
    ]
    return lines


BASELINE_FIGURES = (
    ("e2e: max sustained requests/s", ("e2e", "max_sustained_requests_per_s")),
    ("e2e: p50 at 100 requests/s (ms)", ("e2e", "latency_ms_at_100_rps", "p50")),
    ("e2e: p99 at 100 requests/s (ms)", ("e2e", "latency_ms_at_100_rps", "p99")),
    ("e2e: p50 at 1,000 requests/s (ms)", ("e2e", "latency_ms_at_1000_rps", "p50")),
    ("e2e: p99 at 1,000 requests/s (ms)", ("e2e", "latency_ms_at_1000_rps", "p99")),
    ("match: project decisions/s", ("match", "project_decisions_per_s")),
    ("match: full decisions/s", ("match", "project_full_decisions_per_s")),
)


def baseline_table(result: dict[str, Any], baseline: dict[str, Any] | None) -> list[str]:
    """This run beside the same size of the baseline run (the earlier broker), if given."""
    if not baseline:
        return []
    old = next((s for s in baseline.get("sizes", []) if s["workers"] == result["workers"]), None)
    if old is None:
        return []
    lines = [
        "",
        f"Beside {baseline.get('label', 'the baseline')} ({baseline['run']['started']}), "
        f"{result['workers']:,} workers (different days: compare with care):",
        "",
        "| figure | baseline | this run |",
        "|---|---:|---:|",
    ]
    for label, path in BASELINE_FIGURES:
        was, now = dig(old, path), dig(result, path)
        if was is not None and now is not None:
            lines.append(f"| {label} | {was:,.1f} | {now:,.1f} |")
    return lines


def size_table(sizes: list[dict[str, Any]]) -> list[str]:
    head = (
        "| workers | project dec/s | full dec/s | naive dec/s | ceiling GEOSEARCH/s "
        "| ×naive | ×ceiling "
        "| full ÷ PostGIS | e2e max req/s | p50/p99/p99.9 @100 (ms) | p50/p99/p99.9 @1000 (ms) "
        "| presence ev/s | bytes/worker |"
    )
    lines = [head, "|" + "---:|" * 13]
    for s in sizes:
        m, e = s["match"], s.get("e2e", {})
        lines.append(
            f"| {s['workers']:,} | {m['project_decisions_per_s']:,.0f} "
            f"| {m.get('project_full_decisions_per_s', 0):,.0f} "
            f"| {m['naive_decisions_per_s']:,.0f} | {m['redis_ceiling_per_s']:,.0f} "
            f"| {m['project_vs_naive']:.1f} | {m['project_vs_ceiling']:.2f} "
            f"| {_num(s.get('full_decision_vs_postgis'), 2)} "
            f"| {_num(e.get('max_sustained_requests_per_s'), 0)} "
            f"| {_lat(e.get('latency_ms_at_100_rps'))} | {_lat(e.get('latency_ms_at_1000_rps'))} "
            f"| {s['presence']['events_per_s']:,.0f} "
            f"| {s['memory']['redis_bytes_per_worker']:.0f} |"
        )
    return lines


def _lat(summary: dict[str, float] | None) -> str:
    if not summary:
        return "—"
    text = f"{summary['p50']:.1f} / {summary['p99']:.1f} / {summary['p999']:.1f}"
    offered = summary.get("offered_fraction", 1.0)
    return text if offered >= 0.999 else f"{text} ({offered:.0%} offered)"


def plot(result: dict[str, Any], path: Path) -> None:
    """Throughput and latency against the number of workers indexed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = result.get("sizes", [result])
    x = [s["workers"] for s in sizes]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, key in (
        ("project match (decisions/s)", ("match", "project_decisions_per_s")),
        ("project full decision (decisions/s)", ("match", "project_full_decisions_per_s")),
        ("naive match (decisions/s)", ("match", "naive_decisions_per_s")),
        ("Redis ceiling (GEOSEARCH/s)", ("match", "redis_ceiling_per_s")),
        ("end to end, max sustained (requests/s)", ("e2e", "max_sustained_requests_per_s")),
        ("presence (events/s)", ("presence", "events_per_s")),
    ):
        left.plot(x, [dig(s, key) or float("nan") for s in sizes], marker="o", label=label)
    _axes(left, "throughput per second", log_y=True)
    for rate in (100, 1000):
        for q, style in (("p50", "-"), ("p99", "--"), ("p999", ":")):
            ys = [dig(s, ("e2e", f"latency_ms_at_{rate}_rps", q)) or float("nan") for s in sizes]
            right.plot(x, ys, style, marker="o", label=f"{q} at {rate:,} req/s")
    _axes(right, "request → offer latency (ms)", log_y=True)
    fig.suptitle(f"gig dispatch benchmarks, {result['run']['started']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _axes(ax: Any, ylabel: str, log_y: bool) -> None:
    ax.set_xscale("log")
    if log_y and any(y > 0 for line in ax.get_lines() for y in line.get_ydata()):
        ax.set_yscale("log")
    ax.set_xlabel("workers indexed")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def write(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """``latest.json``, ``latest.md`` and ``latest.png`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "latest.json", out_dir / "latest.md", out_dir / "latest.png"]
    paths[0].write_text(json.dumps(result, indent=2) + "\n")
    paths[1].write_text(markdown(result))
    plot(result, paths[2])
    return paths
