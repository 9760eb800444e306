"""The auditor: reads the log and the request store, and counts what must never happen.

``python -m infra.audit --bootstrap … --redis … --prefix …`` reads the hire-requests, offers,
offer-responses, request-events and request-state topics from the start of their history to
the end offsets it finds, and the Redis request store under the prefix, then prints a table
(exit status 1 if any violation is found). The chaos suite runs the same functions.

Violations (each counted once per subject):

- ``lost``: an acknowledged, valid ``HireRequested`` (known market, when the registry is
  given) with no terminal event (``RequestFilled`` / ``RequestExpired`` / ``RequestCancelled``
  / ``RequestRejected``) on request-events, once its deadline plus a grace has passed (before
  that it is ``open``); also a request the caller saw acknowledged that the log does not hold.
- ``unannounced``: the store or the request-state topic says a worker was assigned, an offer
  was made, or the request is filled / expired / cancelled, and the log does not carry the
  matching ``WorkerAssigned`` / ``OfferMade`` / terminal event.
- ``double_booked``: a worker assigned to a request while their job at another had not
  ended: by the log (``WorkerAssigned`` before the other job's ending ``JobChanged``), or by
  a state (two requests whose states both have the worker at work).
- ``over_filled``: a request with more distinct assigned workers than its headcount.
- ``contradictory``: a request with two different terminal event types (the same event id
  twice is a redelivery, and fine).
- ``unaccepted``: a ``WorkerAssigned`` with no ``OfferAccepted`` from that worker for that
  offer on offer-responses.

The checks are pure functions over decoded records (``audit``); ``read_log`` and
``read_store`` are the thin readers.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import TypeAdapter, ValidationError
from redis.asyncio import Redis

from dispatch.model import HIRED, WORKING, RequestState, RequestStatus
from infra.kafka import partitions
from infra.keys import Keys
from infra.process import run_cli
from infra.redis_nodes import AnyRedis, nodes_of
from infra.state_codec import load_state
from schemas import events as ev
from schemas.topics import HIRE_REQUESTS, OFFER_RESPONSES, OFFERS, REQUEST_EVENTS, REQUEST_STATE

VIOLATIONS: Final = (
    "lost",
    "unannounced",
    "double_booked",
    "over_filled",
    "contradictory",
    "unaccepted",
)
TERMINAL_EVENTS: Final = (
    ev.RequestFilled,
    ev.RequestExpired,
    ev.RequestCancelled,
    ev.RequestRejected,
)
# The event a terminal state must be announced with.
ANNOUNCED_BY: Final[Mapping[RequestStatus, type[ev.Message]]] = {
    RequestStatus.FILLED: ev.RequestFilled,
    RequestStatus.EXPIRED: ev.RequestExpired,
    RequestStatus.CANCELLED: ev.RequestCancelled,
}
READ_TIMEOUT_S = 120.0
SHOWN_FINDINGS = 20
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Log:
    """What the topics hold, decoded; records a topic's schema refuses are only counted."""

    hires: tuple[ev.HireRequested, ...] = ()
    events: tuple[ev.RequestEvent, ...] = ()
    offers: tuple[ev.OfferMade | ev.OfferWithdrawn | ev.Hired, ...] = ()
    responses: tuple[ev.OfferAccepted | ev.OfferDeclined, ...] = ()
    states: tuple[ev.RequestStateSaved, ...] = ()
    unreadable: int = 0


@dataclass(frozen=True, slots=True)
class Stored:
    """One request in the Redis store: its state, and whether an outbox is still pending."""

    version: int
    state: RequestState
    pending: bool = False


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    request_id: str = ""
    worker_id: str = ""
    detail: str = ""


