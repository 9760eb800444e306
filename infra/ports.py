"""The ports the shell needs; each has a Redis adapter and an in-memory twin.

The contract suite in ``tests/contract`` runs one set of tests against both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from dispatch.model import Candidate, RequestState, SearchSpec


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    """Where a worker is, what they can do, and whether they take offers."""

    worker_id: str
    lon: float
    lat: float
    skills: tuple[str, ...]
    online: bool


@dataclass(frozen=True, slots=True)
class Presence:
    """One presence change: a check-in (with skills), a move (skills empty) or going offline."""

    worker_id: str
    kind: str  # "checkin" | "locate" | "offline"
    lon: float = 0.0
    lat: float = 0.0
    skills: tuple[str, ...] = ()


class WorkerIndex(Protocol):
    """Geo-sharded index of available workers, and their holds."""

    async def apply(self, changes: Sequence[Presence]) -> None:
        """Apply presence changes in order (a worker's changes are in their order)."""

    async def search(self, specs: Sequence[SearchSpec]) -> list[list[Candidate]]:
        """For each spec, the nearest available workers inside its radius, nearest first."""

    async def hold(self, claims: Sequence[tuple[str, str]], ttl_ms: int) -> list[bool]:
        """Hold (worker, request) pairs; True where this call got the worker."""

    async def release(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Drop the holds these requests have; online workers return to the index."""

    async def assign(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        """Turn held offers into assignments; False where the hold was not this request's."""

    async def holder(self, worker_id: str) -> str | None:
        """Who holds the worker: a request id, ``A|request`` when assigned, or None."""

    async def record(self, worker_id: str) -> WorkerRecord | None:
        """The worker's last known presence."""

    async def available(self) -> int:
        """How many workers the index holds (for reports and tests; scans every shard)."""


class RequestStore(Protocol):
    """Request states with optimistic versions, and the timers that wake them."""

    async def load(self, request_ids: Sequence[str]) -> dict[str, tuple[int, RequestState]]:
        """Known requests' (version, state); unknown ids are absent."""

    async def save(self, items: Sequence[tuple[RequestState, int]]) -> list[bool]:
        """Write each state if its stored version is still the given one (0: create)."""

    async def schedule(self, due: Sequence[tuple[str, int | None]]) -> None:
        """Set (or with None clear) when each request next wants a tick."""

    async def pop_due(self, now_ms: int, limit: int) -> list[str]:
        """Take the requests due by ``now_ms``; each is handed to exactly one caller."""
