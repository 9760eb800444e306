"""Reports in the bureau's indicators: one implementation for ``replay report`` and the console.

A report covers the requests **posted** in a window ``[from, to]`` (China Standard Time, both
ends included) with every decision about them, whenever it came (a request's fill or expiry
may come after the window closes), and the workers who **checked in** in the window (the job
seekers). It is grouped by prefecture, county, market, skill, day or month
(``replay.breakdown``) and reduced to indicators by ``replay.outcomes``.

Windows are checked first: a reversed window, an empty one, one longer than ``MAX_DAYS``, and
a window in which the archive holds nothing are refused with one clear sentence
(``WindowError``), never an ``IndexError``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Final

from pydantic import BaseModel

from archive.store import PgEventStore, Stored
from replay import outcomes as oc
from replay.breakdown import ALL, OTHERS, Grouping, Registry
from replay.recording import Recording, parse
from replay.timeline import LOCAL, clock
from schemas import events as ev

MAX_DAYS: Final = 366
CHART_GROUPS: Final = 12  # charts show the groups with the most positions, then "others"
REPORT_TYPES: Final = ("HireRequested", "OfferMade", "WorkerAssigned", "RequestFilled",
                       "RequestExpired", "RequestCancelled", "RequestRejected")  # fmt: skip
COUNTY_NOTE: Final = (
    "县 = 市场所围绕的县城中心（登记表无县名，按市场生成时的中心划分）; "
    "county = the county-town centre the market was placed around (the registry has no "
    "county names)"
)


class WindowError(ValueError):
    """A window that cannot be reported on, said in one sentence."""


def when(text: str) -> int:
    """Epoch ms from ``2026-11-26T08:00`` (China Standard Time unless an offset is given)
    or from a plain epoch-ms number."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise WindowError(
            f"cannot read the time {text!r}: give 2026-11-26T07:00 or epoch milliseconds"
        ) from None
    return int((t if t.tzinfo else t.replace(tzinfo=LOCAL)).timestamp() * 1000)


def check_window(from_ms: int, to_ms: int, max_days: int = MAX_DAYS) -> None:
    """Refuse a reversed, empty or too long window."""
    if from_ms > to_ms:
        raise WindowError(
            f"the window ends before it starts: --from {clock(from_ms, True)[:16]} is after "
            f"--to {clock(to_ms, True)[:16]} (China Standard Time)"
        )
    if from_ms == to_ms:
        raise WindowError("the window is empty: --from and --to are the same instant")
    if to_ms - from_ms > max_days * 86_400_000:
        raise WindowError(f"the window is longer than {max_days} days: report on a shorter one")


@dataclass
class ReportData:
    """What a report is made of: the window's requests, their decisions, the check-ins."""

    from_ms: int
    to_ms: int
    requests: list[ev.HireRequested] = field(default_factory=list)
    decisions: list[BaseModel] = field(default_factory=list)
    checkins: list[ev.WorkerCheckedIn] = field(default_factory=list)

    def scoped(self, markets: set[str] | None, reg: Registry) -> ReportData:
        """Only the requests and check-ins of these markets (None: all)."""
        if markets is None:
            return self
        return ReportData(
            self.from_ms,
            self.to_ms,
            [r for r in self.requests if r.market_id in markets],
            self.decisions,
            [c for c in self.checkins if reg.market_of(c) in markets],
        )

    def require_some(self) -> None:
        if not self.requests and not self.checkins:
            raise WindowError(
                f"nothing archived from {clock(self.from_ms, True)[:16]} to "
                f"{clock(self.to_ms, True)[:16]} (China Standard Time): no requests and no "
                "check-ins (`replay status` shows what the archive holds)"
            )


def _split(messages: Iterable[BaseModel], data: ReportData) -> ReportData:
    for m in messages:
        match m:
            case ev.HireRequested():
                data.requests.append(m)
            case ev.WorkerCheckedIn():
                data.checkins.append(m)
            case _:
                data.decisions.append(m)
    return data


async def fetch(store: PgEventStore, from_ms: int, to_ms: int) -> list[Stored]:
    """What a window's report is made of, as archived (two indexed queries)."""
    events = await store.report_events(from_ms, to_ms, REPORT_TYPES)
    return events + await store.checkins(from_ms, to_ms)


def assemble(stored: Sequence[Stored], from_ms: int, to_ms: int) -> ReportData:
    """The archived rows parsed into report data (CPU-bound: a server runs it in a thread)."""
    return _split([m for _, m in parse(stored)], ReportData(from_ms, to_ms))


async def load(store: PgEventStore, from_ms: int, to_ms: int) -> ReportData:
    """A window's report data from the archive."""
    return assemble(await fetch(store, from_ms, to_ms), from_ms, to_ms)


def from_recording(rec: Recording) -> ReportData:
    """A window's report data from a replay's recording (the check-ins of the window only)."""
    w = rec.window
    seekers = [
        c for c in rec.presence if isinstance(c, ev.WorkerCheckedIn) and w.from_ms <= c.at_ms
    ]
    return ReportData(w.from_ms, w.to_ms, list(rec.requests), rec.decisions(), seekers)


