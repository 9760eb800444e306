"""The dispatcher: consumes hire requests and offer answers in batches, wakes requests on
their timers, runs the pure core, holds workers atomically, and publishes offers and
lifecycle events.

Per batch it makes a handful of Redis round trips whatever the batch size: load states, search
(one pipeline for every request), hold (one pipeline), save (one pipeline of compare-and-set
scripts), release/assign, timers, and one Kafka flush. Several instances may share a consumer
group: holds (``SET NX``) keep a worker to one request, versioned saves keep a request to one
writer.

A decision and its announcement are one step (a transactional outbox): each request's new
state is saved together with the messages it implies, serialized (its outbox), in one atomic
write; then the messages are published; once the broker has them, the outbox is cleared.
Whoever loads a request with an outbox still pending (a redelivered input, a timer, the
sweep) publishes it again before acting on it, as the same bytes with the same event ids, so
a dispatcher killed between saving and publishing loses no announcement.

One request's failure stays its own: a request whose step fails (the core raises, the store
refuses a value) is tried alone once more, then its inputs are dead-lettered with the reason,
while the others of its batch go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import ConsumerRecord
from pydantic import BaseModel

from consumers import effects
from dispatch import batch, core
from dispatch.model import (
    HIRED,
    RELEASED,
    WORKING,
    Answer,
    Cancel,
    Candidate,
    Decision,
    Input,
    Job,
    JobStep,
    NewJob,
    Offer,
    Policy,
    RequestState,
    Tick,
    Withdrawal,
    WorkerAssigned,
    request_id_of,
)
from dispatch.model import Happened as CoreHappened
from infra.clock import now_ms
from infra.consume import retryable
from infra.decoding import dead_letter, decode
from infra.keys import (
    ASSIGNED_PREFIX,
    ASSIGNMENT_TTL_MS,
    HOLD_GRACE_MS,
    OUTBOX_STALE_MS,
    SWEEP_INTERVAL_S,
)
from infra.ports import RequestStore, Stored, WorkerIndex, Write
from infra.publish import Outgoing
from infra.settings import PolicySettings
from infra.state_codec import dump_state, snapshot
from schemas import events as ev
from schemas.topics import HIRE_REQUESTS, OFFER_RESPONSES

log = logging.getLogger("dispatcher")
SAVE_ATTEMPTS = 5
TIMERS_PER_BATCH = 2000
REASON_CHARS = 500  # of a failure's text, in logs and dead letters


@dataclass
class Progress:
    """One request's decisions within a batch, folded together until they are saved."""

    version: int
    state: RequestState | None
    made: list[Offer] = field(default_factory=list)
    withdrawn: list[Withdrawal] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    assigned: list[str] = field(default_factory=list)
    freed: list[str] = field(default_factory=list)  # jobs over: back to the pool
    happened: list[CoreHappened] = field(default_factory=list)
    refused: list[tuple[Input, str]] = field(default_factory=list)  # inputs the core refused
    held: set[str] = field(default_factory=set)
    messages: list[Outgoing] = field(default_factory=list)  # once built for its outbox
    wants_search: bool = False
    changed: bool = False
    saved: bool = False
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
        self.freed += d.freed
        self.happened += d.happened
        self.wants_search = d.search is not None
        self.changed = self.changed or d.changed

    @property
    def searching(self) -> bool:
        return self.wants_search and self.state is not None and not self.state.terminal


@dataclass
class Handled:
    """What a batch came to: what to publish, and what to do once the broker has it."""

    out: list[Outgoing] = field(default_factory=list)  # the batch's own messages, as models
    # Everything to publish, in order: outboxes found pending first, then the batch's own
    # (its outboxes as serialized, with the states' snapshots), dead letters.
    wire: list[Outgoing] = field(default_factory=list)
    written: list[tuple[str, int]] = field(default_factory=list)  # outboxes to clear then
    finished: list[str] = field(default_factory=list)  # requests over: their timers go then

    def republish(self, rid: str, stored: Stored) -> None:
        self.wire += [effects.wire(e) for e in stored.outbox]
        self.written.append((rid, stored.version))

    def saved(self, p: Progress, w: Write) -> None:
        rid, version = w.state.job.request_id, w.version + 1
        self.out += p.messages
        self.wire += [effects.wire(e) for e in w.events]
        self.wire.append(effects.wire(snapshot(rid, version, w.at_ms, w.encoded)))
        self.written.append((rid, version))

    def plain(self, messages: list[Outgoing]) -> None:
        """Messages with no outbox: derived again from the same input if they are lost."""
        self.out += messages
        self.wire += messages


