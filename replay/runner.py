"""Replays: the recorded inputs fed again through the dispatcher shell, in a sandbox.

Two ways, both on a virtual clock, as fast as the machine allows:

- **exact** (``replay_journal``): every recorded dispatcher batch, with the inputs it took and
  the ``now`` it used, in recorded order, under the recorded policy; worker presence is applied
  up to each batch's time. The decisions come out identical to the recorded ones.
- **what-if** (``simulate``): the recorded requests, cancellations and worker presence under
  any policy; the clock advances in polls of ``POLL_MS`` like the live dispatcher's, and the
  workers answer as they did when they got the same offer, or by a response model otherwise.
"""

from __future__ import annotations

import hashlib
import heapq
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from consumers.dispatching import TIMERS_PER_BATCH, Place, job_from, ticks
from consumers.journal import Journal, policy_of, to_input
from dispatch.model import Answer, Cancel, Input, NewJob, Policy
from infra.ports import Presence as PresenceChange
from replay.recording import Presence, Recording
from replay.sandbox import ExactIndex, sandbox
from schemas import events as ev
from schemas.journal import DispatchBatch

POLL_MS = 50  # the live dispatcher polls Kafka every 50 ms
Progress = Callable[[int, int, int], None]  # (done, total, virtual now ms)


@dataclass
class Run:
    """What a replay decided, and what it cost."""

    label: str
    policy: Policy
    decisions: list[BaseModel] = field(default_factory=list)
    journal: list[DispatchBatch] = field(default_factory=list)  # what-if: its own batches
    answers: list[ev.OfferAccepted | ev.OfferDeclined] = field(default_factory=list)
    batches: int = 0
    wall_s: float = 0.0
    virtual_ms: int = 0

    @property
    def speedup(self) -> float:
        """Virtual time replayed per second of wall time."""
        return self.virtual_ms / 1000 / self.wall_s if self.wall_s else float("inf")


def presence_change(msg: Presence) -> PresenceChange:
    match msg:
        case ev.WorkerCheckedIn():
            return PresenceChange(msg.worker_id, "checkin", msg.lon, msg.lat, msg.skills)
        case ev.WorkerLocated():
            return PresenceChange(msg.worker_id, "locate", msg.lon, msg.lat)
    return PresenceChange(msg.worker_id, "offline")


class PresenceFeed:
    """Worker presence applied to the sandbox index up to a time."""

    def __init__(self, index: ExactIndex, events: Sequence[Presence]) -> None:
        self.index, self.events, self.at = index, events, 0

    async def until(self, now_ms: int) -> None:
        start = self.at
        while self.at < len(self.events) and self.events[self.at].at_ms <= now_ms:
            self.at += 1
        if self.at > start:
            await self.index.apply([presence_change(m) for m in self.events[start : self.at]])

    def next_at(self) -> int | None:
        return self.events[self.at].at_ms if self.at < len(self.events) else None


def recorded_policy(rec: Recording) -> Policy:
    """The policy of the first recorded batch (the default one if nothing was recorded)."""
    return policy_of(rec.journal[0].policy) if rec.journal else Policy()


async def replay_journal(rec: Recording, progress: Progress | None = None) -> Run:
    """Exact replay: the recorded batches, at their recorded times, under their policies."""
    started = time.perf_counter()
    dispatcher, index, _ = sandbox(recorded_policy(rec))
    feed = PresenceFeed(index, rec.presence)
    run = Run("replay (recorded policy)", dispatcher.policy)
    for n, batch in enumerate(rec.journal, 1):
        await feed.until(batch.at_ms)
        dispatcher.policy = policy_of(batch.policy)
        items = [to_input(t) for t in batch.inputs]
        run.decisions += [o.message for o in await dispatcher.handle(items, batch.at_ms)]
        if progress and n % 2000 == 0:
            progress(n, len(rec.journal), batch.at_ms)
    run.batches = len(rec.journal)
    run.wall_s = time.perf_counter() - started
    run.virtual_ms = rec.window.to_ms - rec.window.from_ms
    return run


