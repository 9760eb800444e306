"""Redis adapters: the geo-sharded worker index with its holds, and the request store.

Every multi-key step is a pipeline of single-slot commands; every atomic step (a Lua script,
a ``SET NX``) touches one key. The same code therefore runs on one Redis or a cluster.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from dispatch.geo import cell_of, cells_within
from dispatch.model import TERMINAL, Candidate, RequestState, SearchSpec
from infra.keys import (
    ASSIGNED_PREFIX,
    ASSIGNMENT_TTL_MS,
    REQUEST_STATE_TTL_MAX_MS,
    REQUEST_STATE_TTL_MS,
    Keys,
)
from infra.ports import Neglected, Presence, Saved, Stored, WorkerRecord, Write
from infra.state_codec import load_state, pack_events, snapshot, unpack_outbox

# Hold and record share a slot (see infra.keys): taking the hold and reading the record the
# worker must leave the index by is one command. Returns the record ('' if none), or nil when
# someone else holds the worker.
_HOLD = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('HGET', KEYS[2], ARGV[3]) or ''
end
return false
"""
# Drop the hold if it is this request's; return the record to put the worker back by.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return redis.call('HGET', KEYS[2], ARGV[2]) or ''
end
return false
"""
_ASSIGN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1
end
return 0
"""
# Compare-and-set of a request's state, and its outbox in the same hash (one slot, one
# atomic step): a decision and its messages are saved together or not at all. An outbox still
# pending (a save whose messages are not yet known published) is kept ahead of the new one.
# ARGV: expected version, state, TTL (ms), written at (ms), the new messages (packed).
_SAVE = """
local cur = redis.call('HMGET', KEYS[1], 'v', 'o')
if tonumber(cur[1] or '0') ~= tonumber(ARGV[1]) then return 0 end
local o = ARGV[4]
if cur[2] then
  local i = string.find(cur[2], '\\30', 1, true)
  if i then o = o .. string.sub(cur[2], i) end
end
redis.call('HSET', KEYS[1], 'v', tonumber(ARGV[1]) + 1, 's', ARGV[2], 'o', o .. ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
# The outbox is published: drop it, unless a later save has written (and so owns) it since.
_CLEAR = """
if tonumber(redis.call('HGET', KEYS[1], 'v')) == tonumber(ARGV[1]) then
  return redis.call('HDEL', KEYS[1], 'o')
end
return 0
"""
# For the sweep: a request's status and when its pending outbox was written ('' if none),
# read on the server so the state itself does not cross the wire.
_AUDIT = """
local r = redis.call('HMGET', KEYS[1], 's', 'o')
if not r[1] then return false end
local at = r[2] and string.match(r[2], '^%d+') or ''
return {string.match(r[1], '"status":"(%a+)"') or '', at}
"""
# A popped timer is leased, not deleted: it comes due again after the lease unless the
# dispatcher that took it reschedules it, so a dispatcher that dies mid-batch loses nothing.
_POP_DUE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], ARGV[3], id) end
return ids
"""
TIMER_LEASE_MS = 5_000
# One deadline per round trip rather than redis-py's per-reply socket timeout, which wraps each
# of a pipeline's replies in a timer of its own and cost about 40 % of a command's client time.
ROUND_TRIP_TIMEOUT_S = 5.0
SEARCH_CHUNK = 64  # requests per search pipeline; a batch's chunks are in flight together


