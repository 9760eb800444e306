"""Outcomes as a person reads them: terminal tables, CSV files and PNG charts."""

from __future__ import annotations

import csv
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Final

from replay.outcomes import Outcome
from replay.reporting import INDICATORS

# The format of each indicator; headings are Chinese and English (``reporting.INDICATORS``).
FORMATS: Final = {
    "requests": "{:,.0f}", "positions": "{:,.0f}", "job_seekers": "{:,.0f}",
    "positions_per_seeker": "{:.2f}", "assignments": "{:,.0f}", "workers_served": "{:,.0f}",
    "fill_rate": "{:.1%}", "positions_filled": "{:.1%}", "first_offer_p50_s": "{:.2f} s",
    "first_offer_p90_s": "{:.2f} s", "fill_p50_s": "{:.1f} s", "fill_p90_s": "{:.1f} s",
    "expired": "{:,.0f}", "cancelled": "{:,.0f}", "rejected": "{:,.0f}",
    "wage_mean": "{:,.0f} ¥", "wage_median": "{:,.0f} ¥", "offers": "{:,.0f}",
    "offers_per_assignment": "{:.2f}", "distance_km": "{:.2f} km", "workers_offered": "{:,.0f}",
    "offers_gini": "{:.3f}",
}  # fmt: skip
# (field, heading, format) for every indicator shown.
COLUMNS: Final = tuple((k, f"{zh} {en}", FORMATS[k]) for k, zh, en, _ in INDICATORS)
SHORT: Final = ("requests", "positions", "job_seekers", "positions_per_seeker", "assignments",
                "fill_rate", "fill_p50_s", "expired", "rejected", "wage_mean")  # fmt: skip
# Column headings of the per-group tables: Chinese over English, both short.
HEADS: Final = {
    "requests": ("需求", "requests"), "positions": ("岗位", "positions"),
    "job_seekers": ("求职人数", "seekers"), "positions_per_seeker": ("求人倍率", "per seeker"),
    "assignments": ("招聘意向", "hired"), "workers_served": ("服务人数", "served"),
    "fill_rate": ("满足率", "filled"), "positions_filled": ("岗位满足", "pos. filled"),
    "first_offer_p50_s": ("首派p50", "1st offer"), "first_offer_p90_s": ("首派p90", "1st offer"),
    "fill_p50_s": ("招满p50", "to fill"), "fill_p90_s": ("招满p90", "to fill"),
    "expired": ("过期", "expired"), "cancelled": ("取消", "cancelled"),
    "rejected": ("被拒", "rejected"), "wage_mean": ("日薪均值", "wage mean"),
    "wage_median": ("日薪中位", "wage median"), "offers": ("派单", "offers"),
    "offers_per_assignment": ("单/录用", "offers/hire"), "distance_km": ("距离", "distance"),
    "workers_offered": ("收单人数", "offered"), "offers_gini": ("均衡Gini", "Gini"),
}  # fmt: skip


