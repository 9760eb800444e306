"""Every Redis key and TTL, in one place, with why.

Keys carry a hash tag ``{…}`` so that each atomic step touches one slot and the same code runs
on one Redis or on a Redis Cluster:

- ``{p}:geo:{cell}:{skill}``  GEO set of *available* workers in a map cell with a skill. All
  skills of a cell share the cell's slot.
- ``{p}:wr:{bucket}``        hash: worker id -> "lon,lat,skill|skill,online" for the workers
  of one bucket. Bucketing keeps each hash small enough for Redis's compact listpack
  encoding, about 30 bytes a worker instead of a key of its own (~100 bytes).
- ``{p}:hold:{bucket}:{worker}`` the worker's hold: the request id while offered,
  ``A|request`` while assigned. ``SET NX`` on it is the one atomic step that prevents double
  booking. It shares the slot of the worker's record, so one script can take the hold and
  read the record in a single command.
- ``{p}:req:{request}``      hash: ``v`` (version) and ``s`` (request state as JSON).
- ``{p}:timers``             sorted set: request id scored by when the core wants a tick.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Final

# An offer's hold outlives the offer window a little, so a hold never lapses before the
# dispatcher's tick releases it; if a dispatcher dies, the hold still frees itself.
HOLD_GRACE_MS: Final = 30_000
# An assignment keeps the worker out of the index for a working day, or until they check in.
ASSIGNMENT_TTL_MS: Final = 12 * 3600 * 1000
# Request state is kept a day past its deadline for late answers, kiosks and supervisors.
REQUEST_STATE_TTL_MS: Final = 24 * 3600 * 1000
ASSIGNED_PREFIX: Final = "A|"


@dataclass(frozen=True, slots=True)
class Keys:
    """Key builders under one prefix (tests and replays use their own prefix)."""

    prefix: str = "gig"
    buckets: int = 16384

    def geo(self, cell: str, skill: str) -> str:
        return f"{self.prefix}:geo:{{{cell}}}:{skill}"

    def geo_pattern(self) -> str:
        return f"{self.prefix}:geo:*"

    def bucket(self, worker_id: str) -> str:
        return f"{self.prefix}:wr:{{{self._bucket_of(worker_id)}}}"

    def hold(self, worker_id: str) -> str:
        return f"{self.prefix}:hold:{{{self._bucket_of(worker_id)}}}:{worker_id}"

    def _bucket_of(self, worker_id: str) -> int:
        return zlib.crc32(worker_id.encode()) % self.buckets

    def request(self, request_id: str) -> str:
        return f"{self.prefix}:req:{{{request_id}}}"

    def timers(self) -> str:
        return f"{self.prefix}:{{timers}}"
