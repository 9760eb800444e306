"""What the gateway does, behind the HTTP routes and the socket: one method per use case.

Every method checks the caller's permission first and publishes only after it passed, so a
refused call never reaches Kafka. Errors are ``AuthError`` (401/403), ``NotFound`` (404),
``Conflict`` (409) and ``Invalid`` (422); the app turns them into responses. Their messages
are generic: they never say whose a request id or an offer is.

Authorisation is enforced where the state lives: a request id is claimed for its market in
Redis, atomically, before anything is published (``PostedRequests.claim``), and a request's
market is read from the dispatcher's state first, the gateway's record second. An offer is
answered at most once (``Answers.claim``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from pydantic import ValidationError

from dispatch import core
from dispatch.model import HIRED, JobStep, OfferStatus, RequestState
from gateway import auth
from gateway.auth import Principal
from gateway.store import Answers, LiveOffers, PostedRequests, RequestHistory, WorkerJobs
from gateway.wire import (
    Accepted,
    AnswerIn,
    AnswerOut,
    Assignment,
    CancelIn,
    CheckInIn,
    HireRequestIn,
    JobStatus,
    JobStepIn,
    JobView,
    RequestView,
    WorkerJobOut,
    WorkerJobStepIn,
)
from infra.decoding import explain
from infra.publish import Outgoing
from infra.redis_index import RedisRequestStore
from schemas import events as ev
from schemas.topics import HIRE_REQUESTS, OFFER_RESPONSES, WORKER_EVENTS

Place = tuple[float, float]
# Fields a repeated post must share with the first one to count as the same request.
SAME_REQUEST = (
    "market_id", "skill", "headcount", "wage_yuan_per_day", "lon", "lat", "note", "contact",
    "address",
)  # fmt: skip
NOT_HIRED = "no such job: that worker was not hired for this request"
REQUEST_ID_IN_USE = "this request id is already in use"
NO_SUCH_REQUEST = "no such request"
ANSWERED = "this offer has been answered already"


class NotFound(Exception):
    """No such request (or nothing the caller may see)."""


class Conflict(Exception):
    """The request id is taken (by another market, or for a different request), or the offer
    has been answered already."""


class Invalid(Exception):
    """Well-formed but not acceptable (an unknown market, incoherent fields)."""


class Sink(Protocol):
    """Where outgoing messages go: Kafka in service, a list in tests."""

    async def publish(self, messages: Sequence[Outgoing]) -> None: ...


@dataclass
class Gateway:
    """The gateway's use cases over its clients (made once, in the app's lifespan)."""

    secret: str
    token_ttl_s: int
    sink: Sink
    offers: LiveOffers
    posted: PostedRequests
    answers: Answers
    history: RequestHistory
    jobs: WorkerJobs
    dispatch_state: RedisRequestStore
    markets: Mapping[str, Place]
    clock: Callable[[], int]

    def who(self, token: str | None) -> Principal:
        """The caller a token names (401 if missing, expired or forged)."""
        return auth.verify_token(self.secret, token)

    def token_for(self, role: auth.Role, subject: str) -> tuple[str, int]:
        """A fresh token and its expiry (epoch seconds); only for a subject that is a valid id
        (``Invalid`` otherwise)."""
        if not auth.valid_subject(subject):
            raise Invalid("not a valid id")
        now_s = self.clock() // 1000
        token = auth.issue_token(self.secret, role, subject, now_s, self.token_ttl_s)
        return token, now_s + self.token_ttl_s

    def station_login(self, market_id: str, key: str) -> tuple[str, int]:
        auth.check_station_key(self.secret, market_id, key)
        return self.token_for("station", market_id)

    # --- kiosks -----------------------------------------------------------------------------

    async def post_request(self, who: Principal, body: HireRequestIn) -> tuple[bool, Accepted]:
        """Send a request on to dispatch; (True, …) the first time, (False, …) on a repeat."""
        auth.may_write_market(who, body.market_id)
        if body.market_id not in self.markets:
            raise Invalid("unknown market")
        msg = self._hire_requested(body)
        claim = await self.posted.claim(msg)
        first = claim.first
        # Another market's id, or this market's id for a different request: the same answer,
        # so a caller learns nothing about whose the id is.
        if first is None or _differs(first, msg):
            raise Conflict(REQUEST_ID_IN_USE)
        # A repeat is sent again: harmless (dispatch takes a request once) and it covers a
        # gateway that stopped between recording the request and publishing it.
        await self.sink.publish([Outgoing(HIRE_REQUESTS, first.request_id, first)])
        new = claim.outcome == "new"
        detail = "posted" if new else "already posted"
        return new, Accepted(request_id=first.request_id, status="submitted", detail=detail)

    def _hire_requested(self, body: HireRequestIn) -> ev.HireRequested:
        at = self.clock()
        try:
            return ev.HireRequested(
                event_id=f"hr:{body.request_id}", at_ms=at, request_id=body.request_id,
                market_id=body.market_id, skill=body.skill, headcount=body.headcount,
                wage_yuan_per_day=body.wage_yuan_per_day, lon=body.lon, lat=body.lat,
                start_at_ms=at + int(body.start_in_min * 60_000),
                deadline_at_ms=at + int(body.deadline_min * 60_000),
                note=body.note, contact=body.contact, address=body.address,
            )  # fmt: skip
        except ValidationError as e:
            raise Invalid(explain(e)) from None

    async def cancel_request(self, who: Principal, request_id: str, body: CancelIn) -> Accepted:
        """Ask dispatch to cancel a request; its live offers are withdrawn there."""
        market = await self._market_of(request_id)
        auth.may_write_market(who, market)
        msg = ev.HireCancelled(
            event_id=f"hc:{request_id}", at_ms=self.clock(), request_id=request_id,
            market_id=market, reason=body.reason,
        )  # fmt: skip
        await self.sink.publish([Outgoing(HIRE_REQUESTS, request_id, msg)])
        return Accepted(request_id=request_id, status="cancelling", detail="cancel sent")

    async def view(self, who: Principal, request_id: str) -> RequestView:
        """Where a request stands and who is coming."""
        if who.role == "worker":
            raise auth.AuthError(403, "a worker may not read requests")
        loaded = await self.dispatch_state.load([request_id])
        state = loaded[request_id][1] if request_id in loaded else None
        posted = await self.posted.get(request_id)
        if state is None and posted is None:
            raise NotFound(NO_SUCH_REQUEST)
        market = state.job.market_id if state else posted.market_id  # type: ignore[union-attr]
        auth.may_read_market(who, market)
        if state is not None:
            return view_of(state)
        assert posted is not None
        return await self._pending_view(posted)

    async def board(self, who: Principal, market_id: str | None, limit: int) -> list[RequestView]:
        """A market's requests posted today (the stations' day), newest first, at most
        ``limit``: a station sees its own market's; a supervisor names the market."""
        market = _board_market(who, market_id)
        ids = await self.posted.of_day(market, self.clock(), limit)
        loaded = await self.dispatch_state.load(ids)
        out: list[RequestView] = []
        for rid in ids:
            if rid in loaded:
                state = loaded[rid][1]
                if state.job.market_id == market:  # the dispatcher's word on whose it is
                    out.append(view_of(state))
            elif (posted := await self.posted.get(rid)) is not None:
                out.append(await self._pending_view(posted))
        return out

    async def _pending_view(self, posted: ev.HireRequested) -> RequestView:
        rejected = [
            e for e in await self.history.events(posted.request_id)
            if isinstance(e, ev.RequestRejected)
        ]  # fmt: skip
        return RequestView(
            request_id=posted.request_id, market_id=posted.market_id, skill=posted.skill,
            headcount=posted.headcount, status="rejected" if rejected else "submitted",
            assigned=0, assignments=[], offers_out=0, offers_made=0, wave=0,
            deadline_at_ms=posted.deadline_at_ms, reason=rejected[0].reason if rejected else "",
        )  # fmt: skip

    async def report_job(
        self, who: Principal, request_id: str, worker_id: str, body: JobStepIn
    ) -> Accepted:
        """A station reports a hired worker's job: arrived, done, no-show or cancelled."""
        state = await self._state(request_id)
        auth.may_write_market(who, state.job.market_id)
        step = JobStep(request_id, worker_id, body.step, "station", body.reason)
        return await self._job_step(state, step)

    async def worker_job_step(
        self, who: Principal, request_id: str, body: WorkerJobStepIn
    ) -> Accepted:
        """A worker reports their own job: arrived at it, or done."""
        worker_id = auth.must_be_worker(who)
        loaded = await self.dispatch_state.load([request_id])
        if request_id not in loaded:
            raise NotFound(NOT_HIRED)
        step = JobStep(request_id, worker_id, body.step, "worker")
        return await self._job_step(loaded[request_id][1], step)

    async def _job_step(self, state: RequestState, step: JobStep) -> Accepted:
        """Check the step by the dispatcher's own rules, then send it on."""
        if not any(o.worker_id == step.worker_id and o.status in HIRED for o in state.offers):
            raise NotFound(NOT_HIRED)
        decision = core.on_job_step(state, step)
        if decision.refused is not None:
            raise Conflict(decision.refused.removeprefix("refused: "))
        rid, market = state.job.request_id, state.job.market_id
        msg = ev.JobReported(
            event_id=f"jr:{rid}:{step.worker_id}:{step.step}", at_ms=self.clock(),
            request_id=rid, worker_id=step.worker_id, market_id=market, step=step.step,  # type: ignore[arg-type]
            by=step.by, reason=step.reason,  # type: ignore[arg-type]
        )  # fmt: skip
        await self.sink.publish([Outgoing(HIRE_REQUESTS, rid, msg)])
        detail = "already so" if not decision.changed else f"{step.step} sent"
        return Accepted(request_id=rid, status="sent", detail=detail)

    async def _state(self, request_id: str) -> RequestState:
        loaded = await self.dispatch_state.load([request_id])
        if request_id not in loaded:
            raise NotFound(NO_SUCH_REQUEST)
        return loaded[request_id][1]

    async def may_follow(self, who: Principal, request_id: str) -> None:
        """Whether the caller may follow a request's progress (raises if not)."""
        if who.role == "worker":
            raise auth.AuthError(403, "a worker may not follow requests")
        auth.may_read_market(who, await self._market_of(request_id))

    async def _market_of(self, request_id: str) -> str:
        """The request's market: the dispatcher's state is the truth, the claim comes next."""
        loaded = await self.dispatch_state.load([request_id])
        if request_id in loaded:
            return loaded[request_id][1].job.market_id
        posted = await self.posted.get(request_id)
        if posted is not None:
            return posted.market_id
        raise NotFound(NO_SUCH_REQUEST)

    # --- workers ------------------------------------------------------------------------------

    async def live_offers(self, who: Principal, worker_id: str) -> list[ev.OfferMade]:
        auth.may_read_worker(who, worker_id)
        return await self.offers.live(worker_id, self.clock())

    async def worker_jobs(self, who: Principal, worker_id: str) -> list[WorkerJobOut]:
        """The worker's jobs of the last day, newest first, with where each stands."""
        auth.may_read_worker(who, worker_id)
        return [WorkerJobOut(hired=h, status=status) for h, status in await self.jobs.of(worker_id)]

    async def answer(self, who: Principal, body: AnswerIn) -> AnswerOut:
        """Pass a worker's answer on to dispatch, if the offer is theirs and still open."""
        worker_id = auth.must_be_worker(who)
        offer = await self.offers.get(worker_id, body.offer_id, self.clock())
        if offer is None:
            if await self.answers.answered_by(body.offer_id) == worker_id:
                raise Conflict(ANSWERED)
            return AnswerOut(
                type="AnswerRefused", offer_id=body.offer_id, answer=body.type,
                reason="no such open offer of yours (expired, withdrawn or not yours)",
            )  # fmt: skip
        if not await self.answers.claim(offer):
            raise Conflict(ANSWERED)
        answer = self._answer(offer, body)
        try:
            await self.sink.publish([Outgoing(OFFER_RESPONSES, offer.request_id, answer)])
        except BaseException:
            await self.answers.forget(offer.offer_id)  # not passed on: the worker may try again
            raise
        await self.offers.drop(worker_id, offer.offer_id)
        return AnswerOut(type="AnswerSent", offer_id=offer.offer_id, answer=body.type)

    def _answer(self, offer: ev.OfferMade, body: AnswerIn) -> ev.OfferAccepted | ev.OfferDeclined:
        common = {"at_ms": self.clock(), "offer_id": offer.offer_id,
                  "request_id": offer.request_id, "worker_id": offer.worker_id}  # fmt: skip
        if body.type == "accept":
            return ev.OfferAccepted(event_id=f"oa:{offer.offer_id}", **common)  # type: ignore[arg-type]
        return ev.OfferDeclined(event_id=f"od:{offer.offer_id}", reason=body.reason, **common)  # type: ignore[arg-type]

    async def check_in(self, who: Principal, body: CheckInIn) -> None:
        """The worker becomes available at a market's place or at a position."""
        worker_id = auth.must_be_worker(who)
        lon, lat = self._place(body)
        at = self.clock()
        msg = ev.WorkerCheckedIn(
            event_id=f"ci:{worker_id}:{at}", at_ms=at, worker_id=worker_id,
            market_id=body.market_id, lon=lon, lat=lat, skills=body.skills,
        )  # fmt: skip
        await self.sink.publish([Outgoing(WORKER_EVENTS, worker_id, msg)])

    def _place(self, body: CheckInIn) -> Place:
        if body.lon is not None and body.lat is not None:
            return body.lon, body.lat
        if body.market_id is None:
            raise Invalid("give a market_id, or both lon and lat")
        if body.market_id not in self.markets:
            raise Invalid("unknown market")
        return self.markets[body.market_id]

    async def go_offline(self, who: Principal) -> None:
        worker_id = auth.must_be_worker(who)
        at = self.clock()
        msg = ev.WorkerWentOffline(event_id=f"off:{worker_id}:{at}", at_ms=at, worker_id=worker_id)
        await self.sink.publish([Outgoing(WORKER_EVENTS, worker_id, msg)])


