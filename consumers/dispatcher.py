"""The dispatcher: consumes hire requests and offer answers in batches, wakes requests on
their timers, runs the pure core, holds workers atomically, and publishes offers and
lifecycle events.

Per batch it makes a handful of Redis round trips whatever the batch size: load states, search
(one pipeline for every request), hold (one pipeline), save (one pipeline of compare-and-set
scripts), release/assign, and one Kafka flush. Several instances may share a consumer group:
holds (``SET NX``) keep a worker to one request, versioned saves keep a request to one writer.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import ConsumerRecord
from pydantic import BaseModel

from consumers import effects
from consumers.runtime import Outgoing, dead_letter, decode
from dispatch import batch, core
from dispatch.model import (
    Answer,
    Cancel,
    Candidate,
    Decision,
    Input,
    Job,
    NewJob,
    Offer,
    Policy,
    RequestState,
    Tick,
    Withdrawal,
    request_id_of,
)
from dispatch.model import Happened as CoreHappened
from infra.keys import HOLD_GRACE_MS
from infra.ports import RequestStore, WorkerIndex
from schemas import events as ev
from schemas.topics import HIRE_REQUESTS, OFFER_RESPONSES

log = logging.getLogger("dispatcher")
SAVE_ATTEMPTS = 5
TIMERS_PER_BATCH = 2000


@dataclass
class Progress:
    """One request's decisions within a batch, folded together until they are saved."""

    version: int
    state: RequestState | None
    made: list[Offer] = field(default_factory=list)
    withdrawn: list[Withdrawal] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    assigned: list[str] = field(default_factory=list)
    happened: list[CoreHappened] = field(default_factory=list)
    held: set[str] = field(default_factory=set)
    wants_search: bool = False
    changed: bool = False
    ticked: bool = False  # woken by its timer in this batch
    defer_at: int | None = None  # batch policy: searches when the window closes

    def add(self, d: Decision | None) -> None:
        if d is None:
            return
        self.state = d.state
        self.made += d.made
        self.withdrawn += d.withdrawn
        self.released += d.released
        self.assigned += d.assigned
        self.happened += d.happened
        self.wants_search = d.search is not None
        self.changed = self.changed or d.changed

    @property
    def searching(self) -> bool:
        return self.wants_search and self.state is not None and not self.state.terminal