class Dispatcher:
    """The imperative shell around the dispatch core."""

    def __init__(self, index: WorkerIndex, store: RequestStore, policy: Policy) -> None:
        self.index = index
        self.store = store
        self.policy = policy
        self._clearing: set[asyncio.Task[None]] = set()
        # Per request, the background step that clears the outbox this process last handed to
        # the producer. A later batch with the same request waits for it (a few milliseconds)
        # rather than load the outbox still in flight and publish it a second time.
        self._settling: dict[str, asyncio.Task[None]] = {}
        self._untimed: dict[str, int] = {}  # requests without a timer at the last sweep

    async def handle(self, inputs: Sequence[Input], now: int) -> list[Outgoing]:
        """Run a batch and count its messages as published at once; return them. For callers
        with no broker (replay, benchmarks, tests); the service uses ``decide``."""
        done = await self.decide(inputs, now)
        await self.published(done)
        return done.out

    async def decide(self, inputs: Sequence[Input], now: int) -> Handled:
        """Run a batch: each request's state saved with its outbox, its holds and timer set.
        Publish ``wire``, then call ``published`` (or ``after_publish``)."""
        by_request: dict[str, list[Input]] = {}
        for item in inputs:
            by_request.setdefault(request_id_of(item), []).append(item)
        in_flight = {self._settling[rid] for rid in by_request if rid in self._settling}
        if in_flight:
            await asyncio.wait(in_flight)
        done = Handled()
        failed = await self._run(by_request, now, done, first=True)
        for rid, reason in failed.items():
            await self._alone(rid, by_request[rid], reason, now, done)
        return done

    async def published(self, done: Handled) -> None:
        """The broker has every message of ``done``: clear the outboxes it published (each
        only if no later save owns it), and drop the timers of the requests that are over."""
        await self.store.clear(done.written)
        await self.store.schedule([(rid, None) for rid in done.finished])

    def after_publish(self, acks: Awaitable[Any] | None, done: Handled) -> None:
        """Call ``published`` in the background once ``acks`` completes. If the publish
        fails, the outboxes stay pending: whoever loads those requests next publishes them."""
        task = asyncio.create_task(self._clear_after(acks, done))
        self._clearing.add(task)
        rids = [rid for rid, _ in done.written]
        self._settling.update(dict.fromkeys(rids, task))
        task.add_done_callback(lambda t: self._settled(t, rids))

    def _settled(self, task: asyncio.Task[None], rids: list[str]) -> None:
        self._clearing.discard(task)
        for rid in rids:
            if self._settling.get(rid) is task:
                del self._settling[rid]

    async def _clear_after(self, acks: Awaitable[Any] | None, done: Handled) -> None:
        try:
            if acks is not None:
                await acks
            await self.published(done)
        except Exception as e:  # pending outboxes are only published again: no harm done
            log.warning("outboxes of %d requests left pending: %s", len(done.written), e)

    async def drain(self) -> None:
        """Wait for the outboxes being cleared in the background."""
        if self._clearing:
            await asyncio.wait(set(self._clearing))

    async def sweep(self, now: int) -> Handled:
        """Repair what a dispatcher that died mid-batch left behind: outboxes pending for
        longer than ``OUTBOX_STALE_MS`` are published, requests not over that had no timer
        at the last sweep too, at the same version, are woken at their due time. Publish
        ``wire``, then call ``published``."""
        done = Handled()
        wake: list[tuple[str, int]] = []
        # A request is saved before its timer is set, so one batch in flight shows requests
        # without a timer for a moment: only one seen so at two sweeps, unchanged, is stranded.
        seen, self._untimed = self._untimed, {}
        for n in await self.store.neglected(now, OUTBOX_STALE_MS):
            rid, stored = n.request_id, n.stored
            due = stored.state.due_at_ms()
            if n.stale_outbox:
                log.warning(
                    "sweep: %s v%d: publishing its %d pending messages",
                    rid,
                    stored.version,
                    len(stored.outbox),
                    extra={"request_id": rid},
                )
                done.republish(rid, stored)
                if due is None:
                    done.finished.append(rid)
            if n.untimed and due is not None and seen.get(rid) != stored.version:
                self._untimed[rid] = stored.version
            elif n.untimed and due is not None:
                log.warning(
                    "sweep: %s is %s with no timer: waking it",
                    rid,
                    stored.state.status,
                    extra={"request_id": rid},
                )
                wake.append((rid, due))
        await self.store.wake(wake)
        return done

    async def _alone(
        self, rid: str, items: list[Input], reason: str, now: int, done: Handled
    ) -> None:
        """A request that failed in its batch: tried once more on its own, then its inputs
        are dead-lettered (and a new request's kiosk told it was rejected)."""
        ids = {"request_id": rid}  # in JSON log lines (GIG_LOG_FORMAT=json)
        log.warning("request %s failed in its batch (%s): trying it alone", rid, reason, extra=ids)
        again = (await self._run({rid: items}, now, done, first=False)).get(rid)
        if again is None:
            return
        log.error(
            "request %s failed again (%s): dead-lettering %d inputs",
            rid,
            again,
            len(items),
            extra=ids,
        )
        done.plain([effects.dead_input(item, again, now) for item in items])
        if any(isinstance(item, NewJob) for item in items) and not await self._exists(rid):
            done.plain([effects.rejected(rid, again[:REASON_CHARS], now)])

    async def _exists(self, rid: str) -> bool:
        try:
            return rid in await self.store.load([rid])
        except Exception:  # unknown: better say nothing than something wrong
            return True

    async def _run(
        self, by_request: Mapping[str, list[Input]], now: int, done: Handled, first: bool
    ) -> dict[str, str]:
        """Decide until every request is saved or has failed; return the failed ones."""
        failed: dict[str, str] = {}
        for attempt in range(SAVE_ATTEMPTS):
            if not by_request:
                return failed
            lost = await self._attempt(by_request, now, done, failed, first and attempt == 0)
            by_request = {rid: by_request[rid] for rid in lost}
        for rid in by_request:
            failed[rid] = f"gave up after {SAVE_ATTEMPTS} conflicting saves"
        return failed

    async def _attempt(
        self,
        by_request: Mapping[str, list[Input]],
        now: int,
        done: Handled,
        failed: dict[str, str],
        first: bool,
    ) -> list[str]:
        """One pass over the requests; return those whose save lost to another writer."""
        work: dict[str, Progress] = {}
        try:
            loaded = await self._load(by_request, first)
            await self._flush(loaded, done)
            for rid, items in by_request.items():
                self._fold_one(rid, loaded.get(rid), items, now, work, failed)
            return await self._decide(work, now, done, failed)
        except Exception as e:
            if retryable(e):
                raise
            # A step for the whole batch failed: the workers held for requests not saved go
            # back, and every request of the pass is tried alone.
            log.warning("a batch step failed for %d requests: %s", len(by_request), _why(e))
            await self.index.release(
                [(w, r) for r, p in work.items() if not p.saved for w in p.held]
            )
            failed.update({rid: _why(e) for rid in by_request if rid not in failed})
            return []

    async def _load(self, by_request: Mapping[str, list[Input]], first: bool) -> dict[str, Stored]:
        # A request seen for the first time has no state to load: it is created with version
        # 0, and a repeated one (redelivery) loses that save and is decided again, loaded.
        known = [r for r, items in by_request.items() if not (first and _all_new(items))]
        return await self.store.load(known) if known else {}

    async def _flush(self, loaded: Mapping[str, Stored], done: Handled) -> None:
        """Publish again the outboxes earlier saves left pending, before acting on their
        requests; wake those the interrupted batch may have left without a timer."""
        wake: list[tuple[str, int]] = []
        pending = [(rid, stored) for rid, stored in loaded.items() if stored.outbox]
        for rid, stored in pending:
            log.debug("%s v%d: publishing its pending outbox again", rid, stored.version)
            done.republish(rid, stored)
            due = stored.state.due_at_ms()
            if due is None:
                done.finished.append(rid)
            else:
                wake.append((rid, due))
        if pending:
            await self._holds_as_saved([stored.state for _, stored in pending])
        await self.store.wake(wake)

    async def _holds_as_saved(self, states: Sequence[RequestState]) -> None:
        """Make the holds say what saved states (whose outboxes are being published again)
        say, in case their dispatcher died between saving and carrying out: the hired still at
        work assigned, the others let go. Each step is idempotent."""
        working = _pairs(states, WORKING)
        await self.index.release(_pairs(states, RELEASED))
        await self.index.unassign(_pairs(states, HIRED - WORKING))
        done = await self.index.assign(working)
        missing = [pair for pair, ok in zip(working, done, strict=True) if not ok]
        if not missing:
            return
        # The offer's hold lapsed meanwhile: an announced assignment takes the worker again.
        claims = [(w, ASSIGNED_PREFIX + r) for w, r in missing]
        taken = await self.index.hold(claims, ASSIGNMENT_TTL_MS)
        for (wid, rid), ok in zip(missing, taken, strict=True):
            if not ok:
                log.error(
                    "%s was announced assigned to %s, but another request holds them now",
                    wid, rid, extra={"request_id": rid, "worker_id": wid},
                )  # fmt: skip

    def _fold_one(
        self,
        rid: str,
        loaded: Stored | None,
        items: list[Input],
        now: int,
        work: dict[str, Progress],
        failed: dict[str, str],
    ) -> None:
        try:
            work[rid] = self._fold(loaded, items, now)
        except Exception as e:  # the core failed on odd input: this request alone
            failed[rid] = _why(e)

    def _fold(self, loaded: Stored | None, items: list[Input], now: int) -> Progress:
        progress = Progress(loaded.version, loaded.state) if loaded else Progress(0, None)
        for item in items:
            d = core.step(progress.state, item, now, self.policy)
            if d is not None and d.refused is not None:
                progress.refused.append((item, d.refused))
            else:
                progress.add(d)
        progress.ticked = any(isinstance(item, Tick) for item in items)
        return progress

    async def _decide(
        self, work: dict[str, Progress], now: int, done: Handled, failed: dict[str, str]
    ) -> list[str]:
        """Search, save and carry out; return the requests whose save lost."""
        await self._waves([p for p in work.values() if p.searching], now)
        dirty = [p for p in work.values() if p.changed and p.state is not None]
        writes = [_write(p, now) for p in dirty]
        won: list[tuple[Progress, Write]] = []
        lost: list[Progress] = []
        for p, w, ok in zip(dirty, writes, await self.store.save(writes), strict=True):
            if ok is True:
                p.saved = True
                won.append((p, w))
            elif ok is False:
                lost.append(p)
            else:
                failed[_rid(p)] = ok
        # Another dispatcher changed the lost requests first: let go of the workers we held
        # for them (and for the refused ones) and decide again from the state it saved.
        await self.index.release([(w, _rid(p)) for p in dirty if not p.saved for w in p.held])
        idle = [(r, p) for r, p in work.items() if not p.changed and r not in failed]
        await self._carry_out(won, idle, now, done)
        return [_rid(p) for p in lost]

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
            # Every hold is noted before any is acted on, so a failure lets go of them all.
            helds = [frozenset(c.worker_id for c in plan if next(got)) for plan in plans]
            for p, held in zip(active, helds, strict=True):
                p.held |= held
            for p, f, plan, held in zip(active, found, plans, helds, strict=True):
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

    async def _carry_out(
        self,
        won: list[tuple[Progress, Write]],
        idle: list[tuple[str, Progress]],
        now: int,
        done: Handled,
    ) -> None:
        """The saved decisions' holds and timers, then their messages; the messages of the
        requests that did not change (a late answer's "too late", refusals)."""
        await self.index.release([(w, _rid(p)) for p, _ in won for w in p.released])
        assigned = [(w, _rid(p)) for p, _ in won for w in p.assigned]
        for (wid, rid), ok in zip(assigned, await self.index.assign(assigned), strict=True):
            if not ok:
                log.warning(
                    "assignment of %s to %s found the hold gone",
                    wid,
                    rid,
                    extra={"request_id": rid, "worker_id": wid},
                )
        await self.index.unassign([(w, _rid(p)) for p, _ in won for w in p.freed])
        timers = [(_rid(p), _due(p)) for p, _ in won if not _state(p).terminal]
        timers += [t for rid, p in idle if (t := _idle_timer(rid, p, now, done)) is not None]
        await self.store.schedule(timers)
        for p, w in won:
            done.saved(p, w)
            if _state(p).terminal:
                done.finished.append(_rid(p))  # once its last messages are out
        for _, p in idle:
            if p.state is not None:
                done.plain(_messages(p, now))
        for p in [p for p, _ in won] + [p for _, p in idle]:
            done.plain([effects.dead_input(item, why, now) for item, why in p.refused])


