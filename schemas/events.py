"""Versioned message models (schema version 1), validated strictly at the edge.

Every message carries ``v`` (schema version), ``type`` (the discriminator), ``event_id``
(consumers deduplicate on it) and ``at_ms`` (when it happened, epoch milliseconds). Times are
integer epoch milliseconds: cheap to parse on the hot path and exact under replay.

Every field is bounded here, whatever its producer: floats are finite (a NaN would be written
back as ``null`` and break every later read), strings and tuples have a maximum length, and
times lie between 1970 and 2100. What depends on the reader's clock (a message from the
future, a deadline days ahead) cannot be a schema rule: ``time_problem`` checks it, and the
consumers call it at their edge.
"""

from __future__ import annotations

from dataclasses import dataclass
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


# Absolute sanity bound of every time field: 2100-01-01T00:00:00Z. Anything later is a bug or
# an attack (deadline_at_ms = 2**63 - 1 overflowed readers in other languages).
EPOCH_MS_MAX: Final = 4_102_444_800_000
TEXT_MAX: Final = 200  # notes and reasons a person reads
CONTACT_MAX: Final = 60  # a phone number or a desk
NAME_MAX: Final = 100  # a market's name

# The enum is given to JSON Schema (OpenAPI, AsyncAPI) while the validator keeps its message.
Skill = Annotated[
    str, AfterValidator(_known_skill), Field(max_length=40, json_schema_extra={"enum": SKILLS})
]
ID_PATTERN: Final = r"^[A-Za-z0-9_.:\-]+$"
ID_MAX: Final = 140
Id = Annotated[str, Field(min_length=1, max_length=ID_MAX, pattern=ID_PATTERN)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Lon = Annotated[float, Field(ge=LON_MIN, le=LON_MAX, allow_inf_nan=False)]
Lat = Annotated[float, Field(ge=LAT_MIN, le=LAT_MAX, allow_inf_nan=False)]
Km = Annotated[float, Field(ge=0, le=1000, allow_inf_nan=False)]
Score = Annotated[float, Field(ge=-1e9, le=1e9, allow_inf_nan=False)]
EpochMs = Annotated[int, Field(ge=0, lt=EPOCH_MS_MAX)]
Count = Annotated[int, Field(ge=0, le=1_000_000)]


class Message(BaseModel):
    """Common envelope of every message."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

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
    wage_yuan_per_day: float = Field(gt=0, le=5000, allow_inf_nan=False)
    lon: Lon | None = None
    lat: Lat | None = None
    start_at_ms: EpochMs
    deadline_at_ms: EpochMs
    note: str = Field("", max_length=TEXT_MAX)
    contact: str = Field("", max_length=CONTACT_MAX)
    address: str = Field("", max_length=TEXT_MAX)

    @model_validator(mode="after")
    def _coherent(self) -> HireRequested:
        if (self.lon is None) != (self.lat is None):
            raise ValueError("give both lon and lat, or neither (the market's place is used)")
        if self.deadline_at_ms <= self.at_ms:
            raise ValueError("deadline_at_ms must be after at_ms")
        return self


JobStepName = Literal["arrived", "done", "no_show", "cancelled"]
# The steps that end a job and return its worker to the pool.
JOB_ENDS: Final = frozenset({"done", "no_show", "cancelled"})
Reporter = Literal["station", "worker"]


class JobReported(Message):
    """A hired worker's job moved on, as the station or the worker reports it: they arrived,
    the job is done, they never came (``no_show``), or the station cancelled it. A worker may
    report only ``arrived`` and ``done``."""

    type: Literal["JobReported"] = "JobReported"
    request_id: Id
    worker_id: Id
    market_id: Id
    step: JobStepName
    by: Reporter
    reason: str = Field("", max_length=TEXT_MAX)


class HireCancelled(Message):
    """The kiosk withdraws its request; live offers are withdrawn."""

    type: Literal["HireCancelled"] = "HireCancelled"
    request_id: Id
    market_id: Id
    reason: str = Field("", max_length=TEXT_MAX)


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
    reason: str = Field("", max_length=TEXT_MAX)


# --- offers topic (key: worker id) ---------------------------------------------------------


class OfferMade(Message):
    """An offer pushed to one worker; it lapses at ``expires_at_ms``."""

    type: Literal["OfferMade"] = "OfferMade"
    offer_id: Id
    request_id: Id
    worker_id: Id
    market_id: Id
    skill: Skill
    wage_yuan_per_day: float = Field(gt=0, le=5000, allow_inf_nan=False)
    lon: Lon
    lat: Lat
    distance_km: Km
    score: Score
    wave: Count
    expires_at_ms: EpochMs
    # What the worker decides on (absent in offers made before they existed).
    note: str = Field("", max_length=TEXT_MAX)
    start_at_ms: EpochMs | None = None
    headcount: int = Field(1, ge=1, le=50)
    market_name_zh: str = Field("", max_length=NAME_MAX)
    market_name_en: str = Field("", max_length=NAME_MAX)
    address: str = Field("", max_length=TEXT_MAX)


class Hired(Message):
    """The worker got the job: everything they need to get there and start."""

    type: Literal["Hired"] = "Hired"
    offer_id: Id
    request_id: Id
    worker_id: Id
    market_id: Id
    market_name_zh: str = Field("", max_length=NAME_MAX)
    market_name_en: str = Field("", max_length=NAME_MAX)
    address: str = Field("", max_length=TEXT_MAX)
    skill: Skill
    wage_yuan_per_day: float = Field(gt=0, le=5000, allow_inf_nan=False)
    start_at_ms: EpochMs
    note: str = Field("", max_length=TEXT_MAX)
    contact: str = Field("", max_length=CONTACT_MAX)
    headcount: int = Field(ge=1, le=50)
    others: int = Field(ge=0, le=49, description="how many other workers are coming")
    lon: Lon
    lat: Lat


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

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    worker_id: Id
    distance_km: Km
    score: Score
    outcome: Literal["offered", "taken", "already_offered", "not_needed"]


class WaveSent(Message):
    """A wave of offers, with every candidate considered and the reason for each."""

    type: Literal["WaveSent"] = "WaveSent"
    request_id: Id
    wave: Count
    radius_km: Km
    candidates: tuple[CandidateNote, ...] = Field(max_length=2000)


class RadiusWidened(Message):
    type: Literal["RadiusWidened"] = "RadiusWidened"
    request_id: Id
    radius_km: Km


class WorkerAssigned(Message):
    type: Literal["WorkerAssigned"] = "WorkerAssigned"
    request_id: Id
    worker_id: Id
    offer_id: Id
    assigned: Count
    headcount: Count


class RequestFilled(Message):
    type: Literal["RequestFilled"] = "RequestFilled"
    request_id: Id
    headcount: Count
    offers_made: Count


class RequestExpired(Message):
    type: Literal["RequestExpired"] = "RequestExpired"
    request_id: Id
    assigned: Count
    headcount: Count
    offers_made: Count


class RequestCancelled(Message):
    type: Literal["RequestCancelled"] = "RequestCancelled"
    request_id: Id
    assigned: Count


class JobChanged(Message):
    """A hired worker's job moved on; ``done``, ``no_show`` and ``cancelled`` end it and
    return the worker to the pool."""

    type: Literal["JobChanged"] = "JobChanged"
    request_id: Id
    worker_id: Id
    offer_id: Id
    status: JobStepName
    by: Reporter
    reason: str = Field("", max_length=TEXT_MAX)


class RequestRejected(Message):
    """The request could not be taken (unknown market, bad input); ``reason`` says why."""

    type: Literal["RequestRejected"] = "RequestRejected"
    request_id: Id
    reason: str = Field(max_length=1000)


# --- bounds relative to the reader's clock --------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimeBounds:
    """How far ahead of the reader's clock a message's times may lie.

    ``skew_ms``: a message's ``at_ms`` may be this far in the future (clocks of producers
    differ a little). ``horizon_ms``: a start or deadline may be this far ahead of now.
    """

    skew_ms: int = 5 * 60_000
    horizon_ms: int = 24 * 3600_000


DEFAULT_TIME_BOUNDS: Final = TimeBounds()


def time_problem(
    msg: BaseModel, now_ms: int, bounds: TimeBounds = DEFAULT_TIME_BOUNDS
) -> str | None:
    """Why ``msg``'s times are unacceptable at ``now_ms``, or None when they are fine.

    A pure check the consumers call at their edge; the schema itself only bounds times
    absolutely (``EPOCH_MS_MAX``), since a model cannot know the reader's clock.
    """
    at = getattr(msg, "at_ms", None)
    if isinstance(at, int) and at > now_ms + bounds.skew_ms:
        return f"at_ms is {at - now_ms} ms in the future (at most {bounds.skew_ms} allowed)"
    for name in ("start_at_ms", "deadline_at_ms"):
        value = getattr(msg, name, None)
        if isinstance(value, int) and value > now_ms + bounds.horizon_ms:
            return f"{name} is more than {bounds.horizon_ms // 1000} s ahead"
    return None


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


DEAD_LETTER_REASON_MAX: Final = 1000
DEAD_LETTER_HEAD_MAX: Final = 4096


class DeadLetter(BaseModel):
    """A message a consumer could not take, with the reason. Bounded whatever the message, so a
    dead letter can always be published: ``payload`` is the head of the original bytes (decoded
    with replacement characters), ``payload_bytes`` and ``payload_sha256`` describe the whole
    (absent in letters written before they existed)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = 1
    type: Literal["DeadLetter"] = "DeadLetter"
    at_ms: EpochMs
    consumer: str = Field(max_length=100)
    source_topic: str = Field(max_length=249)  # Kafka's own limit on topic names
    partition: int
    offset: int
    key: str | None = Field(max_length=DEAD_LETTER_HEAD_MAX)
    reason: str = Field(max_length=DEAD_LETTER_REASON_MAX)
    payload: str = Field(max_length=DEAD_LETTER_HEAD_MAX)
    payload_bytes: int | None = Field(None, ge=0)
    payload_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")


