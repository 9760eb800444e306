"""Translate the core's decisions into wire messages. Event ids are derived, never random,
so a redelivered input republishes the same ids and downstream consumers deduplicate.

The models are built through their validators: the values come from the core, but a value a
schema refuses then fails its own request, with the reason, rather than reach the wire. With
pydantic's compiled validators this is also about 40 % faster than ``model_construct``.

A decision's messages are serialized once, into its outbox (``envelope``); what is published
is those same bytes (``Encoded``), so a republished outbox carries the same event ids."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from pydantic import BaseModel, ConfigDict

from dispatch import model as m
from infra.markets import registry
from infra.ports import Envelope
from infra.publish import Outgoing
from schemas import events as ev
from schemas.topics import DEAD_LETTERS, HIRE_REQUESTS, OFFER_RESPONSES, OFFERS, REQUEST_EVENTS

# Where a dead-lettered core input came from: the topic of the message it was made of, or the
# request's timer. It is no record of its own, so it has no partition or offset (-1).
TIMERS_SOURCE = "dispatcher-timers"


def offer_made(job: m.Job, o: m.Offer) -> Outgoing:
    zh, en = names(job.market_id)
    msg = ev.OfferMade(
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
        note=job.note,
        start_at_ms=job.start_at_ms,
        headcount=job.headcount,
        market_name_zh=zh,
        market_name_en=en,
        address=job.address,
    )
    return Outgoing(OFFERS, o.worker_id, msg)


def names(market_id: str) -> tuple[str, str]:
    """The market's Chinese and English names ("" for a market the registry lacks)."""
    m = registry().get(market_id)
    return ("", "") if m is None else (m.name_zh, m.name_en)


def hired(job: m.Job, worker_id: str, offer_id: str, now_ms: int) -> Outgoing:
    """Tell the worker they have the job, with what they need to get there and start."""
    zh, en = names(job.market_id)
    msg = ev.Hired(
        event_id=f"hi:{offer_id}",
        at_ms=now_ms,
        offer_id=offer_id,
        request_id=job.request_id,
        worker_id=worker_id,
        market_id=job.market_id,
        market_name_zh=zh,
        market_name_en=en,
        address=job.address or f"{zh or job.market_id} ({job.lat:.5f}, {job.lon:.5f})",
        skill=job.skill,
        wage_yuan_per_day=job.wage_yuan_per_day,
        start_at_ms=job.start_at_ms,
        note=job.note,
        contact=job.contact,
        headcount=job.headcount,
        others=job.headcount - 1,
        lon=job.lon,
        lat=job.lat,
    )
    return Outgoing(OFFERS, worker_id, msg)


def offer_withdrawn(job: m.Job, w: m.Withdrawal, now_ms: int) -> Outgoing:
    msg = ev.OfferWithdrawn(
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
                ev.CandidateNote(
                    worker_id=n.worker_id,
                    distance_km=n.distance_km,
                    score=n.score,
                    outcome=n.outcome,  # type: ignore[arg-type]
                )
                for n in notes
            )
            msg = ev.WaveSent(
                event_id=f"ws:{rid}:{wave}:{radius}:{now_ms}",
                at_ms=now_ms,
                request_id=rid,
                wave=wave,
                radius_km=radius,
                candidates=cands,
            )
        case m.RadiusWidened(radius):
            msg = ev.RadiusWidened(
                event_id=f"rw:{rid}:{radius}", at_ms=now_ms, request_id=rid, radius_km=radius
            )
        case m.WorkerAssigned(worker_id, offer_id, assigned):
            msg = ev.WorkerAssigned(
                event_id=f"wa:{offer_id}",
                at_ms=now_ms,
                request_id=rid,
                worker_id=worker_id,
                offer_id=offer_id,
                assigned=assigned,
                headcount=job.headcount,
            )
        case m.RequestFilled(offers_made):
            msg = ev.RequestFilled(
                event_id=f"rf:{rid}",
                at_ms=now_ms,
                request_id=rid,
                headcount=job.headcount,
                offers_made=offers_made,
            )
        case m.RequestExpired(assigned, offers_made):
            msg = ev.RequestExpired(
                event_id=f"re:{rid}",
                at_ms=now_ms,
                request_id=rid,
                assigned=assigned,
                headcount=job.headcount,
                offers_made=offers_made,
            )
        case m.RequestCancelled(assigned):
            msg = ev.RequestCancelled(
                event_id=f"rc:{rid}", at_ms=now_ms, request_id=rid, assigned=assigned
            )
        case m.JobChanged(worker_id, offer_id, status, by, reason):
            msg = ev.JobChanged(
                event_id=f"jc:{offer_id}:{status}",
                at_ms=now_ms,
                request_id=rid,
                worker_id=worker_id,
                offer_id=offer_id,
                status=status.value,  # type: ignore[arg-type]
                by=by,  # type: ignore[arg-type]
                reason=reason,
            )
    return Outgoing(REQUEST_EVENTS, rid, msg)


def rejected(request_id: str, reason: str, now_ms: int) -> Outgoing:
    msg = ev.RequestRejected(
        event_id=f"rr:{request_id}", at_ms=now_ms, request_id=request_id, reason=reason
    )
    return Outgoing(REQUEST_EVENTS, request_id, msg)


class Encoded(BaseModel):
    """A message already serialized (an outbox's): published as it is, byte for byte."""

    model_config = ConfigDict(frozen=True)

    raw: str

    def model_dump_json(self, **_: Any) -> str:
        return self.raw


def envelope(o: Outgoing) -> Envelope:
    """A message serialized for an outbox."""
    return Envelope(o.topic, o.key, o.message.model_dump_json())


def wire(e: Envelope) -> Outgoing:
    """An outbox's message, ready to publish as it was serialized."""
    # Built through the validator on purpose: for one str field, pydantic's compiled
    # validator is about twice as fast as model_construct.
    return Outgoing(e.topic, e.key, Encoded(raw=e.value))


def dead_input(item: m.Input, reason: str, now_ms: int) -> Outgoing:
    """The dead letter of a core input the dispatcher could not carry out."""
    rid = m.request_id_of(item)
    body = {"input": type(item).__name__, **dataclasses.asdict(item)}
    letter = ev.DeadLetter(
        at_ms=now_ms,
        consumer="dispatcher",
        source_topic=_source_of(item),
        partition=-1,
        offset=-1,
        key=rid[: ev.DEAD_LETTER_HEAD_MAX],
        reason=_bounded(reason, ev.DEAD_LETTER_REASON_MAX),
        payload=_bounded(json.dumps(body, default=str), ev.DEAD_LETTER_HEAD_MAX),
    )
    return Outgoing(DEAD_LETTERS, rid, letter)


def _source_of(item: m.Input) -> str:
    if isinstance(item, m.Answer):
        return OFFER_RESPONSES
    return TIMERS_SOURCE if isinstance(item, m.Tick) else HIRE_REQUESTS


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
