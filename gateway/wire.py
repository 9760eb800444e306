"""What the HTTP API and the worker socket accept and return (pydantic, validated at the edge).

The Kafka messages themselves are the models of ``schemas.events``; these are the shapes a
kiosk, a phone or a supervisor sends and receives.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import Hired, Id, JobStepName, Lat, Lon, Skill


class _In(BaseModel):
    # Strict: "3" and true are not numbers (JSON arrays still fill tuples, integers floats).
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class HireRequestIn(_In):
    """A kiosk's instant-hire request. ``request_id`` is chosen by the kiosk: posting the same
    request again is harmless and returns the same request."""

    request_id: Id
    market_id: Id
    skill: Skill
    headcount: int = Field(1, ge=1, le=50)
    wage_yuan_per_day: float = Field(250.0, gt=0, le=5000)
    deadline_min: float = Field(10.0, gt=0, le=24 * 60, description="minutes to fill it")
    lon: Lon | None = None
    lat: Lat | None = None
    note: str = Field("", max_length=200, description="what the workers should know")
    contact: str = Field("", max_length=60, description="the station's phone or desk")
    address: str = Field("", max_length=200, description="where to go, if not the market")
    start_in_min: float = Field(0.0, ge=0, le=23 * 60, description="minutes until work starts")


class JobStepIn(_In):
    """A station's report on a hired worker's job: arrived, done, no-show or cancelled."""

    step: JobStepName
    reason: str = Field("", max_length=200)


class WorkerJobStepIn(_In):
    """A worker's report on their own job: arrived at it, or done."""

    step: Literal["arrived", "done"]


JobStatus = Literal["hired", "arrived", "done", "no_show", "cancelled"]


class JobView(BaseModel):
    """A hired worker's job as the kiosk sees it."""

    worker_id: str
    offer_id: str
    distance_km: float
    status: JobStatus


class WorkerJobOut(BaseModel):
    """One of a worker's jobs: the details they were sent when hired, and where it stands."""

    hired: Hired
    status: JobStatus


class CancelIn(_In):
    reason: str = Field("", max_length=200)


class StationLoginIn(_In):
    """A station's credentials: its market id and its station key."""

    market_id: Id
    key: str = Field(min_length=1, max_length=200)


class DevLoginIn(_In):
    """Development only: any role and subject, no credentials."""

    role: Literal["station", "worker", "supervisor", "operator"]
    subject: Id


class TokenOut(BaseModel):
    token: str
    role: str
    subject: str
    expires_at_s: int


class PrincipalOut(BaseModel):
    role: str
    subject: str


class CheckInIn(_In):
    """A worker becomes available at a market (its place) or at a position, with skills."""

    skills: tuple[Skill, ...] = Field(min_length=1, max_length=5, strict=False)  # a JSON list
    market_id: Id | None = None
    lon: Lon | None = None
    lat: Lat | None = None


class ErrorOut(BaseModel):
    """A refusal: what went wrong, in general words."""

    detail: str


class Accepted(BaseModel):
    """What was sent on to the dispatch service."""

    request_id: str
    status: str
    detail: str = ""


class Assignment(BaseModel):
    worker_id: str
    offer_id: str
    distance_km: float


class RequestView(BaseModel):
    """A request as its kiosk sees it: where it stands and who is coming."""

    request_id: str
    market_id: str
    skill: str
    headcount: int
    status: Literal["submitted", "open", "offering", "filled", "expired", "cancelled", "rejected"]
    assigned: int
    assignments: list[Assignment]
    offers_out: int
    offers_made: int
    wave: int
    deadline_at_ms: int
    reason: str = ""
    jobs: list[JobView] = []


# --- the worker socket --------------------------------------------------------------------


class AnswerIn(_In):
    """A worker's answer to one of their offers, sent on the socket (or posted)."""

    type: Literal["accept", "decline"]
    offer_id: Id
    reason: str = Field("", max_length=200)


class AnswerOut(BaseModel):
    """The gateway's receipt for an answer: passed on to dispatch, or refused and why."""

    type: Literal["AnswerSent", "AnswerRefused"]
    offer_id: str
    answer: str
    reason: str = ""


# --- refusals, for the OpenAPI document -------------------------------------------------------

# What each refusal means in general; a route may say more with ``refused``.
REFUSALS: dict[int, str] = {
    401: "no valid token (missing, expired or forged)",
    403: "the token's role or subject may not do this",
    404: "no such request (or nothing the caller may see)",
    409: "the request id is in use, or the offer has been answered already",
    422: "the input is not valid",
}


class FieldProblem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class Unprocessable(BaseModel):
    """A 422: one sentence (a value the service refused), or each field's problem (the input
    does not fit the request's schema)."""

    detail: str | list[FieldProblem]


def refused(code: int, why: str) -> dict[int | str, dict[str, Any]]:
    """A route's ``responses=`` entry for one refusal: its body and what it means."""
    return {code: {"model": Unprocessable if code == 422 else ErrorOut, "description": why}}


def refusals(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entries of a route for the refusals it can answer, in general words."""
    out: dict[int | str, dict[str, Any]] = {}
    for c in codes:
        out |= refused(c, REFUSALS[c])
    return out
