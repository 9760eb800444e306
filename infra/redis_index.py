"""Redis adapters: the geo-sharded worker index with its holds, and the request store.

Every multi-key step is a batch of single-slot commands, one pipeline per node
(``infra.redis_nodes``); every atomic step (a Lua script, a ``SET NX``) touches one slot. The
same code therefore runs on one Redis or a Redis Cluster.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

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
from infra.redis_nodes import AnyRedis, Batch, nodes_of
from infra.state_codec import load_state, pack_events, snapshot, unpack_outbox

# Hold and record share a slot (see infra.keys): taking the hold and reading the record the
# worker must leave the index by is one command. Returns the record ('' if none), or nil when
# someone else holds the worker.
# A hold is taken once, even by the same request: two dispatchers deciding one request at
# once (a rebalance) must not both believe they hold the worker, for the one whose save loses
# lets its holds go.
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
# The offer's hold becomes the assignment; an assignment already made counts as made.
_ASSIGN = """
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1
end
if v == ARGV[2] then return 1 end
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
SEARCH_CHUNK = 64  # requests per search pipeline; a batch's chunks are in flight together


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

    def __init__(self, redis: AnyRedis, keys: Keys) -> None:
        self.redis = redis
        self.nodes = nodes_of(redis)
        self.keys = keys
        self._hold = redis.register_script(_HOLD)
        self._release = redis.register_script(_RELEASE)
        self._assign = redis.register_script(_ASSIGN)

    async def _records(self, worker_ids: Sequence[str]) -> list[WorkerRecord | None]:
        batch = await self.nodes.batch()
        for wid in worker_ids:
            key = self.keys.bucket(wid)
            batch.on(key).hget(key, wid)
        raw = await batch.execute()
        return [unpack_record(wid, r) for wid, r in zip(worker_ids, raw, strict=True)]

    async def apply(self, changes: Sequence[Presence]) -> None:
        ids = list(dict.fromkeys(c.worker_id for c in changes))
        reads = await self.nodes.batch()
        for wid in ids:
            bucket, hold = self.keys.bucket(wid), self.keys.hold(wid)
            reads.on(bucket).hget(bucket, wid)
            reads.on(hold).get(hold)
        raw = await reads.execute()
        records = {w: unpack_record(w, raw[2 * i]) for i, w in enumerate(ids)}
        holds: dict[str, str | None] = {w: raw[2 * i + 1] for i, w in enumerate(ids)}
        writes = await self.nodes.batch()
        for change in changes:
            self._write_change(writes, records, holds, change)
        await writes.execute(replicated=True)

    def _write_change(
        self,
        batch: Batch,
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
                key = self.keys.geo(cell_of(old.lon, old.lat), skill)
                batch.on(key).zrem(key, wid)
        if new.online and hold is None:
            self._add(batch, new)
        bucket = self.keys.bucket(wid)
        batch.on(bucket).hset(bucket, wid, pack_record(new))
        records[wid] = new

    def _add(self, batch: Batch, rec: WorkerRecord) -> None:
        cell = cell_of(rec.lon, rec.lat)
        for skill in rec.skills:
            key = self.keys.geo(cell, skill)
            batch.on(key).geoadd(key, (rec.lon, rec.lat, rec.worker_id))

    async def search(self, specs: Sequence[SearchSpec]) -> list[list[Candidate]]:
        # Several pipelines in flight at once: Redis runs one chunk's searches while the client
        # packs the next chunk and parses the last, instead of each side waiting on the other.
        chunks = [specs[i : i + SEARCH_CHUNK] for i in range(0, len(specs), SEARCH_CHUNK)]
        found = await asyncio.gather(*(self._search_chunk(c) for c in chunks))
        return [candidates for part in found for candidates in part]

    async def _search_chunk(self, specs: Sequence[SearchSpec]) -> list[list[Candidate]]:
        batch = await self.nodes.batch()
        spans = []
        for spec in specs:
            cells = cells_within(spec.lon, spec.lat, spec.radius_km)
            for cell in cells:
                key = self.keys.geo(cell, spec.skill)
                batch.on(key).geosearch(
                    key,
                    longitude=spec.lon,
                    latitude=spec.lat,
                    radius=spec.radius_km,
                    unit="km",
                    sort="ASC",
                    count=spec.count,
                    withdist=True,
                )
            spans.append(len(cells))
        raw = await batch.execute()
        return list(_merge(specs, spans, raw))

    async def hold(self, claims: Sequence[tuple[str, str]], ttl_ms: int) -> list[bool]:
        batch = await self.nodes.batch()
        for wid, rid in claims:
            keys = [self.keys.hold(wid), self.keys.bucket(wid)]
            batch.script(self._hold, keys, [rid, ttl_ms, wid])
        # Replicated before any offer names the worker: a failover cannot lose the hold.
        raw = await batch.execute(replicated=True)
        gone: dict[str, list[str]] = {}
        for (wid, _), rec in zip(claims, raw, strict=True):
            if rec:  # held, with a record: out of every shard the worker is in, not just one
                self._group(gone, unpack_record(wid, rec), lambda r: [r.worker_id])
        if gone:
            cleanup = await self.nodes.batch()
            for key, members in gone.items():  # one ZREM per shard, not per worker
                cleanup.on(key).zrem(key, *members)
            await cleanup.execute()
        return [r is not None for r in raw]

    async def release(self, pairs: Sequence[tuple[str, str]]) -> None:
        if not pairs:
            return
        batch = await self.nodes.batch()
        for wid, rid in pairs:
            batch.script(self._release, [self.keys.hold(wid), self.keys.bucket(wid)], [rid, wid])
        back: dict[str, list[Any]] = {}
        for (wid, _), rec in zip(pairs, await batch.execute(), strict=True):
            record = unpack_record(wid, rec) if rec else None
            if record is not None and record.online:
                self._group(back, record, lambda r: [r.lon, r.lat, r.worker_id])
        if back:
            adds = await self.nodes.batch()
            for key, values in back.items():  # one GEOADD per shard, not per worker
                adds.on(key).geoadd(key, values)
            await adds.execute()

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
        batch = await self.nodes.batch()
        for wid, rid in pairs:
            args: list[str | int] = [rid, ASSIGNED_PREFIX + rid, ASSIGNMENT_TTL_MS]
            batch.script(self._assign, [self.keys.hold(wid)], args)
        return [bool(r) for r in await batch.execute(replicated=True)]

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

    def __init__(self, redis: AnyRedis, keys: Keys) -> None:
        self.redis = redis
        self.nodes = nodes_of(redis)
        self.keys = keys
        self._save = redis.register_script(_SAVE)
        self._clear = redis.register_script(_CLEAR)
        self._audit = redis.register_script(_AUDIT)
        self._pop_due = redis.register_script(_POP_DUE)

    async def load(self, request_ids: Sequence[str]) -> dict[str, Stored]:
        batch = await self.nodes.batch()
        for rid in request_ids:
            key = self.keys.request(rid)
            batch.on(key).hmget(key, "v", "s", "o")
        raw = await batch.execute()
        return {
            rid: _stored(rid, v, s, o)
            for rid, (v, s, o) in zip(request_ids, raw, strict=True)
            if v is not None
        }

    async def save(self, writes: Sequence[Write]) -> list[Saved]:
        if not writes:
            return []
        batch = await self.nodes.batch()
        for w in writes:
            key = self.keys.request(w.state.job.request_id)
            ttl = state_ttl_ms(w.state)
            args: list[str | int] = [w.version, w.encoded, ttl, w.at_ms, pack_events(w.events)]
            batch.script(self._save, [key], args)
        # Each write stands alone: a value Redis refuses fails that write only. Replicated
        # before the outbox is published, so a failover cannot take back an announced decision.
        return [_saved(r) for r in await batch.execute(raise_on_error=False, replicated=True)]

    async def clear(self, published: Sequence[tuple[str, int]]) -> None:
        if not published:
            return
        batch = await self.nodes.batch()
        for rid, version in published:
            batch.script(self._clear, [self.keys.request(rid)], [version])
        await batch.execute()

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
        batch, key = await self.nodes.batch(), self.keys.timers()
        if drops:
            batch.on(key).zrem(key, *drops)
        if adds:
            batch.on(key).zadd(key, adds)
        await batch.execute()

    async def wake(self, due: Sequence[tuple[str, int]]) -> None:
        if due:
            await self.redis.zadd(self.keys.timers(), dict(due), nx=True)

    async def pop_due(self, now_ms: int, limit: int) -> list[str]:
        batch = await self.nodes.batch()
        batch.script(self._pop_due, [self.keys.timers()], [now_ms, limit, now_ms + TIMER_LEASE_MS])
        ids: list[str] = (await batch.execute())[0]
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
        batch = await self.nodes.batch()
        for key in keys:
            batch.script(self._audit, [key], [])
        return {
            self.keys.request_id(key): (found[0] in _OVER, int(found[1]) if found[1] else None)
            for key, found in zip(keys, await batch.execute(), strict=True)
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
    if isinstance(reply, Exception):  # a transient one failed the whole batch already
        return f"the request store refused it: {reply}"
    return bool(reply)
