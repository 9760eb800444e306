"""The replay sandbox: the live dispatcher shell on in-memory twins that find what Redis found.

Nothing here touches Redis or Kafka. ``ExactIndex`` is the in-memory worker index with Redis's
own GEO arithmetic (``replay.geo_exact``) and shard layout (one GEO set per map cell and skill,
``COUNT`` applied per cell), so a search returns the same members with the same distances as
the live index did. ``HeapRequestStore`` is the in-memory request store with its timers on a
heap, so a long replay does not sort every timer at every step.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator, Sequence

from consumers.dispatching import Dispatcher
from dispatch.geo import KM_PER_DEG_LAT, cell_of, cells_within
from dispatch.model import Candidate, Policy, SearchSpec
from infra.memory import MemoryRequestStore, MemoryWorkerIndex
from infra.ports import WorkerRecord
from infra.redis_index import TIMER_LEASE_MS
from replay.geo_exact import distance_m, printed_km, stored_point

SUB_DEG = 0.05  # finer buckets inside a cell, only to find members faster
Point = tuple[float, float]


def _sub(lon: float, lat: float) -> tuple[int, int]:
    return math.floor(lon / SUB_DEG), math.floor(lat / SUB_DEG)


class GeoShards:
    """The set of indexed worker ids, kept as Redis keeps it: per (cell, skill), with positions.

    It stands in for ``MemoryWorkerIndex.indexed``: adding a worker who moved re-files them.
    """

    def __init__(self, records: dict[str, WorkerRecord]) -> None:
        self.records = records
        self.where: dict[str, tuple[Point, tuple[str, ...]]] = {}
        self.shards: dict[tuple[str, str], dict[tuple[int, int], dict[str, Point]]] = {}

    def add(self, worker_id: str) -> None:
        rec = self.records[worker_id]
        self.discard(worker_id)
        at = stored_point(rec.lon, rec.lat)
        cell, sub = cell_of(rec.lon, rec.lat), _sub(rec.lon, rec.lat)
        for skill in rec.skills:
            self.shards.setdefault((cell, skill), {}).setdefault(sub, {})[worker_id] = at
        self.where[worker_id] = ((rec.lon, rec.lat), rec.skills)

    def discard(self, worker_id: str) -> None:
        old = self.where.pop(worker_id, None)
        if old is None:
            return
        (lon, lat), skills = old
        cell, sub = cell_of(lon, lat), _sub(lon, lat)
        for skill in skills:
            self.shards[(cell, skill)][sub].pop(worker_id, None)

    def __contains__(self, worker_id: object) -> bool:
        return worker_id in self.where

    def __len__(self) -> int:
        return len(self.where)

    def __iter__(self) -> Iterator[str]:
        return iter(self.where)

    def near(self, cell: str, skill: str, spec: SearchSpec) -> Iterator[tuple[str, Point]]:
        """Members of one (cell, skill) set inside the search's bounding box."""
        shard = self.shards.get((cell, skill))
        if not shard:
            return
        dlat = spec.radius_km / KM_PER_DEG_LAT
        dlon = spec.radius_km / (KM_PER_DEG_LAT * max(0.01, math.cos(math.radians(spec.lat))))
        x0, y0 = _sub(spec.lon - dlon * 1.01, spec.lat - dlat * 1.01)
        x1, y1 = _sub(spec.lon + dlon * 1.01, spec.lat + dlat * 1.01)
        for x in range(x0, x1 + 1):
            for y in range(y0, y1 + 1):
                yield from shard.get((x, y), {}).items()


class ExactIndex(MemoryWorkerIndex):
    """The in-memory worker index, searching exactly as ``RedisWorkerIndex`` does."""

    def __init__(self) -> None:
        super().__init__()
        self.shards = GeoShards(self.records)
        self.indexed = self.shards  # type: ignore[assignment]

    def _search_one(self, spec: SearchSpec) -> list[Candidate]:
        radius_m = spec.radius_km * 1000
        found: list[Candidate] = []
        for cell in cells_within(spec.lon, spec.lat, spec.radius_km):
            inside = []
            for wid, (x, y) in self.shards.near(cell, spec.skill, spec):
                d = distance_m(spec.lon, spec.lat, x, y)
                if d <= radius_m:
                    inside.append((d, wid))
            inside.sort()
            found += [Candidate(wid, printed_km(d)) for d, wid in inside[: spec.count]]
        found.sort(key=lambda c: (c.distance_km, c.worker_id))
        return found[: spec.count]


class HeapRequestStore(MemoryRequestStore):
    """The in-memory request store with timers on a heap (same hand-out order as Redis)."""

    def __init__(self) -> None:
        super().__init__()
        self.heap: list[tuple[int, str]] = []

    async def schedule(self, due: Sequence[tuple[str, int | None]]) -> None:
        await super().schedule(due)
        for rid, at_ms in due:
            if at_ms is not None:
                heapq.heappush(self.heap, (at_ms, rid))

    def next_due(self) -> int | None:
        """When the earliest timer comes due, or None when none is set."""
        while self.heap and self.timers.get(self.heap[0][1]) != self.heap[0][0]:
            heapq.heappop(self.heap)
        return self.heap[0][0] if self.heap else None

    async def pop_due(self, now_ms: int, limit: int) -> list[str]:
        due: list[str] = []
        while len(due) < limit and (at := self.next_due()) is not None and at <= now_ms:
            rid = heapq.heappop(self.heap)[1]
            if rid not in due:
                due.append(rid)
        lease = now_ms + TIMER_LEASE_MS  # leased, as in Redis: due again unless rescheduled
        for rid in due:
            self.timers[rid] = lease
            heapq.heappush(self.heap, (lease, rid))
        return due


def sandbox(policy: Policy) -> tuple[Dispatcher, ExactIndex, HeapRequestStore]:
    """A dispatcher of its own on fresh in-memory twins."""
    index, store = ExactIndex(), HeapRequestStore()
    return Dispatcher(index, store, policy), index, store
