"""The dispatch journal's wire format: per dispatcher batch, the inputs it took, the clock it
used, its policy.

The dispatcher core is deterministic: the same inputs in the same batches at the same ``now``
give the same decisions. The journal is what makes those three things recorded facts rather
than guesses: each dispatcher instance publishes one ``DispatchBatch`` per non-empty batch
(requests, cancellations, answers, job steps and the timer ticks it took) on
``gig.dispatch-journal.v1``, keyed by instance so an instance's batches stay in order. The
archiver stores it with every other topic; ``replay run`` feeds it back through the same
shell on in-memory twins.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from schemas.events import Message


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
    note: str = ""
    contact: str = ""
    address: str = ""


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


class JobStepTaken(_Frozen):
    """A hired worker's job step, as reported (``market_id``: the reporting station's)."""

    k: Literal["job_step"] = "job_step"
    request_id: str
    worker_id: str
    step: str
    by: str
    reason: str = ""
    market_id: str | None = None


class TickTaken(_Frozen):
    k: Literal["tick"] = "tick"
    request_id: str


Taken = Annotated[
    JobTaken | AnswerTaken | CancelTaken | JobStepTaken | TickTaken, Field(discriminator="k")
]
AnyTaken = JobTaken | AnswerTaken | CancelTaken | JobStepTaken | TickTaken


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
