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

from gateway.keys import ANSWER_GRACE_MS, REQUEST_GRACE_MS, REQUEST_MIN_TTL_MS, GatewayKeys
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
            return Claim("repeat", ev.HireRequested.model_validate_json(raw))
        if outcome == "new":
            return Claim("new", msg)
        return Claim("foreign")

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


class RequestHistory:
    """Each request's lifecycle events, for progress streams and status."""

    def __init__(self, redis: Redis, keys: GatewayKeys) -> None:
        self.redis = redis
        self.keys = keys

    async def add(self, events: Sequence[tuple[str, ev.RequestEvent]]) -> None:
        """Store events (request id, event); a redelivered event is stored once."""
        pipe = self.redis.pipeline(transaction=False)
        for rid, msg in events:
            key = self.keys.events(rid)
            pipe.zadd(key, {msg.model_dump_json(): msg.at_ms})
            pipe.pexpire(key, REQUEST_GRACE_MS)
        await pipe.execute()

    async def events(self, request_id: str) -> list[ev.RequestEvent]:
        raw: list[str] = await self.redis.zrange(self.keys.events(request_id), 0, -1)  # type: ignore[assignment]
        out: list[ev.RequestEvent] = []
        for item in raw:
            try:
                out.append(ev.REQUEST_EVENT.validate_json(item))
            except ValidationError:
                continue
        # Events of one millisecond sort by their JSON in Redis; put the last word last.
        return sorted(out, key=lambda e: (e.at_ms, e.type in FINAL_EVENTS))