@dataclass(frozen=True)
class Report:
    requests: int
    ended: int
    open: int
    pending_outboxes: int
    unreadable: int
    findings: tuple[Finding, ...] = ()
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not any(self.counts.get(k, 0) for k in VIOLATIONS)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "ended": self.ended,
            "open": self.open,
            "pending_outboxes": self.pending_outboxes,
            "unreadable": self.unreadable,
            **{k: self.counts.get(k, 0) for k in VIOLATIONS},
            "findings": [asdict(f) for f in self.findings[:SHOWN_FINDINGS]],
        }

    def table(self, title: str = "audit") -> str:
        rows = [
            ("requests", self.requests),
            ("ended", self.ended),
            ("open (deadline not passed)", self.open),
            ("pending outboxes", self.pending_outboxes),
            ("unreadable records", self.unreadable),
            *((k.replace("_", "-"), self.counts.get(k, 0)) for k in VIOLATIONS),
        ]
        width = max(len(a) for a, _ in rows)
        lines = [title, "-" * (width + 10)]
        lines += [f"{a:<{width}}  {b:>7}" for a, b in rows]
        lines += [
            f"  {f.kind}: {f.request_id} {f.worker_id} {f.detail}".rstrip()
            for f in self.findings[:SHOWN_FINDINGS]
        ]
        return "\n".join(lines)


# --- the checks: pure functions over decoded records -----------------------------------------


def latest_states(saved: Iterable[ev.RequestStateSaved]) -> dict[str, RequestState]:
    """Each request's state at its highest version on the request-state topic."""
    best: dict[str, ev.RequestStateSaved] = {}
    for s in saved:
        if s.request_id not in best or s.version > best[s.request_id].version:
            best[s.request_id] = s
    return {rid: load_state(s.state) for rid, s in best.items()}


def terminal_types(events: Iterable[ev.RequestEvent]) -> dict[str, set[str]]:
    """Per request, the types of terminal event the log carries."""
    out: dict[str, set[str]] = defaultdict(set)
    for e in events:
        if isinstance(e, TERMINAL_EVENTS):
            out[e.request_id].add(e.type)
    return out


def assignments(events: Iterable[ev.RequestEvent]) -> dict[str, set[str]]:
    """Per request, the workers ``WorkerAssigned`` names."""
    out: dict[str, set[str]] = defaultdict(set)
    for e in events:
        if isinstance(e, ev.WorkerAssigned):
            out[e.request_id].add(e.worker_id)
    return out


def accepted_in(state: RequestState) -> set[str]:
    """The workers the request hired, whatever their jobs became since."""
    return {o.worker_id for o in state.offers if o.status in HIRED}


def working_in(state: RequestState) -> set[str]:
    """The workers whose job at the request has not ended."""
    return {o.worker_id for o in state.offers if o.status in WORKING}


def jobs(events: Iterable[ev.RequestEvent]) -> dict[str, list[tuple[int, int, str]]]:
    """Per worker, each job by the log: (assigned at, ended at or never, request id)."""
    start: dict[tuple[str, str], int] = {}
    end: dict[tuple[str, str], int] = {}
    for e in events:
        if isinstance(e, ev.WorkerAssigned):
            start.setdefault((e.worker_id, e.request_id), e.at_ms)
        elif isinstance(e, ev.JobChanged) and e.status in ev.JOB_ENDS:
            end.setdefault((e.worker_id, e.request_id), e.at_ms)
    out: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for (wid, rid), at in start.items():
        out[wid].append((at, end.get((wid, rid), NEVER), rid))
    return out


NEVER: Final = 2**63


def lost(
    hires: Iterable[ev.HireRequested],
    events: Sequence[ev.RequestEvent],
    *,
    now_ms: int,
    grace_ms: int = 0,
    markets: Collection[str] | None = None,
    acknowledged: Collection[str] | None = None,
) -> tuple[list[Finding], int]:
    """Requests with no terminal event once their deadline and the grace passed; and how many
    have none yet but still may (open)."""
    ended = terminal_types(events)
    findings: list[Finding] = []
    still_open = 0
    seen: set[str] = set()
    for h in hires:
        if h.request_id in seen or (markets is not None and h.market_id not in markets):
            continue
        seen.add(h.request_id)
        if h.request_id in ended:
            continue
        if h.deadline_at_ms + grace_ms > now_ms:
            still_open += 1
        else:
            findings.append(Finding("lost", h.request_id, detail="no terminal event"))
    for rid in sorted(set(acknowledged or ()) - seen):
        findings.append(Finding("lost", rid, detail="acknowledged but not in the log"))
    return findings, still_open