HireInbound = Annotated[HireRequested | HireCancelled | JobReported, Field(discriminator="type")]
WorkerEvent = Annotated[
    WorkerCheckedIn | WorkerLocated | WorkerWentOffline, Field(discriminator="type")
]
OfferResponse = Annotated[OfferAccepted | OfferDeclined, Field(discriminator="type")]
OfferEvent = Annotated[OfferMade | OfferWithdrawn | Hired, Field(discriminator="type")]
RequestEvent = Annotated[
    WaveSent
    | RadiusWidened
    | WorkerAssigned
    | RequestFilled
    | RequestExpired
    | RequestCancelled
    | JobChanged
    | RequestRejected,
    Field(discriminator="type"),
]

HIRE_INBOUND: Final[TypeAdapter[HireRequested | HireCancelled | JobReported]] = TypeAdapter(
    HireInbound
)
WORKER_EVENT: Final[TypeAdapter[WorkerCheckedIn | WorkerLocated | WorkerWentOffline]] = TypeAdapter(
    WorkerEvent
)
OFFER_RESPONSE: Final[TypeAdapter[OfferAccepted | OfferDeclined]] = TypeAdapter(OfferResponse)
OFFER_EVENT: Final[TypeAdapter[OfferMade | OfferWithdrawn | Hired]] = TypeAdapter(OfferEvent)
REQUEST_EVENT: Final[TypeAdapter[RequestEvent]] = TypeAdapter(RequestEvent)
DEAD_LETTER: Final[TypeAdapter[DeadLetter]] = TypeAdapter(DeadLetter)
REQUEST_STATE_SAVED: Final[TypeAdapter[RequestStateSaved]] = TypeAdapter(RequestStateSaved)


