"""Timelines in plain words: every event of a request, worker or market, in order, with why.

The dispatcher records, for each wave, every candidate it considered (distance, score) and
what it made of them; the timeline turns that into sentences a supervisor can audit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final

from pydantic import BaseModel

from schemas import events as ev
from schemas.journal import DispatchBatch
from schemas.names import skill_label

LOCAL: Final = timezone(timedelta(hours=8), "CST")  # China Standard Time, no daylight saving
MAX_CANDIDATES: Final = 25

VERDICT: Final = {
    "offered": "offered: among the nearest workers still free",
    "taken": "passed over: another request held this worker first",
    "already_offered": "passed over: already offered this request before",
    "not_needed": "passed over: enough nearer workers for this wave",
}
WITHDRAWN: Final = {
    "expired": "lapsed: no answer within the offer window",
    "filled": "withdrawn: the request is filled",
    "cancelled": "withdrawn: the kiosk cancelled the request",
    "request_expired": "withdrawn: the request reached its deadline",
    "too_late": "answered after the offer closed: told it is too late",
}
# Within one instant, the order in which a reader expects things to happen.
ORDER: Final = {
    "HireRequested": 0, "WorkerCheckedIn": 0, "WorkerLocated": 0, "WorkerWentOffline": 0,
    "OfferAccepted": 1, "OfferDeclined": 1, "HireCancelled": 1, "RadiusWidened": 2,
    "WaveSent": 3, "OfferMade": 4, "WorkerAssigned": 5, "OfferWithdrawn": 6,
    "RequestFilled": 7, "RequestExpired": 7, "RequestCancelled": 7, "RequestRejected": 7,
    "Hired": 8, "JobReported": 9, "JobChanged": 10,
}  # fmt: skip
JOB_STEP: Final = {
    "arrived": "arrived at the job",
    "done": "finished the job: back in the pool",
    "no_show": "did not come (a no-show): back in the pool",
    "cancelled": "had the job cancelled: back in the pool",
}


def clock(at_ms: int, date: bool = False) -> str:
    """Local (Hunan) time of an epoch-ms instant, to the millisecond."""
    t = datetime.fromtimestamp(at_ms / 1000, UTC).astimezone(LOCAL)
    return t.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if date else t.strftime("%H:%M:%S.%f")[:-3]


@dataclass(frozen=True, slots=True)
class Context:
    """What the sentences need besides the events: names, and whom the timeline follows."""

    market_names: Mapping[str, str]
    focus_worker: str | None = None
    requested_at: Mapping[str, int] | None = None


def _wave(m: ev.WaveSent, ctx: Context) -> list[str]:
    offered = sum(1 for c in m.candidates if c.outcome == "offered")
    if ctx.focus_worker is not None:
        mine = [c for c in m.candidates if c.worker_id == ctx.focus_worker]
        return [
            f"considered for {m.request_id} in wave {m.wave} ({c.distance_km:.2f} km, "
            f"score {c.score:.3f}): {VERDICT[c.outcome]}"
            for c in mine
        ]
    head = (f"{m.request_id}: wave {m.wave} within {m.radius_km:g} km: "
            f"{len(m.candidates)} candidates considered, {offered} offered")  # fmt: skip
    lines = [head]
    for c in m.candidates[:MAX_CANDIDATES]:
        lines.append(f"    {c.worker_id:<16} {c.distance_km:7.2f} km  score {c.score:7.3f}  "
                     f"{VERDICT[c.outcome]}")  # fmt: skip
    if len(m.candidates) > MAX_CANDIDATES:
        lines.append(f"    … and {len(m.candidates) - MAX_CANDIDATES} more, all farther away")
    return lines


def _since(ctx: Context, rid: str, at_ms: int) -> str:
    start = (ctx.requested_at or {}).get(rid)
    return "" if start is None else f", {(at_ms - start) / 1000:.1f} s after the request"


def sentence(msg: BaseModel, ctx: Context) -> list[str]:  # noqa: C901 - one case per event type
    """The event in plain words (first line), with detail lines indented below."""
    m: Any = msg
    match msg:
        case ev.HireRequested():
            place = ctx.market_names.get(m.market_id, m.market_id)
            return [
                f"{m.request_id}: {place} asks for {m.headcount} × {skill_label(m.skill)} at "
                f"{m.wage_yuan_per_day:g} ¥/day, open until {clock(m.deadline_at_ms)}"
            ]
        case ev.HireCancelled():
            why = f" ({m.reason})" if m.reason else ""
            return [f"{m.request_id}: the kiosk cancelled the request{why}"]
        case ev.WaveSent():
            return _wave(m, ctx)
        case ev.RadiusWidened():
            return [
                f"{m.request_id}: nobody free to offer within the last radius: "
                f"search widened to {m.radius_km:g} km"
            ]
        case ev.OfferMade():
            return [
                f"{m.request_id}: offer to {m.worker_id} ({m.distance_km:.2f} km, wave "
                f"{m.wave}), open until {clock(m.expires_at_ms)}"
            ]
        case ev.OfferAccepted():
            return [f"{m.request_id}: {m.worker_id} accepted the offer"]
        case ev.OfferDeclined():
            why = f" ({m.reason})" if m.reason else ""
            return [f"{m.request_id}: {m.worker_id} declined the offer{why}"]
        case ev.OfferWithdrawn():
            return [f"{m.request_id}: offer to {m.worker_id} {WITHDRAWN[m.reason]}"]
        case ev.WorkerAssigned():
            return [f"{m.request_id}: {m.worker_id} assigned ({m.assigned} of {m.headcount})"]
        case ev.RequestFilled():
            return [
                f"{m.request_id}: filled, {m.headcount} of {m.headcount} after "
                f"{m.offers_made} offers{_since(ctx, m.request_id, m.at_ms)}"
            ]
        case ev.RequestExpired():
            return [
                f"{m.request_id}: deadline reached with {m.assigned} of {m.headcount} "
                f"assigned after {m.offers_made} offers"
            ]
        case ev.RequestCancelled():
            return [f"{m.request_id}: cancelled with {m.assigned} assigned"]
        case ev.RequestRejected():
            return [f"{m.request_id}: rejected: {m.reason}"]
        case ev.Hired():
            return [f"{m.request_id}: {m.worker_id} told they are hired, {m.others} others coming"]
        case ev.JobReported():
            why = f" ({m.reason})" if m.reason else ""
            return [f"{m.request_id}: the {m.by} reports {m.worker_id} {m.step}{why}"]
        case ev.JobChanged():
            why = f" ({m.reason})" if m.reason else ""
            return [f"{m.request_id}: {m.worker_id} {JOB_STEP[m.status]}{why}"]
        case ev.WorkerCheckedIn():
            where = ctx.market_names.get(m.market_id or "", f"({m.lon:.4f}, {m.lat:.4f})")
            skills = ", ".join(map(skill_label, m.skills))
            return [f"{m.worker_id} checked in at {where}, skills {skills}"]
        case ev.WorkerLocated():
            return [f"{m.worker_id} moved to ({m.lon:.4f}, {m.lat:.4f})"]
        case ev.WorkerWentOffline():
            return [f"{m.worker_id} went offline"]
    return [f"{type(msg).__name__}"]


def in_order(messages: Iterable[BaseModel]) -> list[BaseModel]:
    """Events in time order; within one instant, in the order things happen."""
    kept = [m for m in messages if not isinstance(m, DispatchBatch)]
    return sorted(kept, key=lambda m: (m.at_ms, ORDER.get(type(m).__name__, 9)))  # type: ignore[attr-defined]


def render(title: str, messages: Sequence[BaseModel], ctx: Context) -> str:
    """The whole timeline: a title, then one block per event with its local time."""
    events = in_order(messages)
    if not events:
        return f"{title}\n  (nothing archived)"
    lines = [title, f"  {clock(events[0].at_ms, date=True)[:10]}, times in China Standard Time"]  # type: ignore[attr-defined]
    for m in events:
        words = sentence(m, ctx)
        if not words:
            continue
        lines.append(f"  {clock(m.at_ms)}  {words[0]}")  # type: ignore[attr-defined]
        lines += [f"  {'':12}  {w}" for w in words[1:]]
    return "\n".join(lines)