class Dispatcher:
    """The imperative shell around the dispatch core."""

    def __init__(self, index: WorkerIndex, store: RequestStore, policy: Policy) -> None:
        self.index = index
        self.store = store
        self.policy = policy

    async def handle(self, inputs: Sequence[Input], now: int) -> list[Outgoing]:
        """Run a batch of inputs; return the messages to publish (after the state is saved)."""
        by_request: dict[str, list[Input]] = {}
        for item in inputs:
            by_request.setdefault(request_id_of(item), []).append(item)
        out: list[Outgoing] = []
        for attempt in range(SAVE_ATTEMPTS):
            if not by_request:
                break
            lost = await self._attempt(by_request, now, out, first=attempt == 0)
            by_request = {rid: by_request[rid] for rid in lost}
        if by_request:
            log.error("gave up on %d requests after %d conflicts", len(by_request), SAVE_ATTEMPTS)
        return out

    async def _attempt(
        self, by_request: Mapping[str, list[Input]], now: int, out: list[Outgoing], first: bool
    ) -> list[str]:
        # A request seen for the first time has no state to load: it is created with version
        # 0, and a repeated one (redelivery) loses that save and is decided again, loaded.
        known = [r for r, items in by_request.items() if not (first and _all_new(items))]
        loaded = await self.store.load(known) if known else {}
        work = {rid: self._fold(loaded.get(rid), items, now) for rid, items in by_request.items()}
        await self._waves([p for p in work.values() if p.searching], now)
        dirty = [p for p in work.values() if p.changed and p.state is not None]
        saved = await self.store.save([(p.state, p.version) for p in dirty if p.state])
        won = [p for p, ok in zip(dirty, saved, strict=True) if ok]
        lost = [p for p, ok in zip(dirty, saved, strict=True) if not ok]
        # Another dispatcher changed these requests first: let go of the workers we held for
        # them and decide again from the state it saved.
        await self.index.release([(w, _rid(p)) for p in lost for w in p.held])
        await self._carry_out(won, now, out)
        return [_rid(p) for p in lost]

    def _fold(
        self, loaded: tuple[int, RequestState] | None, items: list[Input], now: int
    ) -> Progress:
        version, state = loaded if loaded else (0, None)
        progress = Progress(version, state)
        for item in items:
            progress.add(core.step(progress.state, item, now, self.policy))
        progress.ticked = any(isinstance(item, Tick) for item in items)
        return progress

    async def _waves(self, active: list[Progress], now: int) -> None:
        """Search, plan, hold and offer for every searching request, widening as needed."""
        taken: set[str] = set()
        if batch.is_batch(self.policy):
            active = self._defer(active, now)
        for _ in range(len(self.policy.radii_km) + 2):
            if not active:
                return
            found = await self.index.search(
                [core.search_for(_state(p), self.policy) for p in active]
            )
            plans = self._plans(active, found, taken)
            claims = [
                (c.worker_id, _rid(p)) for p, plan in zip(active, plans, strict=True) for c in plan
            ]
            got = iter(await self.index.hold(claims, self.policy.offer_ttl_ms + HOLD_GRACE_MS))
            for p, f, plan in zip(active, found, plans, strict=True):
                held = frozenset(c.worker_id for c in plan if next(got))
                p.held |= held
                missed = frozenset(c.worker_id for c in plan) - held
                unavailable = _unavailable(f, held, missed, taken)
                p.add(core.apply_wave(_state(p), f, held, unavailable, now, self.policy))
            active = [p for p in active if p.searching]

    def _plans(
        self, active: list[Progress], found: list[list[Candidate]], taken: set[str]
    ) -> list[list[Candidate]]:
        if not batch.is_batch(self.policy):
            return [self._plan(p, f, taken) for p, f in zip(active, found, strict=True)]
        waves = [(_state(p), f) for p, f in zip(active, found, strict=True)]
        plans = batch.plan_batch(waves, self.policy, frozenset(taken))
        taken.update(c.worker_id for plan in plans for c in plan)
        return plans

    def _defer(self, active: list[Progress], now: int) -> list[Progress]:
        """Batch policy: requests not woken by their timer wait for the window to close."""
        ready: list[Progress] = []
        for p in active:
            if p.ticked or batch.window_end(now) <= now:
                ready.append(p)
            else:
                p.state = batch.defer(_state(p), now)
                p.defer_at, p.changed = _state(p).next_search_at_ms, True
        return ready

    def _plan(self, p: Progress, found: list[Candidate], taken: set[str]) -> list[Candidate]:
        # The batch's taken set is handed over as it is: a copy per request made a batch
        # quadratic in its size.
        plan = core.plan_wave(_state(p), found, self.policy, taken)
        taken.update(c.worker_id for c in plan)
        return plan

    async def _carry_out(self, won: list[Progress], now: int, out: list[Outgoing]) -> None:
        await self.index.release([(w, _rid(p)) for p in won for w in p.released])
        assigned = [(w, _rid(p)) for p in won for w in p.assigned]
        for (wid, rid), ok in zip(assigned, await self.index.assign(assigned), strict=True):
            if not ok:
                log.warning("assignment of %s to %s found the hold gone", wid, rid)
        await self.store.schedule([(_rid(p), _due(p)) for p in won])
        for p in won:
            out.extend(_messages(p, now))


