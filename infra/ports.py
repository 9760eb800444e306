"""The ports the shell needs; each has a Redis adapter and an in-memory twin.

The contract suite in ``tests/contract`` runs one set of tests against both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from dispatch.model import Candidate, RequestState, SearchSpec


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    """Where a worker is, what they can do, and whether they take offers."""

    worker_id: str
    lon: float
    lat: float
    skills: tuple[str, ...]
    online: bool


@dataclass(frozen=True, slots=True)
class Presence:
    """One presence change: a check-in (with skills), a move (skills empty) or going offline."""

    worker_id: str
    kind: str  # "checkin" | "locate" | "offline"
    lon: float = 0.0
    lat: float = 0.0
    skills: tuple[str, ...] = ()


class WorkerIndex(Protocol):
    """Geo-sharded index of available workers, and their holds."""

    async def apply(self, changes: Sequence[Presence]) -> None:
        """Apply presence changes in order (a worker's changes are in their order)."""

    async def search(self, specs: Sequence[SearchSpec]) -> list[list[Candidate]]:
        """For each spec, the nearest available workers inside its radius, nearest first."""

    async def hold(self, claims: Sequence[tuple[str, str]], ttl_ms: int) -> list[bool]:
        """Hold (worker, request) pairs; True where this call got the worker."""

    async def release(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Drop the holds these requests have; online workers return to the index."""

    async def assign(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        """Turn held offers into assignments; False where the hold was not this request's."""

    async def unassign(self, pairs: Sequence[tuple[str, str]]) -> None:
        """End these requests' assignments (the jobs are over): the workers, if online,
        return to the index."""

    async def holder(self, worker_id: str) -> str | None:
        """Who holds the worker: a request id, ``A|request`` when assigned, or None."""

    async def record(self, worker_id: str) -> WorkerRecord | None:
        """The worker's last known presence."""

    async def available(self) -> int:
        """How many workers the index holds (for reports and tests; scans every shard)."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """One outgoing message, serialized: what an outbox holds and publishes as it is."""

    topic: str
    key: str
    value: str  # the message's JSON


@dataclass(frozen=True, slots=True)
class Write:
    """A decision to save: the new state, the version it was decided from (0: a new request),
    and its outbox, the messages it implies. The store adds the state's own snapshot
    (``RequestStateSaved`` at the new version, see ``infra.state_codec.snapshot``) to it."""

    state: RequestState
    version: int
    at_ms: int  # when it was decided: the snapshot's time, and the outbox's age
    encoded: str  # the state as ``infra.state_codec.dump_state`` writes it
    events: tuple[Envelope, ...]


class Stored(NamedTuple):
    """A request as stored: its version, its state, and its pending outbox (the messages of
    its last saves not yet known to be published, then its state's snapshot; empty when
    none is pending)."""

    version: int
    state: RequestState
    outbox: tuple[Envelope, ...] = ()


@dataclass(frozen=True, slots=True)
class Neglected:
    """A request a sweep found in need of repair."""

    request_id: str
    stored: Stored
    stale_outbox: bool  # its outbox has been pending longer than the sweep allows
    untimed: bool  # not over, yet no timer will wake it


# What a save did: True written, False lost (the stored version was another), or the reason
# the store refused this one write (the others of the call are unaffected).
Saved = bool | str


class RequestStore(Protocol):
    """Request states with optimistic versions and outboxes, and the timers that wake them.

    A decision's state and its outbox are written in one atomic step; the outbox is cleared
    once its messages are published, and only if no later save came in between."""

    async def load(self, request_ids: Sequence[str]) -> dict[str, Stored]:
        """Known requests as stored, with their pending outboxes; unknown ids are absent."""

    async def save(self, writes: Sequence[Write]) -> list[Saved]:
        """Write each state with its outbox if its stored version is still the given one; a
        pending outbox is kept ahead of the new messages, never overwritten."""

    async def clear(self, published: Sequence[tuple[str, int]]) -> None:
        """Drop the outboxes of (request, version) pairs whose version is still the stored one."""

    async def schedule(self, due: Sequence[tuple[str, int | None]]) -> None:
        """Set (or with None clear) when each request next wants a tick."""

    async def wake(self, due: Sequence[tuple[str, int]]) -> None:
        """Set these timers only where a request has none (repairs never move a live timer)."""

    async def pop_due(self, now_ms: int, limit: int) -> list[str]:
        """Take the requests due by ``now_ms``; each is handed to exactly one caller."""

    async def neglected(self, now_ms: int, stale_ms: int) -> list[Neglected]:
        """Every request with an outbox pending since before ``now_ms - stale_ms``, or not
        over and without a timer (a full scan: for the periodic sweep, not the hot path)."""
