"""Rebuilding the Redis cache from the Kafka log when Redis comes back empty.

Redis only caches what the log holds. The epoch key (``infra.keys``) says the cache is whole;
a Redis restarted without its data, or a new one, has none. A service checks it before it
starts consuming and before every batch after (and straight after a Redis error), and while
it is missing rebuilds instead of consuming: its consumer does not poll, so records that arrive
meanwhile (worker answers among them) wait in Kafka, and offsets are committed only after the
records are processed on the rebuilt cache.

The cache is rebuilt in two parts, in this order, each by one process (a ``SET NX`` lock that
its holder refreshes; the others wait, and take the part over if the lock lapses):

1. ``workers``: the worker-events topic from the start of its retained history up to the end
   offsets seen when the part starts, folded into the index by ``RedisWorkerIndex.apply`` in big
   batches. Those offsets go into the epoch: a presence consumer skips records below them,
   as the index already holds them.
2. ``requests``: the compacted request-state topic up to its end offsets; the highest version
   of each request is written back (with an empty outbox), with the holds of its live offers
   and assignments, and its timer. A request whose time passed meanwhile is simply ticked and
   expires through the core.

Why workers first: the fold runs on a keyspace without holds, so every online worker lands in
the geo index; restoring a hold then takes the worker out of it the way a live hold does. A
worker's presence never ends a hold: an assignment lasts until its job ends (done, no-show or
cancelled, in the request's state), so the holds restored are exactly the jobs still at work.

Finishing the last part sets the epoch in the same script that checks both parts are done, so
a Redis emptied again mid-rebuild is noticed and the rebuild starts over. On the first start
ever, an empty log and an empty Redis make a rebuild that takes milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from pydantic import ValidationError
from redis.exceptions import ClusterDownError, RedisClusterException
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from dispatch.geo import cell_of
from dispatch.model import WORKING, OfferStatus, RequestState
from infra import metrics
from infra.keys import (
    ASSIGNED_PREFIX,
    ASSIGNMENT_TTL_MS,
    HOLD_GRACE_MS,
    REBUILD_LOCK_MS,
    Keys,
)
from infra.ports import Presence
from infra.redis_index import RedisWorkerIndex, state_ttl_ms, unpack_record
from infra.redis_nodes import AnyRedis, nodes_of
from infra.settings import KafkaSettings
from infra.state_codec import load_state
from infra.tasks import background
from schemas.events import REQUEST_STATE_SAVED, RequestStateSaved
from schemas.topics import REQUEST_STATE, WORKER_EVENTS

log = logging.getLogger("rebuild")
R = TypeVar("R")
Records = list[ConsumerRecord[Any, Any]]
# Turns worker-event records into presence changes, leaving out what the live consumer refuses.
PresenceOf = Callable[[Sequence[ConsumerRecord[Any, Any]]], list[Presence]]

WORKERS: Final = "workers"
REQUESTS: Final = "requests"
PARTS: Final = (WORKERS, REQUESTS)  # in this order: see the module docstring
WAIT_POLL_S = 0.2
WAIT_LOG_S = 5.0
PROGRESS_LOG_S = 3.0
READ_RECORDS = 50_000  # records per read of the log
APPLY_BATCH = 4_000  # presence changes per apply(): two pipelines, well inside their deadline
WRITE_BATCH = 2_000  # request states, holds or timers per pipeline
_RUN, _DONE = "run:", "done:"
_REDIS_ERRORS = (
    RedisConnectionError,
    RedisTimeoutError,
    ClusterDownError,
    RedisClusterException,
    ConnectionError,
    OSError,
)

# The epoch, or the part's marker (``run:owner`` while someone rebuilds it, ``done:payload``
# once done), or 'mine' when the caller now holds the part's lock (also when it held it
# already: a rebuild of ours that failed is retried at once, not after its lock lapses).
_TAKE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 'epoch' end
local v = redis.call('GET', KEYS[2])
if v and v ~= ARGV[1] then return v end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 'mine'
"""
_REFRESH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
# Mark the part done if it is still ours and every earlier part is done; the last part sets
# the epoch (carrying the earlier parts' payloads) and drops the markers, in one step.
_FINISH = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
local payload = ''
for i = 3, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if not v or string.sub(v, 1, 5) ~= 'done:' then return 0 end
  payload = payload .. string.sub(v, 6)