def _messages(p: Progress, now: int) -> list[Outgoing]:
    state = _state(p)
    msgs = [effects.offer_made(state.job, o) for o in p.made]
    msgs += [effects.offer_withdrawn(state.job, w, now) for w in p.withdrawn]
    msgs += [effects.happened(state, h, now) for h in p.happened]
    return msgs


def _due(p: Progress) -> int | None:
    due = _state(p).due_at_ms()
    return due if due is None or p.defer_at is None else min(due, p.defer_at)


def _unavailable(
    found: list[Candidate], held: frozenset[str], missed: frozenset[str], taken: set[str]
) -> frozenset[str]:
    """The candidates this request wanted or found but someone else holds: the ones its hold
    missed, and the ones another request of the batch planned first."""
    others = {c.worker_id for c in found if c.worker_id in taken and c.worker_id not in held}
    return missed | others


def _all_new(items: list[Input]) -> bool:
    return all(isinstance(item, NewJob) for item in items)


def _state(p: Progress) -> RequestState:
    assert p.state is not None
    return p.state


def _rid(p: Progress) -> str:
    return _state(p).job.request_id


# --- the edge: wire messages to core inputs ---------------------------------------------------


Place = tuple[float, float]


def job_from(msg: ev.HireRequested, place: Place) -> Job:
    lon, lat = (msg.lon, msg.lat) if msg.lon is not None and msg.lat is not None else place
    return Job(
        request_id=msg.request_id,
        market_id=msg.market_id,
        skill=msg.skill,
        headcount=msg.headcount,
        wage_yuan_per_day=msg.wage_yuan_per_day,
        lon=lon,
        lat=lat,
        requested_at_ms=msg.at_ms,
        start_at_ms=msg.start_at_ms,
        deadline_at_ms=msg.deadline_at_ms,
    )


def to_input(msg: BaseModel, markets: Mapping[str, Place]) -> Input | str:
    """The core input for a valid message, or the reason it cannot be taken."""
    match msg:
        case ev.HireRequested():
            place = markets.get(msg.market_id)
            if place is None:
                return f"unknown market {msg.market_id!r}"
            return NewJob(job_from(msg, place))
        case ev.HireCancelled():
            return Cancel(msg.request_id)
        case ev.OfferAccepted() | ev.OfferDeclined():
            accepted = isinstance(msg, ev.OfferAccepted)
            return Answer(msg.request_id, msg.offer_id, msg.worker_id, accepted)
    return f"unexpected message type {type(msg).__name__}"


INBOUND: dict[str, Any] = {HIRE_REQUESTS: ev.HIRE_INBOUND, OFFER_RESPONSES: ev.OFFER_RESPONSE}


def translate(
    records: Sequence[ConsumerRecord[Any, Any]], markets: Mapping[str, Place], now: int
) -> tuple[list[Input], list[Outgoing]]:
    """Decode a batch: core inputs, plus dead letters (and rejections) for what is unusable."""
    decoded = decode(records, INBOUND, "dispatcher")
    inputs: list[Input] = []
    refused = decoded.dead
    for record, msg in decoded.good:
        item = to_input(msg, markets)
        if isinstance(item, str):
            refused.append(_refusal(record, item))
            refused.append(effects.rejected(msg.request_id, item, now))
        else:
            inputs.append(item)
    return inputs, refused


def _refusal(record: ConsumerRecord[Any, Any], reason: str) -> Outgoing:
    return dead_letter(record, "dispatcher", reason)


def ticks(request_ids: Sequence[str]) -> list[Input]:
    return [Tick(rid) for rid in request_ids]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="gig-dispatcher",
        description="Run a dispatcher instance: consumes hire requests and offer answers, "
        "publishes offers and request lifecycle events. Start several for more throughput; "
        "they share the work through one Kafka consumer group.",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``gig-dispatcher``."""
    from consumers.runtime import setup_logging
    from consumers.services import run_dispatcher

    args = parse_args(argv)
    setup_logging(args.verbose)
    asyncio.run(run_dispatcher())


if __name__ == "__main__":
    main()