async def sweep_forever(
    dispatcher: Dispatcher,
    send: Callable[[Sequence[Outgoing]], Awaitable[Awaitable[Any] | None]],
    stop: asyncio.Event,
    interval_s: float = SWEEP_INTERVAL_S,
) -> None:
    """Sweep at once and then every ``interval_s`` until ``stop``, publishing with ``send``."""
    while not stop.is_set():
        try:
            done = await dispatcher.sweep(now_ms())
            dispatcher.after_publish(await send(done.wire), done)
        except Exception as e:  # a backstop: a failed sweep waits for the next
            log.warning("sweep failed: %s", _why(e))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


def _write(p: Progress, now: int) -> Write:
    """The request's new state and its outbox, each message serialized once."""
    state = _state(p)
    p.messages = _messages(p, now)
    events = tuple(effects.envelope(m) for m in p.messages)
    return Write(state, p.version, now, dump_state(state), events)


def _idle_timer(rid: str, p: Progress, now: int, done: Handled) -> tuple[str, int] | None:
    """A request woken by its timer that did not change: its timer is set to when it is due
    next (a popped timer is only leased), or dropped once the batch is out if it is over."""
    if not p.ticked:
        return None
    due = None if p.state is None else p.state.due_at_ms()
    if due is None:
        done.finished.append(rid)
        return None
    return (rid, due) if due > now else None


