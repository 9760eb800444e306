"""Where ``replay run`` keeps its results, and where the console finds the latest ones.

Every ``replay run`` writes one JSON file into the results directory: the window, the scope, the
grouping, and for each run (recorded, then each replay) its label, its policy and its
indicators per group (``replay.reporting.as_row``), plus the chart's groups (top N and
"others"). The directory is ``$GIG_REPLAY_RESULTS``, else ``.stack/replays`` in the checkout
(``--results DIR`` overrides it for one run). Files are named by the time of the run, so the
newest sorts last; ``latest`` reads the newest few.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Final

from infra.settings import STACK_DIR

MAX_KEPT: Final = 200  # older result files are removed, so the directory stays small


def results_dir() -> Path:
    """The results directory (not created)."""
    return Path(os.environ.get("GIG_REPLAY_RESULTS") or STACK_DIR / "replays")


def save(result: dict[str, Any], folder: Path | None = None) -> Path:
    """Write one run's results; return the file's path."""
    folder = folder or results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"replay-{time.strftime('%Y%m%dT%H%M%S')}-{time.time_ns() % 10**9:09d}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, ensure_ascii=False, allow_nan=False))
    tmp.replace(path)  # a reader never sees half a file
    for old in sorted(folder.glob("replay-*.json"))[:-MAX_KEPT]:
        old.unlink(missing_ok=True)
    return path


def latest(n: int, folder: Path | None = None) -> list[dict[str, Any]]:
    """The newest ``n`` results, newest first (unreadable files are skipped)."""
    folder = folder or results_dir()
    out: list[dict[str, Any]] = []
    for path in sorted(folder.glob("replay-*.json"), reverse=True):
        if len(out) == n:
            break
        try:
            out.append(json.loads(path.read_text()) | {"file": path.name})
        except (OSError, ValueError):
            continue
    return out
