"""Versioned message models (schema version 1), validated strictly at the edge.

Every message carries ``v`` (schema version), ``type`` (the discriminator), ``event_id``
(consumers deduplicate on it) and ``at_ms`` (when it happened, epoch milliseconds). Times are
integer epoch milliseconds: cheap to parse on the hot path and exact under replay.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, model_validator

SKILLS: Final = (
    "bricklayer",
    "carpenter",
    "electrician",
    "plumber",
    "painter",
    "welder",
    "rebar_worker",
    "tiler",
    "general_labourer",
    "mover",
    "cleaner",
    "domestic_helper",
    "caregiver",
    "cook",
    "kitchen_helper",
    "waiter",
    "courier",
    "driver",
    "warehouse_picker",
    "farmhand",
)

# The service area: Hunan spans about 108.8–114.3 °E and 24.6–30.1 °N; a small margin
# keeps border markets valid while rejecting swapped or impossible coordinates.
LON_MIN: Final = 108.3
LON_MAX: Final = 114.8
LAT_MIN: Final = 24.1
LAT_MAX: Final = 30.6


def _known_skill(value: str) -> str:
    if value not in SKILLS:
        raise ValueError(f"unknown skill {value!r}; known skills: {', '.join(SKILLS)}")
    return value


Skill = Annotated[str, AfterValidator(_known_skill)]
Id = Annotated[str, Field(min_length=1, max_length=140, pattern=r"^[A-Za-z0-9_.:\-]+$")]
Lon = Annotated[float, Field(ge=LON_MIN, le=LON_MAX)]
Lat = Annotated[float, Field(ge=LAT_MIN, le=LAT_MAX)]
EpochMs = Annotated[int, Field(ge=0)]


class Message(BaseModel):
    """Common envelope of every message."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    v: Literal[1] = 1
    event_id: Id
    at_ms: EpochMs


# --- hire-requests topic (key: request id) -------------------------------------------------


class HireRequested(Message):
    """A kiosk asks for ``headcount`` workers with ``skill`` at its market."""

    type: Literal["HireRequested"] = "HireRequested"
    request_id: Id
    market_id: Id
    skill: Skill
    headcount: int = Field(ge=1, le=50)
    wage_yuan_per_day: float = Field(gt=0, le=5000)
    lon: Lon | None = None
    lat: Lat | None = None
    start_at_ms: EpochMs
    deadline_at_ms: EpochMs
    note: str = Field("", max_length=200)

    @model_validator(mode="after")
    def _coherent(self) -> HireRequested:
        if (self.lon is None) != (self.lat is None):
            raise ValueError("give both lon and lat, or neither (the market's place is used)")
        if self.deadline_at_ms <= self.at_ms:
            raise ValueError("deadline_at_ms must be after at_ms")
        return self


class HireCancelled(Message):
    """The kiosk withdraws its request; live offers are withdrawn."""

    type: Literal["HireCancelled"] = "HireCancelled"
    request_id: Id
    market_id: Id
    reason: str = Field("", max_length=200)


# --- worker-events topic (key: worker id) --------------------------------------------------


class WorkerCheckedIn(Message):
    """A worker is available at a place with some skills."""

    type: Literal["WorkerCheckedIn"] = "WorkerCheckedIn"
    worker_id: Id
    market_id: Id | None = None
    lon: Lon
    lat: Lat
    skills: tuple[Skill, ...] = Field(min_length=1, max_length=5)


class WorkerLocated(Message):
    """A checked-in worker shares a new position."""

    type: Literal["WorkerLocated"] = "WorkerLocated"
    worker_id: Id
    lon: Lon
    lat: Lat


class WorkerWentOffline(Message):
    """A worker stops taking offers."""

    type: Literal["WorkerWentOffline"] = "WorkerWentOffline"
    worker_id: Id


# --- offer-responses topic (key: request id) -----------------------------------------------


class OfferAccepted(Message):
    type: Literal["OfferAccepted"] = "OfferAccepted"
    offer_id: Id
    request_id: Id
    worker_id: Id


class OfferDeclined(Message):
    type: Literal["OfferDeclined"] = "OfferDeclined"
    offer_id: Id
    request_id: Id
    worker_id: Id
    reason: str = Field("", max_length=200)


# --- offers topic (key: worker id) ---------------------------------------------------------


class OfferMade(Message):
    """An offer pushed to one worker; it lapses at ``expires_at_ms``."""

    type: Literal["OfferMade"] = "OfferMade"
    offer_id: Id
    request_id: Id
    worker_id: Id
    market_id: Id
    skill: Skill
    wage_yuan_per_day: float
    lon: float
    lat: float
    distance_km: float
    score: float
    wave: int
    expires_at_ms: EpochMs


