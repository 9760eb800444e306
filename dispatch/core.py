"""The dispatcher's decisions: pure functions from (state, input, now, policy) to a Decision.

The shell drives a request like this:

1. ``open_request`` makes the state and asks for a search;
2. the shell searches the index, ``plan_wave`` picks whom to offer, the shell holds those
   workers atomically, and ``apply_wave`` turns the ones it got into offers (or widens the
   radius and asks again, or waits);
3. ``on_answer`` takes a worker's accept or decline; ``on_tick`` lapses offers whose window
   passed and expires the request at its deadline; ``on_cancel`` ends it for the kiosk;
4. ``on_job_step`` moves a hired worker's job on (arrived, done, no-show, cancelled), also
   after the request has ended; a job that ends frees its worker.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import replace

from dispatch import lifecycle
from dispatch.model import (
    HIRED,
    WORKING,
    Answer,
    Cancel,
    Candidate,
    CandidateNote,
    Decision,
    Input,
    Job,
    JobChanged,
    JobStep,
    NewJob,
    Offer,
    OfferStatus,
    Policy,
    RadiusWidened,
    RequestCancelled,
    RequestExpired,
    RequestFilled,
    RequestState,
    RequestStatus,
    SearchSpec,
    WaveSent,
    Withdrawal,
    WorkerAssigned,
)
from dispatch.ranking import rank, score


def offer_id_for(request_id: str, worker_id: str) -> str:
    """One offer per worker and request, so its id is derived, never random."""
    return f"{request_id}:{worker_id}"


def search_for(state: RequestState, policy: Policy) -> SearchSpec:
    """The search for the request's current radius step."""
    job = state.job
    radius = policy.radii_km[min(state.radius_step, len(policy.radii_km) - 1)]
    count = max(policy.search_count, 2 * wanted(state, policy))
    return SearchSpec(job.request_id, job.skill, job.lon, job.lat, radius, count)


def wanted(state: RequestState, policy: Policy) -> int:
    """How many new offers the next wave should make."""
    return max(0, math.ceil(state.needed * policy.over_offer))


def open_request(job: Job, now_ms: int, policy: Policy) -> Decision:
    """A new request: search at the first radius, unless its deadline has passed already."""
    state = RequestState(job=job, next_search_at_ms=now_ms)
    if now_ms >= job.deadline_at_ms:
        return _expire(state)
    return Decision(state=state, search=search_for(state, policy))


def fresh_candidates(
    state: RequestState, found: Iterable[Candidate], taken: AbstractSet[str]
) -> list[Candidate]:
    """Candidates best first that may still be offered: not offered this request before, not
    taken by another request (``taken`` is only read, so a caller may pass a live set)."""
    seen = state.offered_workers()
    return [c for c in rank(found) if c.worker_id not in seen and c.worker_id not in taken]


def plan_wave(
    state: RequestState, found: Iterable[Candidate], policy: Policy, taken: AbstractSet[str]
) -> list[Candidate]:
    """The best candidates to hold for the next wave, skipping workers taken or offered."""
    return fresh_candidates(state, found, taken)[: wanted(state, policy)]


def apply_wave(
    state: RequestState,
    found: Sequence[Candidate],
    held: frozenset[str],
    unavailable: frozenset[str],
    now_ms: int,
    policy: Policy,
) -> Decision:
    """Offers to the workers the shell managed to hold; widen or wait when there were none.

    ``unavailable`` names candidates the wave wanted but someone else held first.
    """
    if state.terminal:
        return Decision(state=state, released=tuple(sorted(held)), changed=False)
    radius = search_for(state, policy).radius_km
    ranked = rank(found)
    notes = _notes(state, ranked, held, unavailable)
    made = tuple(_offer(state, c, now_ms, policy) for c in ranked if c.worker_id in held)
    if not made:
        return _widen_or_wait(state, radius, notes, now_ms, policy)
    new = replace(state.with_offers({}, made), wave=state.wave + 1)
    new = replace(new, status=lifecycle.settle_status(new.status, len(new.live)))
    sent = WaveSent(new.wave, radius, notes)
    if new.needed <= 0:
        return Decision(state=new, made=made, happened=(sent,))
    if unavailable:  # others held some of the wanted workers first: look again, same radius
        return Decision(state=new, made=made, happened=(sent,), search=search_for(new, policy))
    # Everyone free in this radius has an offer and more are needed: widen for the rest now.
    rest = _widen_or_wait(new, radius, (), now_ms, policy)
    return replace(rest, made=made, happened=(sent, *rest.happened))


