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
- ``{p}:gw:log:{request}``     list of the request's lifecycle events (JSON) in log order
  (the order of the request's Kafka partition): the history a progress stream starts with.
  An event's position in it, from 1, is its number: the SSE ``id`` a stream resumes after
  (``Last-Event-ID``), the same on every gateway process and every reconnect.
- ``{p}:gw:logged:{request}``  hash: event id -> its number in the log, so a redelivered event
  is stored once and keeps its number (both keys are written by one script).
- ``{p}:gw:posted:{market}:{day}`` sorted set: request id -> when it was posted (ms), the
  market's requests of one day (``YYYYMMDD`` in China Standard Time), for the kiosk's board.
  Kept two days; at most ``POSTED_PER_DAY_MAX`` a day (the oldest go first).
- ``{p}:gw:jobs:{worker}``    hash: ``h:{offer}`` -> the ``Hired`` JSON, ``s:{offer}`` -> the
  job's status (hired, arrived, done, no_show, cancelled): the worker's jobs of the last day,
  so a reloaded page finds its job again. Status and details are separate fields because the
  ``Hired`` message and a later ``JobChanged`` travel on different topics, in either order.
- channel ``{p}:gw:push:worker:{worker}`` and ``{p}:gw:push:request:{request}``: Redis
  pub/sub, so an event reaches whichever gateway process holds the socket or stream.
"""

from __future__ import annotations

import time
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
# A market's list of the day's requests is kept two days (the board shows today's); a day holds
# at most this many (the oldest are dropped), and the board shows at most BOARD_MAX.
POSTED_TTL_MS: Final = 2 * 24 * 3600 * 1000
POSTED_PER_DAY_MAX: Final = 1000
BOARD_MAX: Final = 200
# The stations' day: China Standard Time (UTC+8, no daylight saving).
DAY_OFFSET_MS: Final = 8 * 3600 * 1000
# A worker's jobs are kept a day after the last news of them.
JOBS_TTL_MS: Final = 24 * 3600 * 1000
# Control channel every gateway process subscribes to at start, so its pub/sub connection
# exists before the first socket arrives.
HELLO: Final = "hello"


def day_of(at_ms: int) -> str:
    """The stations' calendar day of a time (epoch ms), as ``YYYYMMDD``."""
    return time.strftime("%Y%m%d", time.gmtime((at_ms + DAY_OFFSET_MS) // 1000))


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

    def log(self, request_id: str) -> str:
        return f"{self.prefix}:gw:log:{{{request_id}}}"

    def logged(self, request_id: str) -> str:
        return f"{self.prefix}:gw:logged:{{{request_id}}}"

    def posted(self, market_id: str, day: str) -> str:
        return f"{self.prefix}:gw:posted:{{{market_id}}}:{day}"

    def jobs(self, worker_id: str) -> str:
        return f"{self.prefix}:gw:jobs:{{{worker_id}}}"

    def worker_channel(self, worker_id: str) -> str:
        return f"{self.prefix}:gw:push:worker:{{{worker_id}}}"

    def request_channel(self, request_id: str) -> str:
        return f"{self.prefix}:gw:push:request:{{{request_id}}}"

    def hello(self) -> str:
        return f"{self.prefix}:gw:{HELLO}"
