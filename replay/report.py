"""Outcomes as a person reads them: terminal tables, CSV files and PNG charts."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Final

from replay.outcomes import Outcome

# (field, heading, format) for every indicator shown.
COLUMNS: Final = (
    ("requests", "requests", "{:,.0f}"),
    ("positions", "positions posted", "{:,.0f}"),
    ("assignments", "assignments (hiring intentions)", "{:,.0f}"),
    ("workers_served", "workers served", "{:,.0f}"),
    ("fill_rate", "requests filled", "{:.1%}"),
    ("positions_filled", "positions filled", "{:.1%}"),
    ("first_offer_p50_s", "time to first offer p50", "{:.2f} s"),
    ("fill_p50_s", "time to fill p50", "{:.1f} s"),
    ("fill_p90_s", "time to fill p90", "{:.1f} s"),
    ("offers", "offers made", "{:,.0f}"),
    ("offers_per_assignment", "offers per assignment", "{:.2f}"),
    ("distance_km", "distance to work (mean)", "{:.2f} km"),
    ("workers_offered", "workers offered", "{:,.0f}"),
    ("offers_gini", "spread of offers (Gini)", "{:.3f}"),
)
SHORT: Final = ("requests", "positions", "assignments", "workers_served", "fill_rate",
                "fill_p50_s", "distance_km")  # fmt: skip


def cell(o: Outcome, name: str) -> str:
    value = getattr(o, name)
    fmt = next(f for n, _, f in COLUMNS if n == name)
    return "–" if isinstance(value, float) and math.isnan(value) else fmt.format(value)


def _grid(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def fmt(r: Sequence[str]) -> str:
        first = f" {r[0]:<{widths[0]}} "
        rest = [f" {c:>{w}} " for c, w in zip(r[1:], widths[1:], strict=True)]
        return "|" + "|".join([first, *rest]) + "|"

    return "\n".join([line, fmt(header), line, *map(fmt, rows), line])


def side_by_side(runs: Sequence[tuple[str, Outcome]]) -> str:
    """Indicators as rows, one column per run (recorded, replays)."""
    header = ["indicator", *(label for label, _ in runs)]
    rows = [[head, *(cell(o, name) for _, o in runs)] for name, head, _ in COLUMNS]
    return _grid(header, rows)


def by_group(rows: Sequence[Outcome], names: dict[str, str], short: bool = False) -> str:
    """One row per group (market or prefecture), the indicators as columns."""
    cols = [c for c in COLUMNS if not short or c[0] in SHORT]
    header = ["", *(head for _, head, _ in cols)]
    body = [[names.get(o.group, o.group), *(cell(o, n) for n, _, _ in cols)] for o in rows]
    return _grid(header, body)


def write_csv(path: Path, runs: Sequence[tuple[str, Sequence[Outcome]]]) -> None:
    """Every indicator of every group of every run, one row each."""
    names = [f.name for f in fields(Outcome)]
    with path.open("w", newline="") as out:
        w = csv.writer(out)
        w.writerow(["run", *names])
        for label, rows in runs:
            for o in rows:
                w.writerow([label, *(asdict(o)[n] for n in names)])


PLOTTED: Final = (
    ("fill_rate", "requests filled", 100.0, "%"),
    ("first_offer_p50_s", "time to first offer (median)", 1.0, "s"),
    ("fill_p50_s", "time to fill (median)", 1.0, "s"),
    ("distance_km", "distance to work (mean)", 1.0, "km"),
)


def plot(
    path: Path, runs: Sequence[tuple[str, Sequence[Outcome]]], names: dict[str, str], title: str
) -> None:
    """Four panels (fill rate, first offer, fill time, distance), groups side by side per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [o.group for o in runs[0][1]]
    fig, axes = plt.subplots(2, 2, figsize=(max(9.0, 0.9 * len(groups) + 4), 7.5))
    width = 0.8 / len(runs)
    for ax, (name, head, scale, unit) in zip(axes.flat, PLOTTED, strict=True):
        for k, (label, rows) in enumerate(runs):
            by = {o.group: getattr(o, name) * scale for o in rows}
            xs = [i + (k - (len(runs) - 1) / 2) * width for i in range(len(groups))]
            ax.bar(xs, [by.get(g, 0.0) for g in groups], width, label=label)
        ax.set_title(head)
        ax.set_ylabel(unit)
        ax.set_xticks(range(len(groups)), [names.get(g, g) for g in groups], rotation=45,
                      ha="right", fontsize=8)  # fmt: skip
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.legend(handles, labels, loc="upper right", ncol=len(runs), fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
