"""The console's reports: the bureau's indicators from the archive, as JSON or CSV, and the
latest what-if replays side by side (see ``gateway.console``).

The figures come from ``replay.reporting``, the same code as ``replay report``: requests posted
in ``[from, to]`` with every decision about them, and the workers who checked in in the window.
Windows are bounded (at most ``MAX_DAYS``); a reversed or empty window, or one in which the
archive holds nothing, is refused with a 422 and one sentence saying why.
"""

from __future__ import annotations

import asyncio
import csv
import functools
import io
import time
from collections.abc import Sequence
from typing import Annotated, Any, Final, Literal

from fastapi import HTTPException, Query
from fastapi.responses import JSONResponse, Response

from archive.store import PgEventStore, Stored
from gateway.console.deps import Deps, Supervisor, console_router
from replay import reporting, results
from replay.breakdown import Registry
from replay.reporting import WindowError

router = console_router()

MAX_DAYS: Final = 92  # a quarter: months side by side, and a bounded load on the archive
DEFAULT_WINDOW_MS: Final = 24 * 3_600_000
MAX_WHATIF: Final = 10
WHEN: Final = "2026-11-26T07:00 (China Standard Time) or epoch ms"
TimeText = Annotated[str | None, Query(max_length=40, description=WHEN)]


@functools.cache
def registry() -> Registry:
    """The registry, its counties and its nearest-market index, built once."""
    return Registry()


def window(start: str | None, end: str | None) -> tuple[int, int]:
    """The window asked for (default: the last 24 hours), or a 422 saying what is wrong."""
    try:
        to_ms = reporting.when(end) if end else int(time.time() * 1000)
        from_ms = reporting.when(start) if start else to_ms - DEFAULT_WINDOW_MS
        reporting.check_window(from_ms, to_ms, MAX_DAYS)
    except WindowError as e:
        raise HTTPException(422, str(e)) from None
    return from_ms, to_ms


def _scope(prefecture: str | None) -> set[str] | None:
    reg = registry()
    if prefecture is None:
        return None
    if prefecture not in reg.prefectures:
        raise HTTPException(422, f"unknown prefecture {prefecture!r}")
    return reg.scope(None, prefecture)


@router.get("/reports", response_model=None)
async def reports(
    deps: Deps,
    _: Supervisor,
    by: Literal["prefecture", "county", "market", "skill", "day", "month"] = "prefecture",
    start: Annotated[str | None, Query(alias="from", max_length=40, description=WHEN)] = None,
    to: TimeText = None,
    prefecture: Annotated[str | None, Query(max_length=8, pattern=r"^\d{4}$")] = None,
    format: Literal["json", "csv"] = "json",
    top: Annotated[int, Query(ge=1, le=50, description="groups in the chart")] = 12,
) -> JSONResponse | Response:
    """The indicators per group for the requests posted in the window (JSON, or CSV)."""
    from_ms, to_ms = window(start, to)
    scope = _scope(prefecture)
    async with deps.pg.acquire() as conn:
        stored = await reporting.fetch(PgEventStore(conn), from_ms, to_ms)
    try:
        doc = await asyncio.to_thread(_report, stored, from_ms, to_ms, scope, by, top)
    except WindowError as e:
        raise HTTPException(422, str(e)) from None
    doc["prefecture"] = prefecture
    if format == "csv":
        return _csv(doc)
    return JSONResponse(doc)


def _report(
    stored: Sequence[Stored], from_ms: int, to_ms: int, scope: set[str] | None, by: str, top: int
) -> dict[str, Any]:
    reg = registry()
    data = reporting.assemble(stored, from_ms, to_ms).scoped(scope, reg)
    data.require_some()
    return reporting.document(data, reg, by, top)


def _csv(doc: dict[str, Any]) -> Response:
    """Every group's indicators and the total, one row each; UTF-8 with a byte-order mark, so
    spreadsheets read the Chinese names."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(
        reporting.csv_lines([*doc["rows"], doc["total"]])
    )
    day = time.strftime("%Y%m%d", time.gmtime(doc["from_ms"] / 1000 + 8 * 3600))
    name = f"report-{doc['by']}-{day}.csv"
    return Response(
        "\ufeff" + out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


BY_NAMES: Final = {
    "prefecture": ("市州", "prefecture"),
    "county": ("县（县城中心）", "county (county-town centre)"),
    "market": ("市场", "market"),
    "skill": ("工种", "skill"),
    "day": ("日", "day"),
    "month": ("月", "month"),
}


@router.get("/reports/meta")
async def reports_meta(_: Supervisor) -> dict[str, Any]:
    """What the report form offers: groupings, prefectures, the indicators and their names."""
    reg = registry()
    return {
        "by": [{"key": k, "zh": zh, "en": en} for k, (zh, en) in BY_NAMES.items()],
        "prefectures": [
            {"code": c, "zh": p.name_zh, "en": p.name_en} for c, p in reg.prefectures.items()
        ],
        "indicators": reporting.definitions(),
        "county_note": reporting.COUNTY_NOTE,
        "max_days": MAX_DAYS,
    }


@router.get("/whatif")
async def whatif(
    _: Supervisor, limit: Annotated[int, Query(ge=1, le=MAX_WHATIF)] = 3
) -> dict[str, Any]:
    """The latest ``replay run`` results (newest first), each with every run side by side."""
    found = await asyncio.to_thread(results.latest, limit)
    return {"results": found, "indicators": reporting.definitions()}