# --- what-if --------------------------------------------------------------------------------


def _unit(seed: int, *parts: str) -> float:
    """A number in [0, 1) fixed by the seed and the parts (so replays are repeatable)."""
    digest = hashlib.blake2b(f"{seed}|{'|'.join(parts)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True, slots=True)
class Responses:
    """How workers answer offers in a what-if replay.

    With ``use_recorded``, a worker who got the very same offer answers as recorded (same
    answer, same delay; no answer if it lapsed). Any other offer is answered by the model:
    no answer with probability ``silent``, else accept with probability ``accept``, after
    ``delay_ms`` times a factor between 0.5 and 1.5.
    """

    accept: float = 0.8
    silent: float = 0.05
    delay_ms: int = 1500
    seed: int = 7
    use_recorded: bool = True
    recorded: Mapping[str, tuple[bool | None, int]] = field(default_factory=dict)

    def answer(self, offer: ev.OfferMade) -> tuple[bool, int] | None:
        """(accepted, delay ms), or None for no answer."""
        if self.use_recorded and offer.offer_id in self.recorded:
            accepted, delay = self.recorded[offer.offer_id]
            return None if accepted is None else (accepted, delay)
        u = _unit(self.seed, offer.offer_id)
        if u < self.silent:
            return None
        factor = 0.5 + _unit(self.seed, offer.offer_id, "delay")
        return u < self.silent + (1 - self.silent) * self.accept, int(self.delay_ms * factor)


def learned_responses(rec: Recording, *, use_recorded: bool = True, seed: int = 7) -> Responses:
    """The response model as the recording shows it: rates and the median delay."""
    made = {o.offer_id: o for o in rec.offers if isinstance(o, ev.OfferMade)}
    known: dict[str, tuple[bool | None, int]] = {}
    for a in rec.answers:
        if a.offer_id in made and a.offer_id not in known:
            known[a.offer_id] = (isinstance(a, ev.OfferAccepted), a.at_ms - made[a.offer_id].at_ms)
    for w in rec.offers:
        if isinstance(w, ev.OfferWithdrawn) and w.reason == "expired":
            known.setdefault(w.offer_id, (None, 0))
    answered = [v for v in known.values() if v[0] is not None]
    accept = sum(1 for v in answered if v[0]) / len(answered) if answered else 0.8
    silent = (len(known) - len(answered)) / len(known) if known else 0.05
    delay = int(statistics.median(v[1] for v in answered)) if answered else 1500
    return Responses(accept, silent, delay, seed, use_recorded, known)


def inbound(rec: Recording, places: Mapping[str, Place], markets: set[str] | None) -> list[Any]:
    """(at_ms, input) for the requests and cancellations in scope, in time order."""
    items: list[tuple[int, Input]] = []
    for r in rec.requests:
        if r.market_id in places and (markets is None or r.market_id in markets):
            items.append((r.at_ms, NewJob(job_from(r, places[r.market_id]))))
    for c in rec.cancels:
        if markets is None or c.market_id in markets:
            items.append((c.at_ms, Cancel(c.request_id)))
    return sorted(items, key=lambda x: x[0])


@dataclass
class Clock:
    """The what-if replay's pending inputs: recorded ones and answers still to come."""

    inputs: list[tuple[int, Input]]
    answers: list[tuple[int, int, Input]] = field(default_factory=list)
    at: int = 0
    seq: int = 0

    def take(self, now_ms: int) -> list[Input]:
        out = []
        while self.at < len(self.inputs) and self.inputs[self.at][0] <= now_ms:
            out.append(self.inputs[self.at][1])
            self.at += 1
        while self.answers and self.answers[0][0] <= now_ms:
            out.append(heapq.heappop(self.answers)[2])
        return out

    def answer_at(self, at_ms: int, item: Input) -> None:
        self.seq += 1
        heapq.heappush(self.answers, (at_ms, self.seq, item))

    def next_at(self) -> int | None:
        times = [self.inputs[self.at][0]] if self.at < len(self.inputs) else []
        times += [self.answers[0][0]] if self.answers else []
        return min(times) if times else None


def _next_poll(now: int, *times: int | None) -> int | None:
    """The first poll (on the ``POLL_MS`` grid, after ``now``) at which something is due."""
    due = [t for t in times if t is not None]
    if not due:
        return None
    t = max(now + 1, min(due))
    return -(-t // POLL_MS) * POLL_MS


async def simulate(
    rec: Recording,
    policy: Policy,
    responses: Responses,
    places: Mapping[str, Place],
    markets: set[str] | None = None,
    progress: Progress | None = None,
) -> Run:
    """What-if replay of the recorded window under ``policy``."""
    started = time.perf_counter()
    dispatcher, index, store = sandbox(policy)
    feed, clock = PresenceFeed(index, rec.presence), Clock(inbound(rec, places, markets))
    run = Run(f"replay: {policy.name}", policy)
    journal = Journal(policy, "replay")
    await feed.until(rec.window.from_ms - 1)
    now = _next_poll(rec.window.from_ms - 1, rec.window.from_ms) or 0
    while True:
        await feed.until(now)
        items = clock.take(now) + ticks(await store.pop_due(now, TIMERS_PER_BATCH))
        if items:
            run.batches += 1
            for o in await dispatcher.handle(items, now):
                run.decisions.append(o.message)
                _answer(o.message, responses, clock, run)
            run.journal += [e.message for e in journal.entry(items, now)]  # type: ignore[misc]
            if progress and run.batches % 2000 == 0:
                progress(clock.at, len(clock.inputs), now)
        nxt = _next_poll(now, clock.next_at(), store.next_due(), feed.next_at())
        if nxt is None:
            break
        now = nxt
    run.wall_s = time.perf_counter() - started
    run.virtual_ms = rec.window.to_ms - rec.window.from_ms
    return run


def _answer(msg: BaseModel, responses: Responses, clock: Clock, run: Run) -> None:
    if not isinstance(msg, ev.OfferMade):
        return
    answer = responses.answer(msg)
    if answer is not None:
        accepted, delay = answer
        item = Answer(msg.request_id, msg.offer_id, msg.worker_id, accepted)
        clock.answer_at(msg.at_ms + delay, item)
        kind = ev.OfferAccepted if accepted else ev.OfferDeclined
        run.answers.append(
            kind(
                event_id=f"sim:{msg.offer_id}",
                at_ms=msg.at_ms + delay,
                offer_id=msg.offer_id,
                request_id=msg.request_id,
                worker_id=msg.worker_id,
            )
        )


# --- exactness ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Comparison:
    """Recorded decisions against replayed ones, as multisets of whole messages."""

    recorded: int
    replayed: int
    only_recorded: tuple[dict[str, Any], ...]
    only_replayed: tuple[dict[str, Any], ...]

    @property
    def identical(self) -> bool:
        return not self.only_recorded and not self.only_replayed


def _key(msg: BaseModel) -> str:
    return msg.model_dump_json()


def compare(recorded: Sequence[BaseModel], replayed: Sequence[BaseModel]) -> Comparison:
    """Which decisions differ. Only requests the replay opened are compared (a window that
    starts mid-request cannot know what came before)."""
    opened = {m.request_id for m in replayed}  # type: ignore[attr-defined]
    ours = [m for m in recorded if getattr(m, "request_id", None) in opened]
    theirs = [m for m in ours if not isinstance(m, ev.RequestRejected)]
    left: dict[str, list[BaseModel]] = {}
    for m in theirs:
        left.setdefault(_key(m), []).append(m)
    extra = []
    for m in replayed:
        bucket = left.get(_key(m))
        if bucket:
            bucket.pop()
        else:
            extra.append(m.model_dump())
    missing = [m.model_dump() for ms in left.values() for m in ms]
    return Comparison(len(theirs), len(replayed), tuple(missing), tuple(extra))