def _messages(p: Progress, now: int) -> list[Outgoing]:
    state = _state(p)
    msgs = [effects.offer_made(state.job, o) for o in p.made]
    msgs += [effects.offer_withdrawn(state.job, w, now) for w in p.withdrawn]
    msgs += [effects.happened(state, h, now) for h in p.happened]
    msgs += [
        effects.hired(state.job, h.worker_id, h.offer_id, now)
        for h in p.happened
        if isinstance(h, WorkerAssigned)
    ]
    return msgs


def _pairs(states: Sequence[RequestState], statuses: frozenset[Any]) -> list[tuple[str, str]]:
    """(worker, request) of every offer of the states whose status is among ``statuses``."""
    return [
        (o.worker_id, st.job.request_id) for st in states for o in st.offers if o.status in statuses
    ]


def _why(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:REASON_CHARS]


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
        note=msg.note,
        contact=msg.contact,
        address=msg.address,
    )


def time_bounds(policy: PolicySettings) -> ev.TimeBounds:
    """The edge's clock checks from the policy settings."""
    return ev.TimeBounds(
        skew_ms=int(policy.max_skew_s * 1000), horizon_ms=int(policy.max_horizon_s * 1000)
    )


def to_input(
    msg: BaseModel,
    markets: Mapping[str, Place],
    now: int,
    bounds: ev.TimeBounds = ev.DEFAULT_TIME_BOUNDS,
) -> Input | str:
    """The core input for a valid message, or the reason it cannot be taken (its times lie
    too far ahead of ``now``, its market is unknown)."""
    problem = ev.time_problem(msg, now, bounds)
    if problem is not None:
        return problem
    match msg:
        case ev.HireRequested():
            place = markets.get(msg.market_id)
            if place is None:
                return f"unknown market {msg.market_id!r}"
            return NewJob(job_from(msg, place))
        case ev.HireCancelled():
            # The core refuses it unless this is the request's own market.
            return Cancel(msg.request_id, msg.market_id)
        case ev.JobReported():
            # A station's step is refused unless it is the request's market; a worker's is
            # theirs (the gateway checked who sent it), and only for a job they were hired to.
            market = msg.market_id if msg.by == "station" else None
            return JobStep(msg.request_id, msg.worker_id, msg.step, msg.by, msg.reason, market)
        case ev.OfferAccepted() | ev.OfferDeclined():
            accepted = isinstance(msg, ev.OfferAccepted)
            return Answer(msg.request_id, msg.offer_id, msg.worker_id, accepted)
    return f"unexpected message type {type(msg).__name__}"