# Replies that say Redis cannot serve now, not that a command is wrong: the batch is retried
# whole, never blamed on one request.
_BUSY_REPLIES = ("OOM", "READONLY", "LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "BUSY")


class StoreUnavailable(RedisConnectionError):
    """Redis answered that it cannot serve now (out of memory, read-only, loading...)."""


def _transient(error: Exception) -> bool:
    return isinstance(error, ResponseError) and str(error).startswith(_BUSY_REPLIES)


async def _run(pipe: Any, *, raise_on_error: bool = True) -> list[Any]:
    """Execute a pipeline within one deadline for the whole round trip. Without
    ``raise_on_error`` a command's error is its reply, and the other commands' replies stand."""
    try:
        async with asyncio.timeout(ROUND_TRIP_TIMEOUT_S):
            result: list[Any] = await pipe.execute(raise_on_error=raise_on_error)
            return result
    except ResponseError as e:
        if _transient(e):
            raise StoreUnavailable(str(e)) from e
        raise


def pack_record(rec: WorkerRecord) -> str:
    return f"{rec.lon:.5f},{rec.lat:.5f},{'|'.join(rec.skills)},{int(rec.online)}"


def unpack_record(worker_id: str, raw: str | None) -> WorkerRecord | None:
    if raw is None:
        return None
    lon, lat, skills, online = raw.split(",")
    return WorkerRecord(worker_id, float(lon), float(lat), tuple(skills.split("|")), online == "1")


def fold_presence(old: WorkerRecord | None, change: Presence) -> WorkerRecord | None:
    """The worker's record after one presence change (None: unknown worker, ignored)."""
    if change.kind == "checkin":
        return WorkerRecord(change.worker_id, change.lon, change.lat, change.skills, True)
    if old is None:
        return None
    if change.kind == "locate":
        return WorkerRecord(old.worker_id, change.lon, change.lat, old.skills, old.online)
    return WorkerRecord(old.worker_id, old.lon, old.lat, old.skills, False)


class RedisWorkerIndex:
    """The worker index on Redis GEO sets sharded by map cell and skill."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._hold = redis.register_script(_HOLD)
        self._release = redis.register_script(_RELEASE)
        self._assign = redis.register_script(_ASSIGN)

    async def _records(self, worker_ids: Sequence[str]) -> list[WorkerRecord | None]:
        pipe = self.redis.pipeline(transaction=False)
        for wid in worker_ids:
            pipe.hget(self.keys.bucket(wid), wid)
        raw = await _run(pipe)
        return [unpack_record(wid, r) for wid, r in zip(worker_ids, raw, strict=True)]

    async def apply(self, changes: Sequence[Presence]) -> None:
        ids = list(dict.fromkeys(c.worker_id for c in changes))
        pipe = self.redis.pipeline(transaction=False)
        for wid in ids:
            pipe.hget(self.keys.bucket(wid), wid)
            pipe.get(self.keys.hold(wid))
        raw = await _run(pipe)
        records = {w: unpack_record(w, raw[2 * i]) for i, w in enumerate(ids)}
        holds: dict[str, str | None] = {w: raw[2 * i + 1] for i, w in enumerate(ids)}
        writes = self.redis.pipeline(transaction=False)
        for change in changes:
            self._write_change(writes, records, holds, change)
        await _run(writes)

    def _write_change(
        self,
        pipe: Any,
        records: dict[str, WorkerRecord | None],
        holds: dict[str, str | None],
        change: Presence,
    ) -> None:
        wid = change.worker_id
        old, new = records[wid], fold_presence(records[wid], change)
        if new is None:
            return
        # A hold stays: an offer's until it is answered or lapses, an assignment until its job
        # ends (the dispatcher drops it), whatever the worker's presence does meanwhile.
        hold = holds[wid]
        # Race: a dispatcher may hold this worker between our read and these writes. The
        # hold key stays the authority (a held worker's SET NX fails), so the worst case is a
        # stale index entry that a later claim skips, never a double booking.
        if old is not None and (not new.online or hold is not None or _moved_shard(old, new)):
            for skill in old.skills:
                pipe.zrem(self.keys.geo(cell_of(old.lon, old.lat), skill), wid)
        if new.online and hold is None:
            self._add(pipe, new)
        pipe.hset(self.keys.bucket(wid), wid, pack_record(new))
        records[wid] = new

    def _add(self, pipe: Any, rec: WorkerRecord) -> None:
        cell = cell_of(rec.lon, rec.lat)
        for skill in rec.skills:
            pipe.geoadd(self.keys.geo(cell, skill), (rec.lon, rec.lat, rec.worker_id))

    async def search(self, specs: Sequence[SearchSpec]) -> list[list[Candidate]]:
        # Several pipelines in flight at once: Redis runs one chunk's searches while the client
        # packs the next chunk and parses the last, instead of each side waiting on the other.
        chunks = [specs[i : i + SEARCH_CHUNK] for i in range(0, len(specs), SEARCH_CHUNK)]
        found = await asyncio.gather(*(self._search_chunk(c) for c in chunks))
        return [candidates for part in found for candidates in part]

    async def _search_chunk(self, specs: Sequence[SearchSpec]) -> list[list[Candidate]]:
        pipe = self.redis.pipeline(transaction=False)
        spans = []
        for spec in specs:
            cells = cells_within(spec.lon, spec.lat, spec.radius_km)
            for cell in cells:
                pipe.geosearch(
                    self.keys.geo(cell, spec.skill),
                    longitude=spec.lon,
                    latitude=spec.lat,
                    radius=spec.radius_km,
                    unit="km",
                    sort="ASC",
                    count=spec.count,
                    withdist=True,
                )
            spans.append(len(cells))
        raw = await _run(pipe)
        return list(_merge(specs, spans, raw))

    async def hold(self, claims: Sequence[tuple[str, str]], ttl_ms: int) -> list[bool]:
        pipe = self.redis.pipeline(transaction=False)
        for wid, rid in claims:
            keys = [self.keys.hold(wid), self.keys.bucket(wid)]
            await self._hold(keys=keys, args=[rid, ttl_ms, wid], client=pipe)
        raw = await _run(pipe)
        gone: dict[str, list[str]] = {}
        for (wid, _), rec in zip(claims, raw, strict=True):
            if rec:  # held, with a record: out of every shard the worker is in, not just one
                self._group(gone, unpack_record(wid, rec), lambda r: [r.worker_id])
        if gone:
            cleanup = self.redis.pipeline(transaction=False)
            for key, members in gone.items():  # one ZREM per shard, not per worker
                cleanup.zrem(key, *members)
            await _run(cleanup)
        return [r is not None for r in raw]

    async def release(self, pairs: Sequence[tuple[str, str]]) -> None:
        if not pairs:
            return
        pipe = self.redis.pipeline(transaction=False)
        for wid, rid in pairs:
            keys = [self.keys.hold(wid), self.keys.bucket(wid)]
            await self._release(keys=keys, args=[rid, wid], client=pipe)
        back: dict[str, list[Any]] = {}
        for (wid, _), rec in zip(pairs, await _run(pipe), strict=True):
            record = unpack_record(wid, rec) if rec else None
            if record is not None and record.online:
                self._group(back, record, lambda r: [r.lon, r.lat, r.worker_id])
        if back:
            pipe = self.redis.pipeline(transaction=False)
            for key, values in back.items():  # one GEOADD per shard, not per worker
                pipe.geoadd(key, values)
            await _run(pipe)

    def _group(
        self,
        into: dict[str, list[Any]],
        rec: WorkerRecord | None,
        values: Callable[[WorkerRecord], list[Any]],
    ) -> None:
        """Add a worker's values under each shard key they belong in."""
        if rec is None:
            return
        cell = cell_of(rec.lon, rec.lat)
        for skill in rec.skills:
            into.setdefault(self.keys.geo(cell, skill), []).extend(values(rec))

    async def assign(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        if not pairs:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for wid, rid in pairs:
            args: list[str | int] = [rid, ASSIGNED_PREFIX + rid, ASSIGNMENT_TTL_MS]
            await self._assign(keys=[self.keys.hold(wid)], args=args, client=pipe)
        return [bool(r) for r in await _run(pipe)]

    async def unassign(self, pairs: Sequence[tuple[str, str]]) -> None:
        await self.release([(w, ASSIGNED_PREFIX + r) for w, r in pairs])

    async def holder(self, worker_id: str) -> str | None:
        value = await self.redis.get(self.keys.hold(worker_id))
        return None if value is None else str(value)

    async def record(self, worker_id: str) -> WorkerRecord | None:
        return (await self._records([worker_id]))[0]

    async def available(self) -> int:
        members: set[Any] = set()
        async for key in self.redis.scan_iter(match=self.keys.geo_pattern(), count=1000):
            members.update(await self.redis.zrange(key, 0, -1))
        return len(members)


def _moved_shard(old: WorkerRecord, new: WorkerRecord) -> bool:
    return cell_of(old.lon, old.lat) != cell_of(new.lon, new.lat) or old.skills != new.skills


def _merge(
    specs: Sequence[SearchSpec], spans: Sequence[int], raw: Sequence[Any]
) -> list[list[Candidate]]:
    out, at = [], 0
    for spec, n in zip(specs, spans, strict=True):
        found = [Candidate(m, d) for part in raw[at : at + n] for m, d in part]
        at += n
        found.sort(key=lambda c: (c.distance_km, c.worker_id))
        out.append(found[: spec.count])
    return out


class RedisRequestStore:
    """Request states as versioned hashes with their outboxes, timers in one sorted set."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._save = redis.register_script(_SAVE)
        self._clear = redis.register_script(_CLEAR)
        self._audit = redis.register_script(_AUDIT)
        self._pop_due = redis.register_script(_POP_DUE)

    async def load(self, request_ids: Sequence[str]) -> dict[str, Stored]:
        pipe = self.redis.pipeline(transaction=False)
        for rid in request_ids:
            pipe.hmget(self.keys.request(rid), "v", "s", "o")
        raw = await _run(pipe)
        return {
            rid: _stored(rid, v, s, o)
            for rid, (v, s, o) in zip(request_ids, raw, strict=True)
            if v is not None
        }

    async def save(self, writes: Sequence[Write]) -> list[Saved]:
        if not writes:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for w in writes:
            key = self.keys.request(w.state.job.request_id)
            ttl = state_ttl_ms(w.state)
            args: list[str | int] = [w.version, w.encoded, ttl, w.at_ms, pack_events(w.events)]
            await self._save(keys=[key], args=args, client=pipe)
        # Each write stands alone: a value Redis refuses fails that write only.
        return [_saved(r) for r in await _run(pipe, raise_on_error=False)]

    async def clear(self, published: Sequence[tuple[str, int]]) -> None:
        if not published:
            return
        pipe = self.redis.pipeline(transaction=False)
        for rid, version in published:
            await self._clear(keys=[self.keys.request(rid)], args=[version], client=pipe)
        await _run(pipe)

    async def schedule(self, due: Sequence[tuple[str, int | None]]) -> None:
        if not due:
            return
        # Folded in order (the last entry for a request wins) into one ZADD and one ZREM.
        adds: dict[str, int] = {}
        drops: set[str] = set()
        for rid, at_ms in due:
            if at_ms is None:
                adds.pop(rid, None)
                drops.add(rid)
            else:
                adds[rid] = at_ms
                drops.discard(rid)
        pipe = self.redis.pipeline(transaction=False)
        if drops:
            pipe.zrem(self.keys.timers(), *drops)
        if adds:
            pipe.zadd(self.keys.timers(), adds)
        await _run(pipe)

    async def wake(self, due: Sequence[tuple[str, int]]) -> None:
        if due:
            await self.redis.zadd(self.keys.timers(), dict(due), nx=True)

    async def pop_due(self, now_ms: int, limit: int) -> list[str]:
        args = [now_ms, limit, now_ms + TIMER_LEASE_MS]
        async with asyncio.timeout(ROUND_TRIP_TIMEOUT_S):
            ids: list[str] = await self._pop_due(keys=[self.keys.timers()], args=args)
        return ids

    async def neglected(self, now_ms: int, stale_ms: int) -> list[Neglected]:
        # A SCAN over every request hash: fine for a sweep every SWEEP_INTERVAL_S over a day's
        # requests, never for the hot path. Each hash is read by a script that returns only
        # its status and its outbox's age; the few in need are then loaded whole.
        out: list[Neglected] = []
        pattern = self.keys.request_pattern()
        batch: list[str] = []
        async for key in self.redis.scan_iter(match=pattern, count=SWEEP_SCAN_COUNT):
            batch.append(key)
            if len(batch) >= SWEEP_SCAN_COUNT:
                out += await self._neglected(batch, now_ms - stale_ms)
                batch = []
        return out + await self._neglected(batch, now_ms - stale_ms)

    async def _neglected(self, keys: list[str], stale_before: int) -> list[Neglected]:
        audits = await self._audits(keys)
        running = [rid for rid, (over, _) in audits.items() if not over]
        scores = await self.redis.zmscore(self.keys.timers(), running) if running else []
        untimed = {rid for rid, score in zip(running, scores, strict=True) if score is None}
        wanted = {
            rid: (at is not None and at < stale_before, rid in untimed)
            for rid, (_, at) in audits.items()
        }
        wanted = {rid: why for rid, why in wanted.items() if any(why)}
        stored = await self.load(list(wanted))
        return [Neglected(rid, stored[rid], *wanted[rid]) for rid in wanted if rid in stored]

    async def _audits(self, keys: list[str]) -> dict[str, tuple[bool, int | None]]:
        """For each request hash still there: whether the request is over, and when its
        pending outbox was written (None: none pending)."""
        if not keys:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            await self._audit(keys=[key], client=pipe)
        return {
            self.keys.request_id(key): (found[0] in _OVER, int(found[1]) if found[1] else None)
            for key, found in zip(keys, await _run(pipe), strict=True)
            if found
        }


_OVER = frozenset(s.value for s in TERMINAL)
SWEEP_SCAN_COUNT = 500  # request hashes per SCAN step and per pipeline of the sweep


def state_ttl_ms(state: RequestState) -> int:
    """How long a request's hash lives: a day past its deadline, within Redis's bounds (a
    deadline however far ahead, even one Redis could not express as an expiry, is capped)."""
    job = state.job
    return min(
        max(1, job.deadline_at_ms - job.requested_at_ms) + REQUEST_STATE_TTL_MS,
        REQUEST_STATE_TTL_MAX_MS,
    )


def _stored(rid: str, v: str, s: str, o: str | None) -> Stored:
    version = int(v)
    if o is None:
        return Stored(version, load_state(s))
    at, events = unpack_outbox(o)
    return Stored(version, load_state(s), (*events, snapshot(rid, version, at, s)))


def _saved(reply: Any) -> Saved:
    if isinstance(reply, Exception):
        if _transient(reply):
            raise StoreUnavailable(str(reply)) from reply
        return f"the request store refused it: {reply}"
    return bool(reply)
