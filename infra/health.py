"""A service's health as one small shared value: ``ok``, ``degraded`` or ``joining``, why, and
since when.

The consumer loop and the group join write it, the lag watcher its lag; whoever serves it
(``/readyz``, ``infra.metrics.Probe``) reads it. Only
a change of state moves ``since_ms``, so a lasting outage keeps the time it began while its
reason is kept up to date.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from infra.clock import now_ms

State = Literal["ok", "degraded", "joining"]


@dataclass
class Health:
    """What a service says about itself; starts ``joining``."""

    state: State = "joining"
    reason: str = "starting"
    since_ms: int = field(default_factory=now_ms)
    # Records behind the end of the log on the partitions it owns, as last measured (None:
    # not yet), and when (``infra.metrics.watch_lag`` measures it every few seconds).
    lag: int | None = None
    lag_at_ms: int | None = None

    def set(self, state: State, reason: str = "") -> None:
        if state != self.state:
            self.state, self.since_ms = state, now_ms()
        self.reason = reason

    def ok(self) -> None:
        self.set("ok")

    def degraded(self, reason: str) -> None:
        self.set("degraded", reason)

    def joining(self, reason: str) -> None:
        self.set("joining", reason)

    def measured(self, lag: int) -> None:
        self.lag, self.lag_at_ms = lag, now_ms()

    @property
    def ready(self) -> bool:
        """Joined and working (``infra.metrics.Probe`` adds the lag and the cache)."""
        return self.state == "ok"

    def as_dict(self) -> dict[str, str | int]:
        """The JSON a readiness endpoint answers with."""
        return {"state": self.state, "reason": self.reason, "since_ms": self.since_ms}