def indicators(
    data: ReportData, grouping: Grouping, decisions: Sequence[BaseModel] | None = None
) -> list[oc.Outcome]:
    """Every group's indicators, then ``all`` (``decisions``: a replay's, else the recorded)."""
    return oc.outcomes(
        data.requests,
        data.decisions if decisions is None else decisions,
        grouping.request,
        data.checkins,
        grouping.seekers,
    )


def top_groups(rows: Sequence[oc.Outcome], n: int = CHART_GROUPS) -> set[str]:
    """The ``n`` groups with the most positions posted (then job seekers, then name)."""
    ranked = sorted(
        (o for o in rows if o.group != ALL), key=lambda o: (-o.positions, -o.job_seekers, o.group)
    )
    return {o.group for o in ranked[:n]}


def for_chart(
    data: ReportData,
    grouping: Grouping,
    rows: Sequence[oc.Outcome],
    n: int = CHART_GROUPS,
    decisions: Sequence[BaseModel] | None = None,
) -> list[oc.Outcome]:
    """At most ``n`` groups and ``others`` (every indicator computed again over the folded
    groups, so ``others`` has a true fill rate and times, not an average of averages)."""
    groups = [o for o in rows if o.group != ALL]
    if len(groups) <= n:
        return groups
    kept = top_groups(rows, n)
    folded = indicators(data, grouping.keeping(kept), decisions)[:-1]
    ranked = sorted((o for o in folded if o.group != OTHERS), key=lambda o: -o.positions)
    return ranked + [o for o in folded if o.group == OTHERS]


# --- as data (JSON, CSV) ---------------------------------------------------------------------

# (field, Chinese, English, unit) for every indicator, in the order tables show them.
INDICATORS: Final = (
    ("requests", "需求数", "requests", ""),
    ("positions", "岗位需求数", "positions posted", ""),
    ("job_seekers", "求职人数", "job seekers checked in", ""),
    ("positions_per_seeker", "求人倍率", "positions per seeker", ""),
    ("assignments", "招聘意向数", "hiring intentions (assignments)", ""),
    ("workers_served", "服务人数", "workers served", ""),
    ("fill_rate", "需求满足率", "fill rate (requests filled)", "%"),
    ("positions_filled", "岗位满足率", "positions filled", "%"),
    ("first_offer_p50_s", "首次派单用时 p50", "time to first offer p50", "s"),
    ("first_offer_p90_s", "首次派单用时 p90", "time to first offer p90", "s"),
    ("fill_p50_s", "招满用时 p50", "time to fill p50", "s"),
    ("fill_p90_s", "招满用时 p90", "time to fill p90", "s"),
    ("expired", "过期", "expired", ""),
    ("cancelled", "取消", "cancelled", ""),
    ("rejected", "被拒", "rejected", ""),
    ("wage_mean", "日薪均值（按人数加权）", "wage offered, mean (by headcount)", "¥/day"),
    ("wage_median", "日薪中位数（按人数加权）", "wage offered, median (by headcount)", "¥/day"),
    ("offers", "派单数", "offers made", ""),
    ("offers_per_assignment", "每次录用派单数", "offers per assignment", ""),
    ("distance_km", "通勤距离均值", "distance to work (mean)", "km"),
    ("workers_offered", "收到派单人数", "workers offered", ""),
    ("offers_gini", "派单均衡度 (Gini)", "spread of offers (Gini)", ""),
)


def _number(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def as_row(o: oc.Outcome, grouping: Grouping) -> dict[str, Any]:
    """One group's indicators as JSON: its key, both names, and every indicator (null for
    what cannot be measured, such as a fill time with nothing filled)."""
    zh, en = grouping.label(o.group)
    return {"group": o.group, "name_zh": zh, "name_en": en} | {
        k: _number(v) for k, v in asdict(o).items() if k != "group"
    }


CSV_HEADER: Final = ["group", "name_zh", "name_en", *(f"{k}" for k, *_ in INDICATORS)]


def csv_lines(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    """The rows as CSV cells, a header line first (empty cells for null)."""
    out = [CSV_HEADER]
    for r in rows:
        out.append(["" if r.get(k) is None else str(r[k]) for k in CSV_HEADER])
    return out


def definitions() -> list[dict[str, str]]:
    """Every indicator's key, Chinese and English name and unit, in table order."""
    return [{"key": k, "zh": zh, "en": en, "unit": u} for k, zh, en, u in INDICATORS]


def document(data: ReportData, reg: Registry, by: str, top: int = CHART_GROUPS) -> dict[str, Any]:
    """The whole report as JSON: one row per group, the total, and the chart's groups (the
    ``top`` groups by positions posted, then ``others``)."""
    grouping = reg.grouping(by)
    rows = indicators(data, grouping)
    return {
        "by": by,
        "from_ms": data.from_ms,
        "to_ms": data.to_ms,
        "note": COUNTY_NOTE if by == "county" else "",
        "indicators": definitions(),
        "rows": [as_row(o, grouping) for o in rows[:-1]],
        "total": as_row(rows[-1], grouping),
        "chart": [as_row(o, grouping) for o in for_chart(data, grouping, rows, top)],
    }
