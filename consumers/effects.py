"""Translate the core's decisions into wire messages. Event ids are derived, never random,
so a redelivered input republishes the same ids and downstream consumers deduplicate.

The values come from the core, never from outside, so the models are built without
validation (``model_construct``): validating them again cost about a tenth of a decision. A
unit test validates what this module builds against the topics' schemas."""

from __future__ import annotations

from consumers.runtime import Outgoing
from dispatch import model as m
from schemas import events as ev
from schemas.topics import OFFERS, REQUEST_EVENTS


def offer_made(job: m.Job, o: m.Offer) -> Outgoing:
    msg = ev.OfferMade.model_construct(
        event_id=f"om:{o.offer_id}",
        at_ms=o.made_at_ms,
        offer_id=o.offer_id,
        request_id=job.request_id,
        worker_id=o.worker_id,
        market_id=job.market_id,
        skill=job.skill,
        wage_yuan_per_day=job.wage_yuan_per_day,
        lon=job.lon,
        lat=job.lat,
        distance_km=o.distance_km,
        score=o.score,
        wave=o.wave,
        expires_at_ms=o.expires_at_ms,
    )
    return Outgoing(OFFERS, o.worker_id, msg)


def offer_withdrawn(job: m.Job, w: m.Withdrawal, now_ms: int) -> Outgoing:
    msg = ev.OfferWithdrawn.model_construct(
        event_id=f"ow:{w.offer.offer_id}:{w.reason}",
        at_ms=now_ms,
        offer_id=w.offer.offer_id,
        request_id=job.request_id,
        worker_id=w.offer.worker_id,
        reason=w.reason,  # type: ignore[arg-type]
    )
    return Outgoing(OFFERS, w.offer.worker_id, msg)


def happened(state: m.RequestState, h: m.Happened, now_ms: int) -> Outgoing:
    """A lifecycle event on the request-events topic."""
    rid, job = state.job.request_id, state.job
    msg: ev.Message
    match h:
        case m.WaveSent(wave, radius, notes):
            cands = tuple(
                ev.CandidateNote.model_construct(
                    worker_id=n.worker_id,
                    distance_km=n.distance_km,
                    score=n.score,
                    outcome=n.outcome,  # type: ignore[arg-type]
                )
                for n in notes
            )
            msg = ev.WaveSent.model_construct(
                event_id=f"ws:{rid}:{wave}:{radius}:{now_ms}",
                at_ms=now_ms,
                request_id=rid,
                wave=wave,
                radius_km=radius,
                candidates=cands,
            )
        case m.RadiusWidened(radius):
            msg = ev.RadiusWidened.model_construct(
                event_id=f"rw:{rid}:{radius}", at_ms=now_ms, request_id=rid, radius_km=radius
            )
        case m.WorkerAssigned(worker_id, offer_id, assigned):
            msg = ev.WorkerAssigned.model_construct(
                event_id=f"wa:{offer_id}",
                at_ms=now_ms,
                request_id=rid,
                worker_id=worker_id,
                offer_id=offer_id,
                assigned=assigned,
                headcount=job.headcount,
            )
        case m.RequestFilled(offers_made):
            msg = ev.RequestFilled.model_construct(
                event_id=f"rf:{rid}",
                at_ms=now_ms,
                request_id=rid,
                headcount=job.headcount,
                offers_made=offers_made,
            )
        case m.RequestExpired(assigned, offers_made):
            msg = ev.RequestExpired.model_construct(
                event_id=f"re:{rid}",
                at_ms=now_ms,
                request_id=rid,
                assigned=assigned,
                headcount=job.headcount,
                offers_made=offers_made,
            )
        case m.RequestCancelled(assigned):
            msg = ev.RequestCancelled.model_construct(
                event_id=f"rc:{rid}", at_ms=now_ms, request_id=rid, assigned=assigned
            )
    return Outgoing(REQUEST_EVENTS, rid, msg)


def rejected(request_id: str, reason: str, now_ms: int) -> Outgoing:
    msg = ev.RequestRejected.model_construct(
        event_id=f"rr:{request_id}", at_ms=now_ms, request_id=request_id, reason=reason
    )
    return Outgoing(REQUEST_EVENTS, request_id, msg)
