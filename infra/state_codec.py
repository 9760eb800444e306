"""Request state to and from compact JSON, for the Redis request store."""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

from dispatch.model import Job, Offer, OfferStatus, RequestState, RequestStatus

# Field names read once: ``astuple`` deep-copies every value and cost more than the JSON itself.
_JOB_FIELDS = tuple(f.name for f in fields(Job))


def dump_state(state: RequestState) -> str:
    """Compact JSON: offers as arrays, in field order."""
    body: dict[str, Any] = {
        "job": [getattr(state.job, name) for name in _JOB_FIELDS],
        "status": state.status.value,
        "step": state.radius_step,
        "wave": state.wave,
        "next": state.next_search_at_ms,
        "offers": [
            [
                o.offer_id,
                o.worker_id,
                o.status.value,
                o.wave,
                o.distance_km,
                o.score,
                o.made_at_ms,
                o.expires_at_ms,
            ]
            for o in state.offers
        ],
    }
    return json.dumps(body, separators=(",", ":"))


def load_state(raw: str | bytes) -> RequestState:
    body = json.loads(raw)
    offers = tuple(
        Offer(oid, wid, OfferStatus(st), wave, dist, score, made, exp)
        for oid, wid, st, wave, dist, score, made, exp in body["offers"]
    )
    return RequestState(
        job=Job(*body["job"]),
        status=RequestStatus(body["status"]),
        radius_step=body["step"],
        wave=body["wave"],
        offers=offers,
        next_search_at_ms=body["next"],
    )
