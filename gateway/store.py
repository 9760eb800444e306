"""The gateway's Redis views: live offers per worker, posted requests and their history.

Writers are the fan-out consumer (offers and lifecycle events from Kafka) and the HTTP API
(posted requests); readers are sockets and streams on any gateway process.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError
from redis.asyncio import Redis

from gateway.keys import REQUEST_GRACE_MS, REQUEST_MIN_TTL_MS, GatewayKeys
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
        offers = [ev.OfferMade.model_validate_json(v) for v in raw.values()]
        return sorted((o for o in offers if o.expires_at_ms > now_ms), key=lambda o: o.at_ms)

    async def get(self, worker_id: str, offer_id: str, now_ms: int) -> ev.OfferMade | None:
        """One of the worker's live offers, or None (unknown, someone else's, or expired)."""
        raw = await self.redis.hget(self.keys.offers(worker_id), offer_id)
        if raw is None:
            return None
        offer = ev.OfferMade.model_validate_json(raw)
        return offer if offer.expires_at_ms > now_ms else None

    async def drop(self, worker_id: str, offer_id: str) -> None:
        await self.redis.hdel(self.keys.offers(worker_id), offer_id)


class PostedRequests:
    """Requests as posted through the gateway: idempotency and the owning market."""

    def __init__(self, redis: Redis, keys: GatewayKeys) -> None:
        self.redis = redis
        self.keys = keys

    async def remember(self, msg: ev.HireRequested) -> ev.HireRequested:
        """Record a new request; if its id was posted before, return that first posting."""
        ttl = max(msg.deadline_at_ms - msg.at_ms, REQUEST_MIN_TTL_MS) + REQUEST_GRACE_MS
        key = self.keys.request(msg.request_id)
        # SET NX is the race point: of two concurrent posts of one id, one records it.
        if await self.redis.set(key, msg.model_dump_json(), nx=True, px=ttl):
            return msg
        return await self.get(msg.request_id) or msg

    async def get(self, request_id: str) -> ev.HireRequested | None:
        raw = await self.redis.get(self.keys.request(request_id))
        return None if raw is None else ev.HireRequested.model_validate_json(raw)


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