def on_answer(
    state: RequestState, offer_id: str, accepted: bool, now_ms: int, policy: Policy
) -> Decision:
    """A worker's accept or decline. Late or repeated answers change nothing."""
    offer = state.offer(offer_id)
    if offer is not None and offer.status is OfferStatus.MADE and now_ms >= offer.expires_at_ms:
        return on_tick(state, now_ms, policy)  # the window passed before the answer came
    if offer is None or offer.status is not OfferStatus.MADE:
        return _late_answer(state, offer, accepted)
    if accepted:
        return _accept(state, offer, policy)
    declined = replace(offer, status=lifecycle.next_offer_status(offer.status, "decline"))
    new = state.with_offers({offer_id: declined})
    new = replace(new, status=lifecycle.settle_status(new.status, len(new.live)))
    search = search_for(new, policy) if new.needed > 0 else None
    return Decision(state=new, released=(offer.worker_id,), search=search)


def on_tick(state: RequestState, now_ms: int, policy: Policy) -> Decision:
    """Time passes: expire the request at its deadline, lapse offers past their window."""
    if state.terminal:
        return Decision(state=state, changed=False)
    if now_ms >= state.job.deadline_at_ms:
        return _expire(state)
    lapsed = [o for o in state.live if now_ms >= o.expires_at_ms]
    changed = {o.offer_id: _moved(o, "lapse") for o in lapsed}
    new = state.with_offers(changed)
    new = replace(new, status=lifecycle.settle_status(new.status, len(new.live)))
    retry = new.needed > 0 and (bool(lapsed) or now_ms >= new.next_search_at_ms)
    return Decision(
        state=new,
        withdrawn=tuple(Withdrawal(o, "expired") for o in lapsed),
        released=tuple(o.worker_id for o in lapsed),
        search=search_for(new, policy) if retry else None,
        changed=bool(lapsed) or retry,
    )


def on_cancel(state: RequestState) -> Decision:
    """The kiosk withdraws the request; every live offer is withdrawn."""
    if state.terminal:
        return Decision(state=state, changed=False)
    new, withdrawn = _withdraw_live(state, "cancelled")
    new = replace(new, status=lifecycle.next_request_status(state.status, "cancel"))
    return Decision(
        state=new,
        withdrawn=withdrawn,
        released=tuple(w.offer.worker_id for w in withdrawn),
        happened=(RequestCancelled(assigned=new.assigned),),
    )


def on_job_step(state: RequestState, item: JobStep) -> Decision:
    """A hired worker's job moves on. A repeat (or ``arrived`` once the job is done) changes
    nothing; a step the job's table or its reporter may not take is refused."""
    if item.market_id is not None and item.market_id != state.job.market_id:
        return refuse(state, REFUSED_FOREIGN_JOB_STEP)
    if item.step not in lifecycle.JOB_STEPS_BY.get(item.by, frozenset()):
        return refuse(state, f"refused: a {item.by} may not report {item.step!r}")
    offer = next(
        (o for o in state.offers if o.worker_id == item.worker_id and o.status in HIRED), None
    )
    if offer is None:
        return refuse(state, f"refused: {item.worker_id} was not hired for this request")
    passed = item.step == "arrived" and offer.status is OfferStatus.DONE
    if offer.status.value == item.step or passed:
        return Decision(state=state, changed=False)
    try:
        moved = _moved(offer, lifecycle.JOB_TRIGGERS[item.step])
    except lifecycle.IllegalTransition:
        return refuse(state, f"refused: the job is {offer.status}, it cannot become {item.step}")
    changed = JobChanged(offer.worker_id, offer.offer_id, moved.status, item.by, item.reason)
    return Decision(
        state=state.with_offers({offer.offer_id: moved}),
        freed=() if moved.status in WORKING else (offer.worker_id,),
        happened=(changed,),
    )


# --- helpers ---------------------------------------------------------------------------------


def _offer(state: RequestState, c: Candidate, now_ms: int, policy: Policy) -> Offer:
    return Offer(
        offer_id=offer_id_for(state.job.request_id, c.worker_id),
        worker_id=c.worker_id,
        status=OfferStatus.MADE,
        wave=state.wave + 1,
        distance_km=c.distance_km,
        score=score(c),
        made_at_ms=now_ms,
        expires_at_ms=now_ms + policy.offer_ttl_ms,
    )


def _notes(
    state: RequestState,
    ranked: Sequence[Candidate],
    held: frozenset[str],
    unavailable: frozenset[str],
) -> tuple[CandidateNote, ...]:
    seen = state.offered_workers()

    def outcome(worker_id: str) -> str:
        if worker_id in held:
            return "offered"
        if worker_id in seen:
            return "already_offered"
        return "taken" if worker_id in unavailable else "not_needed"

    return tuple(
        CandidateNote(c.worker_id, c.distance_km, score(c), outcome(c.worker_id)) for c in ranked
    )


