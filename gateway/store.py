"""The gateway's Redis views: live offers per worker, posted requests and their history.

Writers are the fan-out consumer (offers and lifecycle events from Kafka) and the HTTP API
(posted requests); readers are sockets and streams on any gateway process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from pydantic import ValidationError
from redis.asyncio import Redis

from gateway.keys import (
    ANSWER_GRACE_MS,
    JOBS_TTL_MS,
    POSTED_PER_DAY_MAX,
    POSTED_TTL_MS,
    REQUEST_GRACE_MS,
    REQUEST_MIN_TTL_MS,
    GatewayKeys,
    day_of,
)
from schemas import events as ev

FINAL_EVENTS = frozenset({"RequestFilled", "RequestExpired", "RequestCancelled", "RequestRejected"})


class LiveOffers:
    """Each worker's offers still open to them, so any gateway can send them again."""

    def __init__(self, redis: Redis, keys: GatewayKeys) -> None:
        self.redis = redis
        self.keys = keys

    async def apply(self, made: Sequence[ev.OfferMade], gone: Sequence[ev.OfferWithdrawn]) -> None:
        """Add new offers and drop withdrawn ones, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for o in made:
            key = self.keys.offers(o.worker_id)
            pipe.hset(key, o.offer_id, o.model_dump_json())
            # The key lives until its last offer lapses: set the expiry when there is none,
            # then push it later only (GT never shortens it).
            pipe.pexpireat(key, o.expires_at_ms, nx=True)
            pipe.pexpireat(key, o.expires_at_ms, gt=True)
        for w in gone:
            pipe.hdel(self.keys.offers(w.worker_id), w.offer_id)
        await pipe.execute()

    async def live(self, worker_id: str, now_ms: int) -> list[ev.OfferMade]:
        """The worker's offers not yet expired, oldest first."""
        raw = await self.redis.hgetall(self.keys.offers(worker_id))
        offers = [o for o in map(_offer, raw.values()) if o is not None]
        return sorted((o for o in offers if o.expires_at_ms > now_ms), key=lambda o: o.at_ms)

    async def get(self, worker_id: str, offer_id: str, now_ms: int) -> ev.OfferMade | None:
        """One of the worker's live offers, or None (unknown, someone else's, or expired)."""
        offer = _offer(await self.redis.hget(self.keys.offers(worker_id), offer_id))
        return offer if offer is not None and offer.expires_at_ms > now_ms else None

    async def drop(self, worker_id: str, offer_id: str) -> None:
        await self.redis.hdel(self.keys.offers(worker_id), offer_id)


class WorkerJobs:
    """Each worker's jobs of the last day with their status, so a reloaded page restores them."""

    def __init__(self, redis: Redis, keys: GatewayKeys) -> None:
        self.redis = redis
        self.keys = keys

    async def apply(self, hired: Sequence[ev.Hired], changed: Sequence[ev.JobChanged]) -> None:
        """Record new jobs and their steps, in one round trip. A redelivered ``Hired`` never
        takes a job back to "hired" (``HSETNX``)."""
        if not hired and not changed:
            return
        pipe = self.redis.pipeline(transaction=False)
        for h in hired:
            key = self.keys.jobs(h.worker_id)
            pipe.hset(key, f"h:{h.offer_id}", h.model_dump_json())
            pipe.hsetnx(key, f"s:{h.offer_id}", "hired")
            pipe.pexpire(key, JOBS_TTL_MS)
        for c in changed:
            key = self.keys.jobs(c.worker_id)
            pipe.hset(key, f"s:{c.offer_id}", c.status)
            pipe.pexpire(key, JOBS_TTL_MS)
        await pipe.execute()

    async def of(self, worker_id: str) -> list[tuple[ev.Hired, str]]:
        """The worker's jobs, newest first, each with its status."""
        raw = await self.redis.hgetall(self.keys.jobs(worker_id))
        out = []
        for field, value in raw.items():
            if not str(field).startswith("h:"):
                continue
            try:
                hired = ev.Hired.model_validate_json(value)
            except ValidationError:  # stored by another version: skipped, never a failure
                continue
            out.append((hired, str(raw.get(f"s:{hired.offer_id}", "hired"))))
        return sorted(out, key=lambda job: job[0].at_ms, reverse=True)


