"""Every Redis key and TTL, in one place, with why.

Keys carry a hash tag ``{…}`` so that each atomic step touches one slot and the same code runs
on one Redis or on a Redis Cluster:

- ``{p}:geo:{layout}:{cell}:{skill}``  GEO set of *available* workers in a map cell with a
  skill. All skills of a cell share the cell's slot. ``layout`` names the cell size
  (``dispatch.geo.CELL_DEG``): cells of another size are other shards.
- ``{p}:wr:{bucket}``        hash: worker id -> "lon,lat,skill|skill,online" for the workers
  of one bucket. Bucketing keeps each hash small enough for Redis's compact listpack
  encoding, about 30 bytes a worker instead of a key of its own (~100 bytes).
- ``{p}:hold:{bucket}:{worker}`` the worker's hold: the request id while offered,
  ``A|request`` while assigned. ``SET NX`` on it is the one atomic step that prevents double
  booking. It shares the slot of the worker's record, so one script can take the hold and
  read the record in a single command.
- ``{p}:req:{request}``      hash: ``v`` (version), ``s`` (request state as JSON) and, while
  a decision's messages are not yet known published, ``o`` (its outbox, see
  ``infra.state_codec``). State and outbox share the key, so saving both is one atomic step.
- ``{p}:timers``             sorted set: request id scored by when the core wants a tick.
- ``{p}:{epoch}:{layout}``   when the cache was last rebuilt from the log (and the worker-events
  offsets the index holds). Redis is only a cache of Kafka: a Redis that restarted without its
  data, or a new one, has no epoch, and the services rebuild it before they take more records.
  ``{p}:{epoch}:{part}`` is the lock of the process rebuilding a part (then its done marker);
  it shares the epoch's slot, so finishing a part and setting the epoch is one script. The
  epoch carries the layout: services of a new cell size find no epoch and rebuild the index
  in their shards from the log.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Final

from dispatch.geo import CELL_DEG

# An offer's hold outlives the offer window a little, so a hold never lapses before the
# dispatcher's tick releases it; if a dispatcher dies, the hold still frees itself.
HOLD_GRACE_MS: Final = 30_000
# An assignment keeps the worker out of the index until their job ends (done, no-show or
# cancelled: the dispatcher drops it then), and for a working day at most if nobody closes it.
ASSIGNMENT_TTL_MS: Final = 12 * 3600 * 1000
# Request state is kept a day past its deadline for late answers, kiosks and supervisors.
REQUEST_STATE_TTL_MS: Final = 24 * 3600 * 1000
# ...but never longer than a month: a deadline however far ahead (even one Redis could not
# express as an expiry) must not make the save fail.
REQUEST_STATE_TTL_MAX_MS: Final = 31 * 24 * 3600 * 1000
ASSIGNED_PREFIX: Final = "A|"
LAYOUT: Final = f"c{CELL_DEG:g}"  # the cell size the geo shards are cut by
# The sweep repairs what a dispatcher that died mid-batch left behind (an outbox it saved but
# did not publish, a request it left without a timer). Redelivery and leased timers heal most
# of it within seconds; the sweep is the backstop, so a slow pace keeps its full scan cheap.
SWEEP_INTERVAL_S: Final = 30.0
# An outbox pending longer than this is not a batch waiting for its acknowledgements (those
# take milliseconds) but one whose dispatcher died or lost the broker: the sweep publishes it.
OUTBOX_STALE_MS: Final = 10_000
# A rebuild's lock lapses this long after its holder stops refreshing it (a rebuilder that
# died), so another process takes the part over.
REBUILD_LOCK_MS: Final = 15_000


@dataclass(frozen=True, slots=True)
class Keys:
    """Key builders under one prefix (tests and replays use their own prefix)."""

    prefix: str = "gig"
    buckets: int = 16384

    def geo(self, cell: str, skill: str) -> str:
        return f"{self.prefix}:geo:{LAYOUT}:{{{cell}}}:{skill}"

    def geo_pattern(self) -> str:
        return f"{self.prefix}:geo:{LAYOUT}:*"

    def bucket(self, worker_id: str) -> str:
        return f"{self.prefix}:wr:{{{self._bucket_of(worker_id)}}}"

    def hold(self, worker_id: str) -> str:
        return f"{self.prefix}:hold:{{{self._bucket_of(worker_id)}}}:{worker_id}"

    def _bucket_of(self, worker_id: str) -> int:
        return zlib.crc32(worker_id.encode()) % self.buckets

    def request(self, request_id: str) -> str:
        return f"{self.prefix}:req:{{{request_id}}}"

    def request_pattern(self) -> str:
        return f"{self.prefix}:req:*"

    def request_id(self, key: str) -> str:
        """The request id of a ``request`` key."""
        return key[len(self.prefix) + 6 : -1]

    def timers(self) -> str:
        return f"{self.prefix}:{{timers}}"

    def epoch(self, part: str = "") -> str:
        """The epoch key, or with ``part`` the lock and done marker of that part's rebuild."""
        return f"{self.prefix}:{{epoch}}:{LAYOUT}" + (f":{part}" if part else "")
