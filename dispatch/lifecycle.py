"""The request and offer lifecycles, each one transition table.

Rules:
- a request is ``open`` while it has no live offer and ``offering`` while it has one;
- it ends ``filled`` when its headcount is assigned, ``expired`` at its deadline, or
  ``cancelled`` by its kiosk; an ended request never changes again;
- an offer is ``made`` once and then ends ``accepted``, ``declined``, ``expired`` (no answer
  within its window) or ``withdrawn`` (the request filled, expired or was cancelled);
- an accepted offer is the worker's job, which goes on after its request has ended: the
  worker ``arrived``, then the job is ``done``; or the worker never came (``no_show``), or
  the station ``cancelled`` it. ``done``, ``no_show`` and ``cancelled`` end the job and
  return the worker to the pool.

Any other move raises :class:`IllegalTransition`.
"""

from __future__ import annotations

from typing import Final

from dispatch.model import OfferStatus, RequestStatus

R = RequestStatus
O = OfferStatus  # noqa: E741

REQUEST_TRANSITIONS: Final[dict[tuple[RequestStatus, str], RequestStatus]] = {
    (R.OPEN, "offers_made"): R.OFFERING,
    (R.OFFERING, "offers_made"): R.OFFERING,
    (R.OFFERING, "offers_lapsed"): R.OPEN,
    (R.OFFERING, "filled"): R.FILLED,
    (R.OPEN, "deadline"): R.EXPIRED,
    (R.OFFERING, "deadline"): R.EXPIRED,
    (R.OPEN, "cancel"): R.CANCELLED,
    (R.OFFERING, "cancel"): R.CANCELLED,
}

OFFER_TRANSITIONS: Final[dict[tuple[OfferStatus, str], OfferStatus]] = {
    (O.MADE, "accept"): O.ACCEPTED,
    (O.MADE, "decline"): O.DECLINED,
    (O.MADE, "lapse"): O.EXPIRED,
    (O.MADE, "withdraw"): O.WITHDRAWN,
    (O.ACCEPTED, "arrive"): O.ARRIVED,
    (O.ACCEPTED, "finish"): O.DONE,
    (O.ARRIVED, "finish"): O.DONE,
    (O.ACCEPTED, "no_show"): O.NO_SHOW,
    (O.ACCEPTED, "cancel"): O.CANCELLED,
    (O.ARRIVED, "cancel"): O.CANCELLED,
}
# The step a station or worker reports, as the offer table's trigger.
JOB_TRIGGERS: Final[dict[str, str]] = {
    "arrived": "arrive",
    "done": "finish",
    "no_show": "no_show",
    "cancelled": "cancel",
}
# What each reporter may say: a worker cannot mark themselves a no-show or cancel the job.
JOB_STEPS_BY: Final[dict[str, frozenset[str]]] = {
    "station": frozenset(JOB_TRIGGERS),
    "worker": frozenset({"arrived", "done"}),
}


class IllegalTransition(ValueError):
    """A lifecycle move the table does not allow."""


def next_request_status(status: RequestStatus, trigger: str) -> RequestStatus:
    """The request's status after ``trigger``; raises on a move the table lacks."""
    try:
        return REQUEST_TRANSITIONS[(status, trigger)]
    except KeyError:
        raise IllegalTransition(f"request cannot go from {status} on {trigger!r}") from None


def next_offer_status(status: OfferStatus, trigger: str) -> OfferStatus:
    """The offer's status after ``trigger``; raises on a move the table lacks."""
    try:
        return OFFER_TRANSITIONS[(status, trigger)]
    except KeyError:
        raise IllegalTransition(f"offer cannot go from {status} on {trigger!r}") from None


def settle_status(status: RequestStatus, live_offers: int) -> RequestStatus:
    """``open``/``offering`` as the live offers say, through the table."""
    if status is R.OPEN and live_offers:
        return next_request_status(status, "offers_made")
    if status is R.OFFERING and not live_offers:
        return next_request_status(status, "offers_lapsed")
    return status


def render_markdown() -> str:
    """Both tables as Markdown, for the docs."""
    rows = ["| from | on | to |", "|---|---|---|"]
    rows += [f"| request `{a}` | {t} | `{b}` |" for (a, t), b in REQUEST_TRANSITIONS.items()]
    rows += [f"| offer `{a}` | {t} | `{b}` |" for (a, t), b in OFFER_TRANSITIONS.items()]
    return "\n".join(rows)