# --- operator-actions topic (key: the dead letter's id) ------------------------------------

LETTER_ID_PATTERN: Final = r"^\d{1,9}:\d{1,19}:\d{1,19}$"  # partition:offset:record time (ms)


class DeadLetterRequeued(Message):
    """An operator put a dead letter's message back on its source topic, byte for byte and
    with its original key: who, which letter (``letter_id``: the dead-letter record's
    partition, offset and time), what was sent (size and SHA-256 of the bytes) and where the
    copy landed (``partition``, ``offset`` on ``source_topic``). ``forced`` says the letter
    had been requeued before; ``note`` is the operator's own word on why."""

    type: Literal["DeadLetterRequeued"] = "DeadLetterRequeued"
    operator: Id
    letter_id: str = Field(max_length=60, pattern=LETTER_ID_PATTERN)
    consumer: str = Field(max_length=100)
    reason: str = Field(max_length=DEAD_LETTER_REASON_MAX)  # why it was dead-lettered
    source_topic: str = Field(max_length=249)
    key: str | None = Field(max_length=DEAD_LETTER_HEAD_MAX)
    payload_bytes: int = Field(ge=0)
    payload_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)
    forced: bool = False
    note: str = Field("", max_length=TEXT_MAX)


OPERATOR_ACTION: Final[TypeAdapter[DeadLetterRequeued]] = TypeAdapter(DeadLetterRequeued)