# The race point of posting. KEYS[1]: the gateway's record of the request (its claim);
# KEYS[2]: the dispatcher's state of it, the same {request} slot. A request the dispatcher
# already holds for another market (it reached Kafka some other way, or Redis lost the claim)
# stays that market's; otherwise SET NX gives the id to the first post, once.
# The state's "job" array is infra.state_codec's: market_id is its second item.
_CLAIM: Final = """
local state = redis.call('HGET', KEYS[2], 's')
if state then
  local ok, body = pcall(cjson.decode, state)
  if not ok or type(body.job) ~= 'table' or body.job[2] ~= ARGV[2] then
    return {'foreign', ''}
  end
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[3]) then
  return {'new', ''}
end
return {'repeat', redis.call('GET', KEYS[1]) or ''}
"""


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of claiming a request id: ``new`` (ours now), ``repeat`` (posted before:
    ``first`` is that posting) or ``foreign`` (the id is another market's)."""

    outcome: Literal["new", "repeat", "foreign"]
    first: ev.HireRequested | None = None


def _offer(raw: str | bytes | None) -> ev.OfferMade | None:
    """A stored offer; one that no longer parses (stored by an older version) is skipped, so it
    can never make a worker's offers, answers or socket fail."""
    if raw is None:
        return None
    try:
        return ev.OfferMade.model_validate_json(raw)
    except ValidationError:
        return None


class PostedRequests:
    """Requests as posted through the gateway: the id's claim, idempotency, the owning market.

    ``state_key`` names the dispatcher's state of a request (``infra.keys.Keys.request``).
    """

    def __init__(self, redis: Redis, keys: GatewayKeys, state_key: Callable[[str], str]) -> None:
        self.redis = redis
        self.keys = keys
        self.state_key = state_key
        self._claim = redis.register_script(_CLAIM)

    async def claim(self, msg: ev.HireRequested) -> Claim:
        """Claim the request id for the message's market, atomically (see ``_CLAIM``)."""
        ttl = max(msg.deadline_at_ms - msg.at_ms, REQUEST_MIN_TTL_MS) + REQUEST_GRACE_MS
        rid = msg.request_id
        keys = [self.keys.request(rid), self.state_key(rid)]
        outcome, raw = await self._claim(keys, [msg.model_dump_json(), msg.market_id, ttl])
        if outcome == "repeat" and raw:
            first = ev.HireRequested.model_validate_json(raw)
            # Listed again (harmless): covers a gateway that stopped after claiming.
            await self.remember(first)
            return Claim("repeat", first)
        if outcome == "new":
            await self.remember(msg)
            return Claim("new", msg)
        return Claim("foreign")

    async def remember(self, msg: ev.HireRequested) -> None:
        """List the request among its market's requests of the day it was posted. A second
        listing keeps the first time (``NX``)."""
        key = self.keys.posted(msg.market_id, day_of(msg.at_ms))
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(key, {msg.request_id: msg.at_ms}, nx=True)
        pipe.zremrangebyrank(key, 0, -POSTED_PER_DAY_MAX - 1)
        pipe.pexpire(key, POSTED_TTL_MS)
        await pipe.execute()

    async def of_day(self, market_id: str, at_ms: int, limit: int) -> list[str]:
        """The market's requests posted on the day of ``at_ms``, newest first, at most
        ``limit``."""
        key = self.keys.posted(market_id, day_of(at_ms))
        ids: list[str] = await self.redis.zrange(key, 0, limit - 1, desc=True)  # type: ignore[assignment]
        return ids

    async def get(self, request_id: str) -> ev.HireRequested | None:
        raw = await self.redis.get(self.keys.request(request_id))
        return None if raw is None else ev.HireRequested.model_validate_json(raw)


class Answers:
    """Which offers were answered: one answer per offer passes, across sockets and processes."""

    def __init__(self, redis: Redis, keys: GatewayKeys) -> None:
        self.redis = redis
        self.keys = keys

    async def claim(self, offer: ev.OfferMade) -> bool:
        """True for the one answer that may be passed on; False once any other was."""
        until = offer.expires_at_ms + ANSWER_GRACE_MS
        # SET NX is the race point: of concurrent answers to one offer, one sets the key.
        done = await self.redis.set(
            self.keys.answered(offer.offer_id), offer.worker_id, nx=True, pxat=until
        )
        return bool(done)

    async def answered_by(self, offer_id: str) -> str | None:
        raw = await self.redis.get(self.keys.answered(offer_id))
        return None if raw is None else str(raw)

    async def forget(self, offer_id: str) -> None:
        """Let the worker answer again: the answer could not be passed on."""
        await self.redis.delete(self.keys.answered(offer_id))


# Appends a request's events to its log, each once. KEYS[1]: the log (list), KEYS[2]: event id
# -> number (hash), one {request} slot. ARGV[1]: TTL (ms); then (event id, JSON) pairs.
# Returns each event's number: its position in the log from 1, the old one for a repeat.
_APPEND: Final = """
local out = {}
for i = 2, #ARGV, 2 do
  local n = redis.call('HGET', KEYS[2], ARGV[i])
  if not n then
    n = redis.call('RPUSH', KEYS[1], ARGV[i + 1])
    redis.call('HSET', KEYS[2], ARGV[i], n)
  end
  out[#out + 1] = tonumber(n)
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return out
"""


def numbered(number: int, text: str) -> str:
    """A pushed event with its number in the request's log in front: ``"7 {...}"``."""
    return f"{number} {text}"


def unnumbered(text: str) -> tuple[int | None, str]:
    """(number, JSON) of a pushed event; the number is None for a push without one."""
    head, _, rest = text.partition(" ")
    if head.isdigit() and rest:
        return int(head), rest
    return None, text


class RequestHistory:
    """Each request's lifecycle events in log order, numbered, for progress streams and status.

    An event's number is its position in the request's log (from 1): it is the same on every
    gateway process and for every reader, so a stream resumes after the last number its
    client saw (``Last-Event-ID``) and sends nothing twice.
    """

    def __init__(self, redis: Redis, keys: GatewayKeys) -> None:
        self.redis = redis
        self.keys = keys
        self._append = redis.register_script(_APPEND)

    async def add(self, events: Sequence[tuple[str, ev.RequestEvent]]) -> list[int]:
        """Append events (request id, event) in the order given, which is the log's; a
        redelivered event is stored once. Returns each event's number, in the same order."""
        by_request: dict[str, list[int]] = {}
        for i, (rid, _) in enumerate(events):
            by_request.setdefault(rid, []).append(i)
        pipe = self.redis.pipeline(transaction=False)
        for rid, places in by_request.items():
            args: list[str | int] = [REQUEST_GRACE_MS]
            for i in places:
                msg = events[i][1]
                args += [msg.event_id, msg.model_dump_json()]
            await self._append(keys=[self.keys.log(rid), self.keys.logged(rid)], args=args,
                               client=pipe)  # fmt: skip
        numbers = [0] * len(events)
        for places, got in zip(by_request.values(), await pipe.execute(), strict=True):
            for i, n in zip(places, got, strict=True):
                numbers[i] = int(n)
        return numbers

    async def numbered(self, request_id: str, after: int = 0) -> list[tuple[int, ev.RequestEvent]]:
        """The request's events after number ``after``, in log order, each with its number.
        An entry that no longer parses (stored by another version) is skipped; the numbers of
        the others stay as they are."""
        raw: list[str] = await self.redis.lrange(self.keys.log(request_id), after, -1)  # type: ignore[assignment]
        out: list[tuple[int, ev.RequestEvent]] = []
        for n, item in enumerate(raw, start=after + 1):
            try:
                out.append((n, ev.REQUEST_EVENT.validate_json(item)))
            except ValidationError:
                continue
        return out

    async def events(self, request_id: str) -> list[ev.RequestEvent]:
        """The request's events in log order."""
        return [e for _, e in await self.numbered(request_id)]