def width(text: str) -> int:
    """Columns the text takes in a terminal (Chinese characters take two)."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(text: str, cols: int, right: bool) -> str:
    fill = " " * max(0, cols - width(text))
    return fill + text if right else text + fill


def cell(o: Outcome, name: str) -> str:
    value = getattr(o, name)
    fmt = next(f for n, _, f in COLUMNS if n == name)
    return "–" if isinstance(value, float) and math.isnan(value) else fmt.format(value)


def _grid(header: Sequence[str], rows: Sequence[Sequence[str]], *more: Sequence[str]) -> str:
    """A boxed table; ``more``: further header lines (the English under the Chinese)."""
    heads = [header, *more]
    widths = [max(width(str(r[i])) for r in [*heads, *rows]) for i in range(len(header))]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def fmt(r: Sequence[str]) -> str:
        first = f" {_pad(r[0], widths[0], False)} "
        rest = [f" {_pad(c, w, True)} " for c, w in zip(r[1:], widths[1:], strict=True)]
        return "|" + "|".join([first, *rest]) + "|"

    return "\n".join([line, *map(fmt, heads), line, *map(fmt, rows), line])


def side_by_side(runs: Sequence[tuple[str, Outcome]]) -> str:
    """Indicators as rows, one column per run (recorded, replays)."""
    header = ["指标 indicator", *(label for label, _ in runs)]
    rows = [[head, *(cell(o, name) for _, o in runs)] for name, head, _ in COLUMNS]
    return _grid(header, rows)


def by_group(rows: Sequence[Outcome], names: dict[str, str], short: bool = False) -> str:
    """One row per group, the indicators as columns (Chinese headings over English)."""
    cols = [n for n, _, _ in COLUMNS if not short or n in SHORT]
    zh = ["", *(HEADS[n][0] for n in cols)]
    en = ["", *(HEADS[n][1] for n in cols)]
    body = [[names.get(o.group, o.group), *(cell(o, n) for n in cols)] for o in rows]
    return _grid(zh, body, en)


def write_csv(
    path: Path,
    runs: Sequence[tuple[str, Sequence[Outcome]]],
    names: dict[str, str] | None = None,
) -> None:
    """Every indicator of every group of every run, one row each, with the group's name."""
    cols = [f.name for f in fields(Outcome)]
    with path.open("w", newline="", encoding="utf-8") as out:
        w = csv.writer(out)
        w.writerow(["run", "name", *cols])
        for label, rows in runs:
            for o in rows:
                name = (names or {}).get(o.group, o.group)
                w.writerow([label, name, *(asdict(o)[n] for n in cols)])


PLOTTED: Final = (
    ("fill_rate", "需求满足率 requests filled", 100.0, "%"),
    ("first_offer_p50_s", "首次派单用时 time to first offer (median)", 1.0, "s"),
    ("fill_p50_s", "招满用时 time to fill (median)", 1.0, "s"),
    ("distance_km", "通勤距离 distance to work (mean)", 1.0, "km"),
)
# Chinese names need a CJK font (Debian's fonts-noto-cjk, `make system-deps`); DejaVu is the
# fallback for what it lacks.
FONTS: Final = ["Noto Sans CJK SC", "Noto Sans CJK JP", "DejaVu Sans"]
MAX_WIDTH_IN: Final = 18.0
TICK_CHARS: Final = 22


def _short(name: str) -> str:
    return name if len(name) <= TICK_CHARS else name[: TICK_CHARS - 1] + "…"


def plot(
    path: Path, runs: Sequence[tuple[str, Sequence[Outcome]]], names: dict[str, str], title: str
) -> None:
    """Four panels (fill rate, first offer, fill time, distance), groups side by side per run.

    Give it a dozen groups or so (``reporting.for_chart``: the top ones and "others"): the
    figure never grows wider than ``MAX_WIDTH_IN`` inches."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["font.sans-serif"] = FONTS
    groups = [o.group for o in runs[0][1]]
    fig, axes = plt.subplots(2, 2, figsize=(min(MAX_WIDTH_IN, max(9.0, 0.9 * len(groups) + 4)),
                                            9.0))  # fmt: skip
    width = 0.8 / len(runs)
    for ax, (name, head, scale, unit) in zip(axes.flat, PLOTTED, strict=True):
        for k, (label, rows) in enumerate(runs):
            by = {o.group: getattr(o, name) * scale for o in rows}
            xs = [i + (k - (len(runs) - 1) / 2) * width for i in range(len(groups))]
            ax.bar(xs, [by.get(g, 0.0) for g in groups], width, label=label)
        ax.set_title(head)
        ax.set_ylabel(unit)
        ax.set_xticks(range(len(groups)), [_short(names.get(g, g)) for g in groups],
                      rotation=45, ha="right", fontsize=8)  # fmt: skip
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.legend(handles, labels, loc="upper right", ncol=len(runs), fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