def _board_market(who: Principal, market_id: str | None) -> str:
    """Whose board the caller may read: a station its own market's, a supervisor any one it
    names (``Invalid`` if it names none)."""
    if who.role == "worker":
        raise auth.AuthError(403, auth.NOT_ALLOWED)
    market = market_id or (who.subject if who.role == "station" else None)
    if market is None:
        raise Invalid("give market_id: which market's requests")
    auth.may_read_market(who, market)
    return market


def _differs(a: ev.HireRequested, b: ev.HireRequested) -> bool:
    return any(getattr(a, f) != getattr(b, f) for f in SAME_REQUEST)


def view_of(state: RequestState) -> RequestView:
    """The kiosk's view of the dispatcher's request state."""
    job = state.job
    accepted = [o for o in state.offers if o.status in HIRED]
    jobs = [JobView(worker_id=o.worker_id, offer_id=o.offer_id, distance_km=o.distance_km,
                    status=_job_status(o.status)) for o in accepted]  # fmt: skip
    return RequestView(
        request_id=job.request_id, market_id=job.market_id, skill=job.skill,
        headcount=job.headcount, status=state.status.value, assigned=len(accepted),
        assignments=[Assignment(worker_id=o.worker_id, offer_id=o.offer_id,
                                distance_km=o.distance_km) for o in accepted],
        offers_out=len(state.live), offers_made=len(state.offers), wave=state.wave,
        deadline_at_ms=job.deadline_at_ms, jobs=jobs,
    )  # fmt: skip


def _job_status(status: OfferStatus) -> JobStatus:
    return "hired" if status is OfferStatus.ACCEPTED else status.value  # type: ignore[return-value]
