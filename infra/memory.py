"""In-memory twins of the Redis adapters, for fast unit tests.

They keep the same contract as the real ones (``tests/contract`` holds them to it), including
the parts that matter for correctness: a hold is taken by one caller only, a save with a stale
version fails (and writes neither state nor outbox), an outbox is cleared only at its version,
a due timer is handed out once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dispatch.geo import haversine_km
from dispatch.model import Candidate, RequestState, SearchSpec
from infra.keys import ASSIGNED_PREFIX
from infra.ports import Envelope, Neglected, Presence, Saved, Stored, WorkerRecord, Write
from infra.redis_index import TIMER_LEASE_MS
from infra.state_codec import snapshot


class MemoryWorkerIndex:
    """Dict-backed worker index: a brute-force scan, exact distances."""

    def __init__(self) -> None:
        self.records: dict[str, WorkerRecord] = {}
        self.holds: dict[str, str] = {}
        self.indexed: set[str] = set()

    async def apply(self, changes: Sequence[Presence]) -> None:
        for change in changes:
            self._apply_one(change)

    def _apply_one(self, change: Presence) -> None:
        old = self.records.get(change.worker_id)
        if change.kind == "checkin":
            rec = WorkerRecord(change.worker_id, change.lon, change.lat, change.skills, True)
        elif old is None:
            return
        elif change.kind == "locate":
            rec = WorkerRecord(change.worker_id, change.lon, change.lat, old.skills, old.online)
        else:
            rec = WorkerRecord(change.worker_id, old.lon, old.lat, old.skills, False)
        self.records[change.worker_id] = rec
        self._reindex(change.worker_id)

    def _reindex(self, worker_id: str) -> None:
        rec = self.records.get(worker_id)
        if rec is not None and rec.online and worker_id not in self.holds:
            self.indexed.add(worker_id)
        else:
            self.indexed.discard(worker_id)

    async def search(self, specs: Sequence[SearchSpec]) -> list[list[Candidate]]:
        return [self._search_one(spec) for spec in specs]

    def _search_one(self, spec: SearchSpec) -> list[Candidate]:
        found = []
        for wid in self.indexed:
            rec = self.records[wid]
            if spec.skill in rec.skills:
                d = haversine_km(spec.lon, spec.lat, rec.lon, rec.lat)
                if d <= spec.radius_km:
                    found.append(Candidate(wid, round(d, 4)))
        found.sort(key=lambda c: (c.distance_km, c.worker_id))
        return found[: spec.count]

    async def hold(self, claims: Sequence[tuple[str, str]], ttl_ms: int) -> list[bool]:
        got = []
        for worker_id, request_id in claims:
            ok = worker_id not in self.holds
            if ok:
                self.holds[worker_id] = request_id
                self.indexed.discard(worker_id)
            got.append(ok)
        return got

    async def release(self, pairs: Sequence[tuple[str, str]]) -> None:
        for worker_id, request_id in pairs:
            if self.holds.get(worker_id) == request_id:
                del self.holds[worker_id]
                self._reindex(worker_id)

    async def assign(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        done = []
        for worker_id, request_id in pairs:
            ok = self.holds.get(worker_id) in (request_id, ASSIGNED_PREFIX + request_id)
            if ok:
                self.holds[worker_id] = ASSIGNED_PREFIX + request_id
            done.append(ok)
        return done

    async def unassign(self, pairs: Sequence[tuple[str, str]]) -> None:
        await self.release([(w, ASSIGNED_PREFIX + r) for w, r in pairs])

    async def holder(self, worker_id: str) -> str | None:
        return self.holds.get(worker_id)

    async def record(self, worker_id: str) -> WorkerRecord | None:
        return self.records.get(worker_id)

    async def available(self) -> int:
        return len(self.indexed)


@dataclass
class _Entry:
    version: int
    state: RequestState
    encoded: str
    outbox_at: int | None = None  # when its pending outbox was last written; None: none
    events: tuple[Envelope, ...] = ()


class MemoryRequestStore:
    """Dict-backed request store with versions, outboxes and timers."""

    def __init__(self) -> None:
        self.entries: dict[str, _Entry] = {}
        self.timers: dict[str, int] = {}

    @property
    def states(self) -> dict[str, tuple[int, RequestState]]:
        """Every request's (version, state), for tests and reports."""
        return {rid: (e.version, e.state) for rid, e in self.entries.items()}

    async def load(self, request_ids: Sequence[str]) -> dict[str, Stored]:
        return {rid: _stored(rid, self.entries[rid]) for rid in request_ids if rid in self.entries}

    async def save(self, writes: Sequence[Write]) -> list[Saved]:
        return [self._save(w) for w in writes]

    def _save(self, w: Write) -> bool:
        rid = w.state.job.request_id
        old = self.entries.get(rid)
        if (old.version if old else 0) != w.version:
            return False
        kept = old.events if old and old.outbox_at is not None else ()
        self.entries[rid] = _Entry(w.version + 1, w.state, w.encoded, w.at_ms, kept + w.events)
        return True

    async def clear(self, published: Sequence[tuple[str, int]]) -> None:
        for rid, version in published:
            entry = self.entries.get(rid)
            if entry is not None and entry.version == version:
                entry.outbox_at, entry.events = None, ()

    async def schedule(self, due: Sequence[tuple[str, int | None]]) -> None:
        for rid, at_ms in due:
            if at_ms is None:
                self.timers.pop(rid, None)
            else:
                self.timers[rid] = at_ms

    async def wake(self, due: Sequence[tuple[str, int]]) -> None:
        await self.schedule([(rid, at) for rid, at in due if rid not in self.timers])

    async def pop_due(self, now_ms: int, limit: int) -> list[str]:
        due = sorted((t, rid) for rid, t in self.timers.items() if t <= now_ms)[:limit]
        for _, rid in due:
            self.timers[rid] = now_ms + TIMER_LEASE_MS  # leased, as in Redis
        return [rid for _, rid in due]

    async def neglected(self, now_ms: int, stale_ms: int) -> list[Neglected]:
        out = []
        for rid, e in self.entries.items():
            stale = e.outbox_at is not None and e.outbox_at < now_ms - stale_ms
            untimed = not e.state.terminal and rid not in self.timers
            if stale or untimed:
                out.append(Neglected(rid, _stored(rid, e), stale, untimed))
        return out


def _stored(rid: str, e: _Entry) -> Stored:
    if e.outbox_at is None:
        return Stored(e.version, e.state)
    return Stored(e.version, e.state, (*e.events, snapshot(rid, e.version, e.outbox_at, e.encoded)))