def unannounced(
    states: Mapping[str, Mapping[str, RequestState]],
    events: Sequence[ev.RequestEvent],
    offers: Iterable[ev.OfferMade | ev.OfferWithdrawn | ev.Hired],
) -> list[Finding]:
    """What a state (by its source: the store, the request-state topic) says happened that
    the log does not announce."""
    ended, assigned = terminal_types(events), assignments(events)
    made = {o.offer_id for o in offers if isinstance(o, ev.OfferMade)}
    found: dict[tuple[str, str, str], str] = {}
    for source, by_request in states.items():
        for rid, state in by_request.items():
            for f in _unannounced_one(rid, state, ended, assigned, made):
                found.setdefault((f.request_id, f.worker_id, f.detail), source)
    return [
        Finding("unannounced", rid, wid, f"{detail} ({source})")
        for (rid, wid, detail), source in found.items()
    ]


def _unannounced_one(
    rid: str,
    state: RequestState,
    ended: Mapping[str, set[str]],
    assigned: Mapping[str, set[str]],
    made: set[str],
) -> list[Finding]:
    out = []
    want = ANNOUNCED_BY.get(state.status)
    if want is not None and want.__name__ not in ended.get(rid, set()):
        out.append(Finding("unannounced", rid, detail=f"{state.status} without {want.__name__}"))
    for wid in sorted(accepted_in(state) - assigned.get(rid, set())):
        out.append(Finding("unannounced", rid, wid, "assigned without WorkerAssigned"))
    for o in state.offers:
        if o.offer_id not in made:
            out.append(Finding("unannounced", rid, o.worker_id, f"offer {o.offer_id} not made"))
    return out


def double_booked(
    events: Iterable[ev.RequestEvent], states: Iterable[Mapping[str, RequestState]] = ()
) -> list[Finding]:
    """Workers assigned to a request while at work for another, by the log or by any state."""
    requests_of: dict[str, set[str]] = defaultdict(set)
    for wid, spans in jobs(events).items():
        spans.sort()
        for (_, ends, rid), (begins, _, other) in itertools.pairwise(spans):
            if begins < ends:  # the next job began before this one ended
                requests_of[wid] |= {rid, other}
    for by_request in states:
        working: dict[str, set[str]] = defaultdict(set)
        for rid, state in by_request.items():
            for wid in working_in(state):
                working[wid].add(rid)
        for wid, rids in working.items():
            if len(rids) > 1:
                requests_of[wid] |= rids
    return [
        Finding("double_booked", ", ".join(sorted(rids)), wid)
        for wid, rids in sorted(requests_of.items())
        if len(rids) > 1
    ]


def over_filled(
    hires: Iterable[ev.HireRequested],
    events: Sequence[ev.RequestEvent],
    states: Iterable[Mapping[str, RequestState]] = (),
) -> list[Finding]:
    """Requests with more distinct assigned workers than their headcount."""
    headcount = {h.request_id: h.headcount for h in hires}
    for e in events:
        if isinstance(e, ev.WorkerAssigned):
            headcount.setdefault(e.request_id, e.headcount)
    workers = assignments(events)
    for by_request in states:
        for rid, state in by_request.items():
            headcount.setdefault(rid, state.job.headcount)
            workers[rid] |= accepted_in(state)
    return [
        Finding("over_filled", rid, detail=f"{len(ws)} assigned, {headcount[rid]} wanted")
        for rid, ws in sorted(workers.items())
        if rid in headcount and len(ws) > headcount[rid]
    ]


