"""The chaos suite's results: one row per scenario, printed at the end of the run and, when
``CHAOS_RESULTS`` names a folder (``make chaos``), written there as chaos.json and chaos.md."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROWS: list[dict[str, Any]] = []
COLUMNS = (
    "scenario",
    "size",
    "brokers",
    "acknowledged",
    "ended",
    "filled",
    "lost",
    "unannounced",
    "double_booked",
    "over_filled",
    "contradictory",
    "unaccepted",
    "fault_s",
    "first_decision_s",
    "recovery_s",
    "run_s",
)


@pytest.fixture
def record_row() -> Callable[[dict[str, Any]], None]:
    """Keep a scenario's row for the summary (recorded before its assertions)."""
    return ROWS.append


def markdown(rows: list[dict[str, Any]]) -> str:
    head = "| " + " | ".join(c.replace("_", " ") for c in COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = ["| " + " | ".join(str(r.get(c, "")) for c in COLUMNS) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not ROWS:
        return
    terminalreporter.section("chaos scenarios")
    for r in ROWS:
        violations = sum(
            r[k] for k in ("lost", "unannounced", "double_booked", "over_filled", "contradictory")
        )
        terminalreporter.write_line(
            f"chaos {r['scenario']:<32} {r['size']:<5} acked {r['acknowledged']:>4} "
            f"ended {r['ended']:>4} filled {r['filled']:>4} violations {violations} "
            f"fault {r['fault_s']:.1f} s first decision {r['first_decision_s']:.2f} s "
            f"recovery {r['recovery_s']:.2f} s run {r['run_s']:.0f} s"
        )
    folder = os.environ.get("CHAOS_RESULTS")
    if folder:
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        meta = {
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        }
        (out / "chaos.json").write_text(json.dumps({**meta, "scenarios": ROWS}, indent=2) + "\n")
        (out / "chaos.md").write_text(
            f"# Chaos suite results ({meta['when']}, {meta['machine']})\n\n{markdown(ROWS)}\n"
        )
        terminalreporter.write_line(f"chaos results written to {out}/chaos.json and chaos.md")