REASON_MAX = 500
INBOUND: dict[str, Any] = {HIRE_REQUESTS: ev.HIRE_INBOUND, OFFER_RESPONSES: ev.OFFER_RESPONSE}


def translate(
    records: Sequence[ConsumerRecord[Any, Any]],
    markets: Mapping[str, Place],
    now: int,
    bounds: ev.TimeBounds = ev.DEFAULT_TIME_BOUNDS,
) -> tuple[list[Input], list[Outgoing]]:
    """Decode a batch: core inputs, plus dead letters for what is unusable (and, for a
    request, a rejection its kiosk sees; a refused cancel or answer tells nobody else)."""
    decoded = decode(records, INBOUND, "dispatcher")
    inputs: list[Input] = []
    refused = decoded.dead
    for record, msg in decoded.good:
        item = to_input(msg, markets, now, bounds)
        if isinstance(item, str):
            refused.append(_refusal(record, item))
            if isinstance(msg, ev.HireRequested):
                refused.append(effects.rejected(msg.request_id, item[:REASON_MAX], now))
        else:
            inputs.append(item)
    return inputs, refused


def _refusal(record: ConsumerRecord[Any, Any], reason: str) -> Outgoing:
    return dead_letter(record, "dispatcher", reason)


def ticks(request_ids: Sequence[str]) -> list[Input]:
    return [Tick(rid) for rid in request_ids]
