"""The dispatcher's journal: per batch, the inputs it took, the clock it used, its policy.

The dispatcher core is deterministic: the same inputs in the same batches at the same ``now``
give the same decisions. The journal is what makes those three things recorded facts rather
than guesses: each dispatcher instance publishes one ``DispatchBatch`` per non-empty batch
(requests, cancellations, answers and the timer ticks it took) on ``gig.dispatch-journal.v1``,
keyed by instance so an instance's batches stay in order. The archiver stores it with every
other topic; ``replay run`` feeds it back through the same shell on in-memory twins.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from consumers.runtime import Outgoing
from dispatch.model import Answer, Cancel, Input, Job, NewJob, Policy, Tick
from schemas.events import Message
from schemas.topics import DISPATCH_JOURNAL


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class JobTaken(_Frozen):
    """A new request as the core saw it (place already resolved from the market)."""

    k: Literal["job"] = "job"
    request_id: str
    market_id: str
    skill: str
    headcount: int
    wage_yuan_per_day: float
    lon: float
    lat: float
    requested_at_ms: int
    start_at_ms: int
    deadline_at_ms: int


class AnswerTaken(_Frozen):
    k: Literal["answer"] = "answer"
    request_id: str
    offer_id: str
    worker_id: str
    accepted: bool


class CancelTaken(_Frozen):
    k: Literal["cancel"] = "cancel"
    request_id: str
    market_id: str | None = None  # the market it came from: the core refuses another's


class TickTaken(_Frozen):
    k: Literal["tick"] = "tick"
    request_id: str


Taken = Annotated[JobTaken | AnswerTaken | CancelTaken | TickTaken, Field(discriminator="k")]


class PolicyRecord(_Frozen):
    """The policy the batch ran under, field for field."""

    name: str
    offer_ttl_ms: int
    radii_km: tuple[float, ...]
    over_offer: float
    search_count: int
    retry_idle_ms: int


class DispatchBatch(Message):
    """One dispatcher batch: ``at_ms`` is the ``now`` it handed the core."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)

    type: Literal["DispatchBatch"] = "DispatchBatch"
    instance: str
    seq: int
    policy: PolicyRecord
    inputs: tuple[Taken, ...]


DISPATCH_BATCH: Final = TypeAdapter(DispatchBatch)


def taken(item: Input) -> JobTaken | AnswerTaken | CancelTaken | TickTaken:
    """The journal form of a core input."""
    match item:
        case NewJob(job):
            return JobTaken(**{f: getattr(job, f) for f in Job.__dataclass_fields__})
        case Answer(rid, oid, wid, accepted):
            return AnswerTaken(request_id=rid, offer_id=oid, worker_id=wid, accepted=accepted)
        case Cancel(rid, market):
            return CancelTaken(request_id=rid, market_id=market)
        case Tick(rid):
            return TickTaken(request_id=rid)
    raise TypeError(f"not a core input: {item!r}")


def to_input(t: JobTaken | AnswerTaken | CancelTaken | TickTaken) -> Input:
    """The core input a journal entry stands for."""
    match t:
        case JobTaken():
            return NewJob(Job(**t.model_dump(exclude={"k"})))
        case AnswerTaken():
            return Answer(t.request_id, t.offer_id, t.worker_id, t.accepted)
        case CancelTaken():
            return Cancel(t.request_id, t.market_id)
    return Tick(t.request_id)


def policy_record(p: Policy) -> PolicyRecord:
    return PolicyRecord(
        name=p.name,
        offer_ttl_ms=p.offer_ttl_ms,
        radii_km=p.radii_km,
        over_offer=p.over_offer,
        search_count=p.search_count,
        retry_idle_ms=p.retry_idle_ms,
    )


def policy_of(r: PolicyRecord) -> Policy:
    return Policy(**r.model_dump())


class Journal:
    """Numbers one instance's batches and turns each non-empty one into a journal message."""

    def __init__(self, policy: Policy, instance: str | None = None) -> None:
        self.instance = instance or uuid.uuid4().hex[:12]
        self.policy = policy_record(policy)
        self.seq = 0

    def entry(self, items: Sequence[Input], now_ms: int) -> list[Outgoing]:
        """The batch's journal message, or nothing for an empty batch."""
        if not items:
            return []
        self.seq += 1
        msg = DispatchBatch(
            event_id=f"db:{self.instance}:{self.seq}",
            at_ms=now_ms,
            instance=self.instance,
            seq=self.seq,
            policy=self.policy,
            inputs=tuple(taken(i) for i in items),
        )
        return [Outgoing(DISPATCH_JOURNAL, self.instance, msg)]
