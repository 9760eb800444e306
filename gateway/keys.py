"""Every Redis key, channel and TTL the gateway uses, in one place, with why.

Keys carry a hash tag ``{…}`` on the worker or request id, so each step touches one slot and
the same code runs on one Redis or on a Redis Cluster:

- ``{p}:gw:offers:{worker}``   hash: offer id -> the ``OfferMade`` JSON, for the worker's live
  offers. A reconnecting socket (on any gateway process) is sent them again. The key lives
  until the last of its offers expires; readers skip fields already past ``expires_at_ms``.
- ``{p}:gw:req:{request}``     the ``HireRequested`` JSON as the kiosk posted it: the request
  id's claim. ``SET NX`` on it (in a script that also reads the dispatcher's state of the
  request, ``{p}:req:{request}``, in the same slot) gives the id to one market for good,
  makes posting idempotent, and tells which market a request belongs to.
- ``{p}:gw:answered:{offer}``  the worker id that answered the offer: ``SET NX`` on it lets
  exactly one answer of an offer through, whatever sockets or processes the answers came on.
- ``{p}:gw:events:{request}``  sorted set of the request's lifecycle events (JSON) by time:
  the history a progress stream starts with. A redelivered event is the same member, so it
  is stored once.
- channel ``{p}:gw:push:worker:{worker}`` and ``{p}:gw:push:request:{request}``: Redis
  pub/sub, so an event reaches whichever gateway process holds the socket or stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# A request's record and history outlive its deadline by a day, for late readers and
# supervisors (the dispatcher keeps its request state as long).
REQUEST_GRACE_MS: Final = 24 * 3600 * 1000
# A posted request is kept at least this long even with a short deadline, so a retry of the
# same post within it is recognised.
REQUEST_MIN_TTL_MS: Final = 3600 * 1000
# An answer's claim outlives its offer by an hour, so a late repeat is still recognised.
ANSWER_GRACE_MS: Final = 3600 * 1000
# Control channel every gateway process subscribes to at start, so its pub/sub connection
# exists before the first socket arrives.
HELLO: Final = "hello"


@dataclass(frozen=True, slots=True)
class GatewayKeys:
    """Key and channel builders under one prefix (tests use their own prefix)."""

    prefix: str = "gig"

    def offers(self, worker_id: str) -> str:
        return f"{self.prefix}:gw:offers:{{{worker_id}}}"

    def request(self, request_id: str) -> str:
        return f"{self.prefix}:gw:req:{{{request_id}}}"

    def answered(self, offer_id: str) -> str:
        return f"{self.prefix}:gw:answered:{{{offer_id}}}"

    def events(self, request_id: str) -> str:
        return f"{self.prefix}:gw:events:{{{request_id}}}"

    def worker_channel(self, worker_id: str) -> str:
        return f"{self.prefix}:gw:push:worker:{{{worker_id}}}"

    def request_channel(self, request_id: str) -> str:
        return f"{self.prefix}:gw:push:request:{{{request_id}}}"

    def hello(self) -> str:
        return f"{self.prefix}:gw:{HELLO}"