end
if ARGV[3] == '' then
  redis.call('SET', KEYS[2], ARGV[2])
  return 1
end
redis.call('SET', KEYS[1], ARGV[3] .. payload)
for i = 2, #KEYS do redis.call('DEL', KEYS[i]) end
return 1
"""
# Write a request's state back unless the store already has that version or a later one.
_RESTORE_STATE = """
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if v >= tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', ARGV[1], 's', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
# Set the hold and return the record the worker must leave the geo index by.
_RESTORE_HOLD = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return redis.call('HGET', KEYS[2], ARGV[3]) or ''
"""


class RebuildLost(Exception):
    """Our lock on a part lapsed or vanished (Redis emptied again): start over."""


# --- the pure part ------------------------------------------------------------------------------


def keep_latest(latest: dict[str, RequestStateSaved], saved: RequestStateSaved) -> None:
    """Fold one saved state in: each request keeps its highest version."""
    known = latest.get(saved.request_id)
    if known is None or saved.version > known.version:
        latest[saved.request_id] = saved


@dataclass(frozen=True, slots=True)
class Claim:
    """A hold to restore: its value, when it began and how long it has left."""

    value: str
    since_ms: int
    ttl_ms: int


def claims_of(state: RequestState, at_ms: int, now_ms: int) -> Iterable[tuple[str, Claim]]:
    """The holds a request's state implies: its live offers and its assignments."""
    rid = state.job.request_id
    for o in state.offers:
        if o.status is OfferStatus.MADE:
            claim = Claim(rid, o.made_at_ms, o.expires_at_ms + HOLD_GRACE_MS - now_ms)
        elif o.status in WORKING:  # hired, and the job not over
            # Accepted within the offer's window and by the last save, whichever came first.
            since = min(at_ms, o.expires_at_ms)
            claim = Claim(ASSIGNED_PREFIX + rid, since, since + ASSIGNMENT_TTL_MS - now_ms)
        else:
            continue
        if claim.ttl_ms > 0:
            yield o.worker_id, claim


def holds_of(states: Iterable[tuple[RequestState, int]], now_ms: int) -> dict[str, Claim]:
    """One hold per worker, from (state, saved at) pairs: the latest claim wins (a worker
    whose assignment a check-in ended may be offered again)."""
    holds: dict[str, Claim] = {}
    for state, at_ms in states:
        for wid, claim in claims_of(state, at_ms, now_ms):
            if wid not in holds or claim.since_ms > holds[wid].since_ms:
                holds[wid] = claim
    return holds


def remaining_ttl_ms(state: RequestState, at_ms: int, now_ms: int) -> int:
    """What is left of the store's TTL for a state saved at ``at_ms`` (<= 0: gone)."""
    return at_ms + state_ttl_ms(state) - now_ms


def floors_of(epoch: str | None) -> dict[int, int]:
    """The worker-events offsets an epoch says the index holds, by partition."""
    if not epoch:
        return {}
    payload = epoch.split("|", 2)[-1]
    with contextlib.suppress(ValueError):
        return {int(p): int(end) for p, end in json.loads(payload).items()}
    return {}


