"""Frozen values the core works on: jobs, offers, request state, candidates and policy."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum


class RequestStatus(StrEnum):
    OPEN = "open"
    OFFERING = "offering"
    FILLED = "filled"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class OfferStatus(StrEnum):
    MADE = "made"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    EXPIRED = "expired"
    WITHDRAWN = "withdrawn"
    # After an accept, the offer is the worker's job: they arrive, then it is done; or they
    # do not come (a no-show), or the station cancels it. Each of the last three frees them.
    ARRIVED = "arrived"
    DONE = "done"
    NO_SHOW = "no_show"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class Policy:
    """How the dispatcher offers work. Times in milliseconds, distances in kilometres."""

    name: str = "greedy"
    offer_ttl_ms: int = 15_000
    radii_km: tuple[float, ...] = (3.0, 6.0, 12.0, 25.0, 50.0)
    over_offer: float = 1.0
    search_count: int = 12
    retry_idle_ms: int = 5_000


@dataclass(frozen=True, slots=True)
class Job:
    """An instant-hire request as the core sees it."""

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
    note: str = ""  # what the employer wrote for the workers
    contact: str = ""  # the station's phone or desk
    address: str = ""  # where to go, when not the market itself


@dataclass(frozen=True, slots=True)
class Offer:
    offer_id: str
    worker_id: str
    status: OfferStatus
    wave: int
    distance_km: float
    score: float
    made_at_ms: int
    expires_at_ms: int


@dataclass(frozen=True, slots=True)
class Candidate:
    """A worker found by a search, with their distance to the job."""

    worker_id: str
    distance_km: float


@dataclass(frozen=True, slots=True)
class SearchSpec:
    """Ask the shell for available workers: ``count`` nearest with ``skill`` in the radius."""

    request_id: str
    skill: str
    lon: float
    lat: float
    radius_km: float
    count: int


@dataclass(frozen=True, slots=True)
class RequestState:
    job: Job
    status: RequestStatus = RequestStatus.OPEN
    radius_step: int = 0
    wave: int = 0
    offers: tuple[Offer, ...] = ()
    next_search_at_ms: int = 0

    @property
    def assigned(self) -> int:
        """Workers hired, whatever their job became since."""
        return sum(1 for o in self.offers if o.status in HIRED)

    @property
    def live(self) -> tuple[Offer, ...]:
        return tuple(o for o in self.offers if o.status is OfferStatus.MADE)

    @property
    def needed(self) -> int:
        """Workers still to find beyond the offers already out."""
        return self.job.headcount - self.assigned - len(self.live)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def offer(self, offer_id: str) -> Offer | None:
        return next((o for o in self.offers if o.offer_id == offer_id), None)

    def offered_workers(self) -> frozenset[str]:
        return frozenset(o.worker_id for o in self.offers)

    def with_offers(self, changed: dict[str, Offer], added: tuple[Offer, ...] = ()) -> RequestState:
        """A copy with some offers replaced (by offer id) and some appended."""
        kept = tuple(changed.get(o.offer_id, o) for o in self.offers)
        return replace(self, offers=kept + added)

    def due_at_ms(self) -> int | None:
        """When the core next wants a tick for this request, or None once it is over."""
        if self.terminal:
            return None
        times = [self.job.deadline_at_ms, *(o.expires_at_ms for o in self.live)]
        if self.needed > 0 and not self.live:
            times.append(self.next_search_at_ms)
        return min(times)


TERMINAL = frozenset({RequestStatus.FILLED, RequestStatus.EXPIRED, RequestStatus.CANCELLED})
# An accepted offer and every status its job can reach: the worker was hired.
HIRED = frozenset(
    {
        OfferStatus.ACCEPTED,
        OfferStatus.ARRIVED,
        OfferStatus.DONE,
        OfferStatus.NO_SHOW,
        OfferStatus.CANCELLED,
    }
)
# A job that still keeps its worker out of the pool.
WORKING = frozenset({OfferStatus.ACCEPTED, OfferStatus.ARRIVED})
# An offer that ended without a hire: its hold was let go.
RELEASED = frozenset({OfferStatus.DECLINED, OfferStatus.EXPIRED, OfferStatus.WITHDRAWN})


# --- what happened, as the core reports it -------------------------------------------------


@dataclass(frozen=True, slots=True)
class CandidateNote:
    worker_id: str
    distance_km: float
    score: float
    outcome: str  # "offered" | "taken" | "already_offered" | "not_needed"


@dataclass(frozen=True, slots=True)
class WaveSent:
    wave: int
    radius_km: float
    notes: tuple[CandidateNote, ...]


@dataclass(frozen=True, slots=True)
class RadiusWidened:
    radius_km: float


@dataclass(frozen=True, slots=True)
class WorkerAssigned:
    worker_id: str
    offer_id: str
    assigned: int


@dataclass(frozen=True, slots=True)
class RequestFilled:
    offers_made: int


@dataclass(frozen=True, slots=True)
class RequestExpired:
    assigned: int
    offers_made: int


@dataclass(frozen=True, slots=True)
class RequestCancelled:
    assigned: int


@dataclass(frozen=True, slots=True)
class JobChanged:
    """A hired worker's job moved on: ``status`` is the offer's new status."""

    worker_id: str
    offer_id: str
    status: OfferStatus
    by: str  # "station" | "worker"
    reason: str


Happened = (
    WaveSent
    | RadiusWidened
    | WorkerAssigned
    | RequestFilled
    | RequestExpired
    | RequestCancelled
    | JobChanged
)


@dataclass(frozen=True, slots=True)
class Withdrawal:
    offer: Offer
    reason: str  # "expired" | "filled" | "cancelled" | "request_expired" | "too_late"


@dataclass(frozen=True, slots=True)
class Decision:
    """What should happen: the new state and the effects the shell carries out.

    ``made`` offers are pushed and their workers stay held; ``withdrawn`` offers are announced
    to their workers; ``released`` workers get their hold dropped and return to the index;
    ``assigned`` workers keep their hold as an assignment; ``freed`` workers' jobs ended, so
    their assignment is dropped and they return to the index; ``search`` asks for candidates.
    ``refused`` says why the input was not taken (the shell dead-letters it); the state is
    then unchanged.
    """

    state: RequestState
    made: tuple[Offer, ...] = ()
    withdrawn: tuple[Withdrawal, ...] = ()
    released: tuple[str, ...] = ()
    assigned: tuple[str, ...] = ()
    freed: tuple[str, ...] = ()
    happened: tuple[Happened, ...] = ()
    search: SearchSpec | None = None
    changed: bool = field(default=True)
    refused: str | None = None


# --- what the core is asked to take ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewJob:
    job: Job


@dataclass(frozen=True, slots=True)
class Answer:
    request_id: str
    offer_id: str
    worker_id: str
    accepted: bool


@dataclass(frozen=True, slots=True)
class Cancel:
    """The kiosk withdraws a request. ``market_id`` is the market the cancel came from: the
    core refuses it when that is not the request's market (None: from a trusted source)."""

    request_id: str
    market_id: str | None = None


@dataclass(frozen=True, slots=True)
class JobStep:
    """A hired worker's job moves on, reported by the station or the worker.

    ``step``: "arrived", "done", "no_show" or "cancelled"; a worker may report only the first
    two. ``market_id``: the reporting station's market (None: a worker or a trusted source).
    """

    request_id: str
    worker_id: str
    step: str
    by: str
    reason: str = ""
    market_id: str | None = None


@dataclass(frozen=True, slots=True)
class Tick:
    request_id: str


Input = NewJob | Answer | Cancel | JobStep | Tick


def request_id_of(item: Input) -> str:
    return item.job.request_id if isinstance(item, NewJob) else item.request_id