def _widen_or_wait(
    state: RequestState,
    radius: float,
    notes: tuple[CandidateNote, ...],
    now_ms: int,
    policy: Policy,
) -> Decision:
    happened: tuple[WaveSent | RadiusWidened, ...] = (
        (WaveSent(state.wave, radius, notes),) if notes else ()
    )
    if state.radius_step + 1 < len(policy.radii_km):
        new = replace(state, radius_step=state.radius_step + 1)
        widened = RadiusWidened(policy.radii_km[new.radius_step])
        return Decision(state=new, happened=(*happened, widened), search=search_for(new, policy))
    new = replace(state, next_search_at_ms=now_ms + policy.retry_idle_ms)
    return Decision(state=new, happened=happened)


def _accept(state: RequestState, offer: Offer, policy: Policy) -> Decision:
    accepted = _moved(offer, "accept")
    new = state.with_offers({offer.offer_id: accepted})
    assigned = WorkerAssigned(offer.worker_id, offer.offer_id, new.assigned)
    if new.assigned < new.job.headcount:
        new = replace(new, status=lifecycle.settle_status(new.status, len(new.live)))
        search = search_for(new, policy) if new.needed > 0 and not new.live else None
        return Decision(state=new, assigned=(offer.worker_id,), happened=(assigned,), search=search)
    new, withdrawn = _withdraw_live(new, "filled")
    new = replace(new, status=lifecycle.next_request_status(RequestStatus.OFFERING, "filled"))
    return Decision(
        state=new,
        assigned=(offer.worker_id,),
        withdrawn=withdrawn,
        released=tuple(w.offer.worker_id for w in withdrawn),
        happened=(assigned, RequestFilled(offers_made=len(new.offers))),
    )


def _late_answer(state: RequestState, offer: Offer | None, accepted: bool) -> Decision:
    """An answer to an offer that is no longer open: tell an accepting worker it is too late."""
    if offer is None or not accepted or offer.status in HIRED:
        return Decision(state=state, changed=False)
    return Decision(state=state, withdrawn=(Withdrawal(offer, "too_late"),), changed=False)


def _expire(state: RequestState) -> Decision:
    new, withdrawn = _withdraw_live(state, "request_expired")
    new = replace(new, status=lifecycle.next_request_status(state.status, "deadline"))
    return Decision(
        state=new,
        withdrawn=withdrawn,
        released=tuple(w.offer.worker_id for w in withdrawn),
        happened=(RequestExpired(assigned=new.assigned, offers_made=len(new.offers)),),
    )


def _withdraw_live(state: RequestState, reason: str) -> tuple[RequestState, tuple[Withdrawal, ...]]:
    live = state.live
    changed = {o.offer_id: _moved(o, "withdraw") for o in live}
    return state.with_offers(changed), tuple(Withdrawal(o, reason) for o in live)


def _moved(offer: Offer, trigger: str) -> Offer:
    return replace(offer, status=lifecycle.next_offer_status(offer.status, trigger))


# What a repeated request must share with the first to be the same request. Times may differ:
# a kiosk retrying a post stamps it anew.
SAME_JOB = ("market_id", "skill", "headcount", "wage_yuan_per_day", "lon", "lat")
REFUSED_FOREIGN_CANCEL = "refused: cancel from another market"
REFUSED_CONFLICTING_REPEAT = "refused: request id already used for a different request"
REFUSED_FOREIGN_JOB_STEP = "refused: job step from another market"


def refuse(state: RequestState, reason: str) -> Decision:
    """The input is not taken: the state stays as it is and the shell dead-letters the input."""
    return Decision(state=state, changed=False, refused=reason)


def on_repeat(state: RequestState, job: Job) -> Decision | None:
    """A request id seen before: a redelivery is ignored, a different request refused."""
    if all(getattr(job, f) == getattr(state.job, f) for f in SAME_JOB):
        return None
    return refuse(state, REFUSED_CONFLICTING_REPEAT)


def step(state: RequestState | None, item: Input, now_ms: int, policy: Policy) -> Decision | None:
    """One input against the request's state; None when the input does not apply.

    A repeated request (redelivery) and answers to unknown requests or from the wrong worker
    are ignored, so every input may safely arrive twice. A different request under a known id
    and a cancel or job step from another market are refused (``Decision.refused``).
    """
    if isinstance(item, NewJob):
        if state is None:
            return open_request(item.job, now_ms, policy)
        return on_repeat(state, item.job)
    if state is None:
        return None
    if isinstance(item, Answer):
        offer = state.offer(item.offer_id)
        if offer is None or offer.worker_id != item.worker_id:
            return None
        return on_answer(state, item.offer_id, item.accepted, now_ms, policy)
    if isinstance(item, Cancel):
        if item.market_id is not None and item.market_id != state.job.market_id:
            return refuse(state, REFUSED_FOREIGN_CANCEL)
        return on_cancel(state)
    if isinstance(item, JobStep):
        return on_job_step(state, item)
    return on_tick(state, now_ms, policy)