def contradictory(events: Iterable[ev.RequestEvent]) -> list[Finding]:
    """Requests that ended in two different ways."""
    return [
        Finding("contradictory", rid, detail=" and ".join(sorted(kinds)))
        for rid, kinds in sorted(terminal_types(events).items())
        if len(kinds) > 1
    ]


def unaccepted(
    events: Iterable[ev.RequestEvent], responses: Iterable[ev.OfferAccepted | ev.OfferDeclined]
) -> list[Finding]:
    """Assignments no worker's acceptance backs."""
    accepted = {(r.offer_id, r.worker_id) for r in responses if isinstance(r, ev.OfferAccepted)}
    return [
        Finding("unaccepted", e.request_id, e.worker_id, f"offer {e.offer_id}")
        for e in events
        if isinstance(e, ev.WorkerAssigned) and (e.offer_id, e.worker_id) not in accepted
    ]


def audit(
    log: Log,
    store: Mapping[str, Stored],
    *,
    now_ms: int,
    grace_ms: int = 0,
    markets: Collection[str] | None = None,
    acknowledged: Collection[str] | None = None,
) -> Report:
    """Every check over the log and the store."""
    # A request whose outbox is pending is being announced: it is counted, not judged.
    states = {
        "store": {rid: s.state for rid, s in store.items() if not s.pending},
        "request-state topic": latest_states(log.states),
    }
    missing, still_open = lost(
        log.hires,
        log.events,
        now_ms=now_ms,
        grace_ms=grace_ms,
        markets=markets,
        acknowledged=acknowledged,
    )
    findings = [
        *missing,
        *unannounced(states, log.events, log.offers),
        *double_booked(log.events, states.values()),
        *over_filled(log.hires, log.events, states.values()),
        *contradictory(log.events),
        *unaccepted(log.events, log.responses),
    ]
    counts = {k: 0 for k in VIOLATIONS}
    for f in findings:
        counts[f.kind] += 1
    requests = {h.request_id for h in log.hires}
    return Report(
        requests=len(requests),
        ended=len(requests & terminal_types(log.events).keys()),
        open=still_open,
        pending_outboxes=sum(1 for s in store.values() if s.pending),
        unreadable=log.unreadable,
        findings=tuple(findings),
        counts=counts,
    )


# --- the readers --------------------------------------------------------------------------------

TOPICS: Final = (HIRE_REQUESTS, OFFERS, OFFER_RESPONSES, REQUEST_EVENTS, REQUEST_STATE)


async def read_topics(
    bootstrap: str, topics: Sequence[str] = TOPICS, timeout_s: float = READ_TIMEOUT_S
) -> dict[str, list[bytes]]:
    """Every record value of the topics, from the start of their history to the end offsets
    found when the read starts (a missing topic reads as empty)."""
    parts = await partitions(bootstrap, topics)
    out: dict[str, list[bytes]] = {t: [] for t in topics}
    if not parts:
        return out
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        await _read_to(consumer, ends, out, time.monotonic() + timeout_s)
        return out
    finally:
        await consumer.stop()


async def _read_to(
    consumer: AIOKafkaConsumer,
    ends: Mapping[TopicPartition, int],
    out: dict[str, list[bytes]],
    deadline: float,
) -> None:
    behind = {tp for tp, end in ends.items() if end > 0}
    while behind:
        if time.monotonic() > deadline:
            raise TimeoutError(f"could not read {len(behind)} partitions to their end")
        batch = await consumer.getmany(*behind, timeout_ms=500, max_records=20_000)
        for tp, records in batch.items():
            out[tp.topic] += [r.value for r in records if r.offset < ends[tp] and r.value]
        behind = {tp for tp in behind if await consumer.position(tp) < ends[tp]}


def decode_all(adapter: TypeAdapter[T], values: Iterable[bytes]) -> tuple[list[T], int]:
    """The values the adapter takes, and how many it refused."""
    good: list[T] = []
    bad = 0
    for v in values:
        try:
            good.append(adapter.validate_json(v))
        except ValidationError:
            bad += 1
    return good, bad