def chunks(items: Sequence[R], size: int) -> Iterable[Sequence[R]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- reading the log ----------------------------------------------------------------------------


async def read_log(
    kafka: KafkaSettings, topic: str, fold: Callable[[Records], Awaitable[None]], what: str
) -> dict[int, int]:
    """Hand ``fold`` the topic's records from the start of retained history up to the end
    offsets seen now, in batches (in order within a partition); return those end offsets."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    try:
        await consumer.start()  # inside: a start that fails (no broker) is closed too
        tps = await _assigned(consumer)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        left = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
        firsts = await consumer.beginning_offsets(tps)
        progress = Progress(what, sum(ends[tp] - firsts[tp] for tp in tps))
        while left:
            batch = await consumer.getmany(*left, timeout_ms=500, max_records=READ_RECORDS)
            records = [r for tp, part in batch.items() for r in part if r.offset < ends[tp]]
            if records:
                await fold(records)
                progress.add(len(records))
            left = {tp for tp in left if await consumer.position(tp) < ends[tp]}
        progress.finish()
        return {tp.partition: ends[tp] for tp in tps}
    finally:
        await consumer.stop()


async def _assigned(consumer: AIOKafkaConsumer, timeout_s: float = 30.0) -> list[TopicPartition]:
    """Every partition of the subscribed topic (a consumer without a group is given them all
    once it has the topic's metadata)."""
    deadline = time.monotonic() + timeout_s
    while not consumer.assignment():
        if time.monotonic() > deadline:
            raise TimeoutError("no partitions assigned for the rebuild's read of the log")
        await asyncio.sleep(0.05)
    return sorted(consumer.assignment())


@dataclass
class Progress:
    """Logs how far a read of the log got, every few seconds."""

    what: str
    total: int
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    said: float = field(default_factory=time.monotonic)

    def add(self, n: int) -> None:
        self.done += n
        if time.monotonic() - self.said >= PROGRESS_LOG_S:
            self.said = time.monotonic()
            log.info("rebuilding %s: %s", self.what, self._figures())

    def finish(self) -> None:
        log.info("rebuilt %s: %s", self.what, self._figures())

    def _figures(self) -> str:
        took = max(time.monotonic() - self.started, 1e-6)
        return (
            f"{self.done:,} of {self.total:,} records in {took:.1f} s ({self.done / took:,.0f}/s)"
        )


# --- the parts ----------------------------------------------------------------------------------


class Lease:
    """Our lock on a part, refreshed in the background while we rebuild it."""

    def __init__(self, refresh: Callable[[], Awaitable[bool]]) -> None:
        self._refresh = refresh
        self.lost = False

    def check(self) -> None:
        if self.lost:
            raise RebuildLost("the rebuild lock lapsed")

    async def keep(self) -> None:
        while not self.lost:
            await asyncio.sleep(REBUILD_LOCK_MS / 4000)
            try:
                self.lost = not await self._refresh()
            except _REDIS_ERRORS:
                self.lost = True  # Redis went away: it may come back empty


class Rebuilder:
    """Rebuilds one part of the cache from the log."""

    def __init__(
        self, redis: AnyRedis, keys: Keys, kafka: KafkaSettings, presence_of: PresenceOf
    ) -> None:
        self.redis = redis
        self.nodes = nodes_of(redis)
        self.keys = keys
        self.kafka = kafka
        self.presence_of = presence_of
        self._restore_state = redis.register_script(_RESTORE_STATE)
        self._restore_hold = redis.register_script(_RESTORE_HOLD)

    async def part(self, name: str, lease: Lease) -> str:
        """Rebuild a part; return what the epoch should carry from it."""
        return await (self.workers(lease) if name == WORKERS else self.requests(lease))

    async def workers(self, lease: Lease) -> str:
        """Fold the worker-events history into the index; return its end offsets as JSON."""
        index = RedisWorkerIndex(self.redis, self.keys)

        async def fold(records: Records) -> None:
            lease.check()
            changes = self.presence_of(records)
            for part in chunks(changes, APPLY_BATCH):
                await index.apply(part)

        ends = await read_log(self.kafka, WORKER_EVENTS, fold, "the worker index")
        return json.dumps({str(p): end for p, end in sorted(ends.items())})

    async def requests(self, lease: Lease) -> str:
        """Write back the latest state of every request, its holds and its timer."""
        latest: dict[str, RequestStateSaved] = {}

        async def fold(records: Records) -> None:
            lease.check()
            for r in records:
                saved = _saved(r)
                if saved is not None:
                    keep_latest(latest, saved)

        await read_log(self.kafka, REQUEST_STATE, fold, "the request store")
        now = int(time.time() * 1000)
        states = [(s, load_state(s.state)) for s in latest.values()]
        states = [(s, st) for s, st in states if remaining_ttl_ms(st, s.at_ms, now) > 0]
        lease.check()
        await self.write_states(states, now)
        await self.write_holds(holds_of(((st, s.at_ms) for s, st in states), now))
        await self.write_timers([st for _, st in states])
        log.info("restored %d request states", len(states))
        return ""

    async def write_states(
        self, states: Sequence[tuple[RequestStateSaved, RequestState]], now: int
    ) -> None:
        for part in chunks(states, WRITE_BATCH):
            batch = await self.nodes.batch()
            for saved, state in part:
                key = self.keys.request(saved.request_id)
                ttl = remaining_ttl_ms(state, saved.at_ms, now)
                batch.script(self._restore_state, [key], [saved.version, saved.state, ttl])
            await batch.execute(replicated=True)

    async def write_holds(self, holds: dict[str, Claim]) -> None:
        """Set each hold, then take its worker out of every geo shard they are in."""
        items = list(holds.items())
        for part in chunks(items, WRITE_BATCH):
            batch = await self.nodes.batch()
            for wid, claim in part:
                keys = [self.keys.hold(wid), self.keys.bucket(wid)]
                batch.script(self._restore_hold, keys, [claim.value, claim.ttl_ms, wid])
            gone: dict[str, list[str]] = {}
            for (wid, _), raw in zip(part, await batch.execute(replicated=True), strict=True):
                rec = unpack_record(wid, raw) if raw else None
                if rec is not None:
                    cell = cell_of(rec.lon, rec.lat)
                    for skill in rec.skills:
                        gone.setdefault(self.keys.geo(cell, skill), []).append(wid)
            if gone:
                cleanup = await self.nodes.batch()
                for key, members in gone.items():
                    cleanup.on(key).zrem(key, *members)
                await cleanup.execute()

    async def write_timers(self, states: Sequence[RequestState]) -> None:
        due = [(st.job.request_id, st.due_at_ms()) for st in states]
        timers = {rid: at for rid, at in due if at is not None}
        items = list(timers.items())
        for part in chunks(items, WRITE_BATCH):
            # LT: a timer a live dispatcher set meanwhile keeps the earlier of the two.
            await self.redis.zadd(self.keys.timers(), dict(part), lt=True)


def _saved(record: ConsumerRecord[Any, Any]) -> RequestStateSaved | None:
    try:
        return REQUEST_STATE_SAVED.validate_json(record.value or b"")
    except ValidationError:
        log.warning(
            "skipping an unreadable request state at %d@%d", record.partition, record.offset
        )
        return None


# --- the guard the services run -----------------------------------------------------------------


class CacheGuard:
    """Makes sure the cache is whole before a service takes records, rebuilding it if not."""

    def __init__(
        self,
        redis: AnyRedis,
        keys: Keys,
        kafka: KafkaSettings,
        presence_of: PresenceOf,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.rebuilder = Rebuilder(redis, keys, kafka, presence_of)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.floors: dict[int, int] = {}  # worker-events offsets the rebuilt index holds
        self._take = redis.register_script(_TAKE)
        self._refresh = redis.register_script(_REFRESH)
        self._finish = redis.register_script(_FINISH)

    async def ensure(self) -> None:
        """Return once the cache is whole: rebuild each missing part, or wait for whoever does."""
        if await self.redis.get(self.keys.epoch()) is None:
            log.warning("no cache epoch in Redis: rebuilding the cache from the log")
            with metrics.rebuilding():
                await self._until_whole()
            # Only a rebuild seen now sets the floors: an old epoch's offsets may belong to a
            # log that has since been recreated.
            self.floors = floors_of(str(await self.redis.get(self.keys.epoch())))
            log.info("the cache is whole again")

    def guarded(
        self, handler: Callable[[Records], Awaitable[R]]
    ) -> Callable[[Records], Awaitable[R]]:
        """The handler, behind a check of the epoch before each batch (a retry after a Redis
        error is a batch too)."""

        async def run(records: Records) -> R:
            # The epoch is read before every batch (one GET, cheap beside a batch's round
            # trips), so a Redis that came back empty, even one whose loss redis-py's reconnect
            # hid, is never written to as if it were whole.
            await self.ensure()
            return await handler(records)

        return run

    def split(self, records: Records) -> tuple[Records, Records]:
        """The records still to apply, and the worker events the rebuilt index already holds
        (their changes are in; what they owe besides, a dead letter, is still to send)."""
        if not self.floors:
            return records, []
        kept, folded = [], []
        for r in records:
            floor = self.floors.get(r.partition) if r.topic == WORKER_EVENTS else None
            if floor is None:
                kept.append(r)
            elif r.offset >= floor:
                del self.floors[r.partition]  # past the rebuild: nothing more to skip here
                kept.append(r)
            else:
                folded.append(r)
        return kept, folded

    async def _until_whole(self) -> None:
        waiting = _Waiting()
        while True:
            if await self._attempt(waiting):
                return
            await asyncio.sleep(WAIT_POLL_S)

    async def _attempt(self, waiting: _Waiting) -> bool:
        """One pass over the parts: True once the epoch is set."""
        run = _RUN + self.owner
        for i, part in enumerate(PARTS):
            keys = [self.keys.epoch(), self.keys.epoch(part)]
            args: list[str | int] = [run, REBUILD_LOCK_MS]
            verdict = str(await self._take(keys=keys, args=args))
            if verdict == "epoch":
                return True
            if verdict.startswith(_DONE):
                continue
            if verdict != "mine":
                waiting.note(part, verdict.removeprefix(_RUN))
                return False
            try:
                payload = await self._rebuild(part)
            except RebuildLost:
                log.warning("lost the lock on the %s rebuild: starting over", part)
                return False
            if not await self._done(i, run, payload):
                log.warning("Redis lost the rebuild of %s meanwhile: starting over", part)
                return False
        return True

    async def _rebuild(self, part: str) -> str:
        log.info("rebuilding the %s part of the cache (%s)", part, self.owner)
        lease = Lease(lambda: self._refreshed(part))
        async with _kept(lease):
            with metrics.rebuilding_part(part):
                payload = await self.rebuilder.part(part, lease)
            lease.check()
            return payload

    async def _refreshed(self, part: str) -> bool:
        keys = [self.keys.epoch(part)]
        args: list[str | int] = [_RUN + self.owner, REBUILD_LOCK_MS]
        return bool(await self._refresh(keys=keys, args=args))

    async def _done(self, i: int, run: str, payload: str) -> bool:
        keys = [self.keys.epoch(), *(self.keys.epoch(p) for p in (PARTS[i], *PARTS[:i]))]
        last = i == len(PARTS) - 1
        epoch = f"{int(time.time() * 1000)}|{self.owner}|" if last else ""
        return bool(await self._finish(keys=keys, args=[run, _DONE + payload, epoch]))


def _kept(lease: Lease) -> contextlib.AbstractAsyncContextManager[None]:
    return background(lease.keep())


@dataclass
class _Waiting:
    """Logs, every few seconds, whose rebuild we wait for."""

    said: float = 0.0

    def note(self, part: str, owner: str) -> None:
        if time.monotonic() - self.said >= WAIT_LOG_S:
            self.said = time.monotonic()
            log.info("waiting for the %s part of the cache, rebuilt by %s", part, owner)
