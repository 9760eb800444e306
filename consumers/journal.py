"""The dispatcher's journal builder: core inputs to and from their journal form, and one
``DispatchBatch`` per non-empty batch of an instance (the wire format is ``schemas.journal``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from dispatch.model import Answer, Cancel, Input, Job, JobStep, NewJob, Policy, Tick
from infra.publish import Outgoing
from schemas.journal import (
    AnswerTaken,
    AnyTaken,
    CancelTaken,
    DispatchBatch,
    JobStepTaken,
    JobTaken,
    PolicyRecord,
    TickTaken,
)
from schemas.topics import DISPATCH_JOURNAL


def taken(item: Input) -> AnyTaken:
    """The journal form of a core input."""
    match item:
        case NewJob(job):
            return JobTaken(**{f: getattr(job, f) for f in Job.__dataclass_fields__})
        case Answer(rid, oid, wid, accepted):
            return AnswerTaken(request_id=rid, offer_id=oid, worker_id=wid, accepted=accepted)
        case Cancel(rid, market):
            return CancelTaken(request_id=rid, market_id=market)
        case JobStep(rid, wid, step, by, reason, market):
            return JobStepTaken(
                request_id=rid, worker_id=wid, step=step, by=by, reason=reason, market_id=market
            )
        case Tick(rid):
            return TickTaken(request_id=rid)
    raise TypeError(f"not a core input: {item!r}")


def to_input(t: AnyTaken) -> Input:
    """The core input a journal entry stands for."""
    match t:
        case JobTaken():
            return NewJob(Job(**t.model_dump(exclude={"k"})))
        case AnswerTaken():
            return Answer(t.request_id, t.offer_id, t.worker_id, t.accepted)
        case CancelTaken():
            return Cancel(t.request_id, t.market_id)
        case JobStepTaken():
            return JobStep(t.request_id, t.worker_id, t.step, t.by, t.reason, t.market_id)
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