def decode_log(raw: Mapping[str, Sequence[bytes]]) -> Log:
    """The topics' records as a ``Log``."""
    hires, b1 = decode_all(ev.HIRE_INBOUND, raw.get(HIRE_REQUESTS, ()))
    events, b2 = decode_all(ev.REQUEST_EVENT, raw.get(REQUEST_EVENTS, ()))
    offers, b3 = decode_all(ev.OFFER_EVENT, raw.get(OFFERS, ()))
    responses, b4 = decode_all(ev.OFFER_RESPONSE, raw.get(OFFER_RESPONSES, ()))
    states, b5 = decode_all(ev.REQUEST_STATE_SAVED, raw.get(REQUEST_STATE, ()))
    return Log(
        hires=tuple(h for h in hires if isinstance(h, ev.HireRequested)),
        events=tuple(events),
        offers=tuple(offers),
        responses=tuple(responses),
        states=tuple(states),
        unreadable=b1 + b2 + b3 + b4 + b5,
    )


async def read_log(bootstrap: str, timeout_s: float = READ_TIMEOUT_S) -> Log:
    return decode_log(await read_topics(bootstrap, TOPICS, timeout_s))


async def read_store(redis: AnyRedis, keys: Keys) -> dict[str, Stored]:
    """Every request hash under the keys' prefix (on one Redis or every node of a cluster)."""
    found = [k async for k in redis.scan_iter(match=keys.request_pattern(), count=1000)]
    out: dict[str, Stored] = {}
    for i in range(0, len(found), 500):
        chunk = [_text(k) for k in found[i : i + 500]]
        batch = await nodes_of(redis).batch()
        for k in chunk:
            batch.on(k).hmget(k, "v", "s", "o")
        for k, (v, s, o) in zip(chunk, await batch.execute(), strict=True):
            if v is not None and s is not None:
                out[keys.request_id(k)] = Stored(int(v), load_state(s), o is not None)
    return out


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def run(
    bootstrap: str,
    redis_url: str,
    prefix: str,
    *,
    pg_dsn: str | None = None,
    grace_s: float = 60.0,
    acknowledged: Collection[str] | None = None,
) -> Report:
    """Read everything and audit it."""
    markets = None
    if pg_dsn:
        from infra import pg

        markets = set(await pg.market_places(pg_dsn))
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        store = await read_store(redis, Keys(prefix))
    finally:
        await redis.aclose()
    log = await read_log(bootstrap)
    now = int(time.time() * 1000)
    return audit(
        log,
        store,
        now_ms=now,
        grace_ms=int(grace_s * 1000),
        markets=markets,
        acknowledged=acknowledged,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m infra.audit``."""
    from infra.settings import Settings

    defaults = Settings()
    p = argparse.ArgumentParser(
        prog="python -m infra.audit",
        description="Read the log and the request store; count lost, unannounced, "
        "double-booked, over-filled, contradictory and unaccepted requests. Exit status 1 "
        "if any is found.",
    )
    p.add_argument("--bootstrap", default=defaults.kafka_bootstrap, help="Kafka bootstrap")
    p.add_argument("--redis", default=defaults.redis_url, help="Redis URL")
    p.add_argument("--prefix", default=defaults.key_prefix, help="the services' key prefix")
    p.add_argument("--pg-dsn", default=None, help="market registry: skip unknown markets")
    p.add_argument(
        "--grace-s",
        type=float,
        default=60.0,
        help="a request without a terminal event counts as lost this long after its "
        "deadline (60); before that it is open",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    run_cli("audit", lambda: _audit(args))


def _audit(args: argparse.Namespace) -> int:
    report = asyncio.run(
        run(args.bootstrap, args.redis, args.prefix, pg_dsn=args.pg_dsn, grace_s=args.grace_s)
    )
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(report.table(f"audit of {args.bootstrap} / {args.redis} prefix {args.prefix}"))
    return 0 if report.clean else 1


if __name__ == "__main__":
    main()
