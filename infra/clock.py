"""The live clock the shells hand the pure core: wall-clock epoch milliseconds."""

from __future__ import annotations

import time


def now_ms() -> int:
    """Wall-clock epoch milliseconds: the live clock the shell hands the core."""
    return int(time.time() * 1000)