WithdrawReason = Literal["expired", "filled", "cancelled", "request_expired", "too_late"]


class OfferWithdrawn(Message):
    """An offer is no longer open to the worker, and why."""

    type: Literal["OfferWithdrawn"] = "OfferWithdrawn"
    offer_id: Id
    request_id: Id
    worker_id: Id
    reason: WithdrawReason


# --- request-events topic (key: request id) ------------------------------------------------


class CandidateNote(BaseModel):
    """One worker the dispatcher considered, and what it made of them."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    worker_id: Id
    distance_km: float
    score: float
    outcome: Literal["offered", "taken", "already_offered", "not_needed"]


class WaveSent(Message):
    """A wave of offers, with every candidate considered and the reason for each."""

    type: Literal["WaveSent"] = "WaveSent"
    request_id: Id
    wave: int
    radius_km: float
    candidates: tuple[CandidateNote, ...]


class RadiusWidened(Message):
    type: Literal["RadiusWidened"] = "RadiusWidened"
    request_id: Id
    radius_km: float


class WorkerAssigned(Message):
    type: Literal["WorkerAssigned"] = "WorkerAssigned"
    request_id: Id
    worker_id: Id
    offer_id: Id
    assigned: int
    headcount: int


class RequestFilled(Message):
    type: Literal["RequestFilled"] = "RequestFilled"
    request_id: Id
    headcount: int
    offers_made: int


class RequestExpired(Message):
    type: Literal["RequestExpired"] = "RequestExpired"
    request_id: Id
    assigned: int
    headcount: int
    offers_made: int


class RequestCancelled(Message):
    type: Literal["RequestCancelled"] = "RequestCancelled"
    request_id: Id
    assigned: int


class RequestRejected(Message):
    """The request could not be taken (unknown market, bad input); ``reason`` says why."""

    type: Literal["RequestRejected"] = "RequestRejected"
    request_id: Id
    reason: str


# --- dead-letters topic (key: the original key) --------------------------------------------


class RequestStateSaved(BaseModel):
    """One request's saved state on the compacted request-state topic (key: request id).

    Written in the same outbox as the events the state implies, so the log always holds the
    state behind every published decision; Redis's request store is rebuilt from it.
    ``state`` is the store's own JSON encoding (``infra.state_codec``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    v: Literal[1] = 1
    type: Literal["RequestStateSaved"] = "RequestStateSaved"
    request_id: Id
    version: int = Field(ge=1)
    at_ms: EpochMs
    state: str = Field(max_length=1_000_000)


class DeadLetter(BaseModel):
    """A message a consumer could not take, kept whole with the reason."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = 1
    type: Literal["DeadLetter"] = "DeadLetter"
    at_ms: EpochMs
    consumer: str
    source_topic: str
    partition: int
    offset: int
    key: str | None
    reason: str
    payload: str


HireInbound = Annotated[HireRequested | HireCancelled, Field(discriminator="type")]
WorkerEvent = Annotated[
    WorkerCheckedIn | WorkerLocated | WorkerWentOffline, Field(discriminator="type")
]
OfferResponse = Annotated[OfferAccepted | OfferDeclined, Field(discriminator="type")]
OfferEvent = Annotated[OfferMade | OfferWithdrawn, Field(discriminator="type")]
RequestEvent = Annotated[
    WaveSent
    | RadiusWidened
    | WorkerAssigned
    | RequestFilled
    | RequestExpired
    | RequestCancelled
    | RequestRejected,
    Field(discriminator="type"),
]

HIRE_INBOUND: Final[TypeAdapter[HireRequested | HireCancelled]] = TypeAdapter(HireInbound)
WORKER_EVENT: Final[TypeAdapter[WorkerCheckedIn | WorkerLocated | WorkerWentOffline]] = TypeAdapter(
    WorkerEvent
)
OFFER_RESPONSE: Final[TypeAdapter[OfferAccepted | OfferDeclined]] = TypeAdapter(OfferResponse)
OFFER_EVENT: Final[TypeAdapter[OfferMade | OfferWithdrawn]] = TypeAdapter(OfferEvent)
REQUEST_EVENT: Final[TypeAdapter[RequestEvent]] = TypeAdapter(RequestEvent)
DEAD_LETTER: Final[TypeAdapter[DeadLetter]] = TypeAdapter(DeadLetter)
REQUEST_STATE_SAVED: Final[TypeAdapter[RequestStateSaved]] = TypeAdapter(RequestStateSaved)
