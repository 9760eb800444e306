"""The pure parts of the cache rebuild: the latest version wins, which holds come back."""

from __future__ import annotations

import itertools

import pytest

from dispatch.model import Job, Offer, OfferStatus, RequestState, RequestStatus
from infra.keys import ASSIGNMENT_TTL_MS, HOLD_GRACE_MS
from infra.rebuild import floors_of, holds_of, keep_latest, remaining_ttl_ms
from infra.state_codec import dump_state
from schemas.events import RequestStateSaved

pytestmark = pytest.mark.unit

T0 = 1_700_000_000_000


def job(rid: str = "R1") -> Job:
    return Job(rid, "G4301001", "mover", 2, 250.0, 112.94, 28.23, T0, T0, T0 + 600_000)


def offer(wid: str, status: OfferStatus, made: int = T0, ttl: int = 15_000) -> Offer:
    return Offer(f"o-{wid}", wid, status, 1, 1.0, 1.0, made, made + ttl)


def saved(
    version: int, rid: str = "R1", status: RequestStatus = RequestStatus.OPEN
) -> RequestStateSaved:
    state = dump_state(RequestState(job(rid), status))
    return RequestStateSaved(request_id=rid, version=version, at_ms=T0 + version, state=state)


@pytest.mark.parametrize("order", list(itertools.permutations([1, 3, 2])))
def test_the_highest_version_of_each_request_wins_whatever_the_order(
    order: tuple[int, ...],
) -> None:
    latest: dict[str, RequestStateSaved] = {}
    for v in order:
        keep_latest(latest, saved(v))
        keep_latest(latest, saved(10 - v, rid="R2"))
    assert latest["R1"].version == 3
    assert latest["R2"].version == 9


def test_a_repeated_version_keeps_the_first_seen() -> None:
    first, again = saved(2), saved(2, status=RequestStatus.OFFERING)
    latest: dict[str, RequestStateSaved] = {}
    keep_latest(latest, first)
    keep_latest(latest, again)
    assert latest["R1"] is first


def test_live_offers_and_assignments_come_back_as_holds() -> None:
    offers = (
        offer("made", OfferStatus.MADE),
        offer("accepted", OfferStatus.ACCEPTED),
        offer("declined", OfferStatus.DECLINED),
        offer("expired", OfferStatus.EXPIRED),
    )
    state = RequestState(job(), RequestStatus.OFFERING, offers=offers)
    now = T0 + 5_000
    holds = holds_of([(state, T0 + 3_000)], now)
    assert set(holds) == {"made", "accepted"}
    assert holds["made"].value == "R1"
    assert holds["made"].ttl_ms == T0 + 15_000 + HOLD_GRACE_MS - now
    assert holds["accepted"].value == "A|R1"
    # accepted by the last save at T0 + 3 s, inside the offer's window
    assert holds["accepted"].ttl_ms == T0 + 3_000 + ASSIGNMENT_TTL_MS - now


@pytest.mark.parametrize(
    ("status", "now", "kept"),
    [
        (OfferStatus.MADE, T0 + 15_000 + HOLD_GRACE_MS - 1, True),
        (OfferStatus.MADE, T0 + 15_000 + HOLD_GRACE_MS, False),
        (OfferStatus.ACCEPTED, T0 + 15_000 + ASSIGNMENT_TTL_MS - 1, True),
        (OfferStatus.ACCEPTED, T0 + 15_000 + ASSIGNMENT_TTL_MS, False),
    ],
)
def test_a_hold_whose_time_is_up_does_not_come_back(
    status: OfferStatus, now: int, kept: bool
) -> None:
    state = RequestState(job(), RequestStatus.OFFERING, offers=(offer("w", status),))
    assert ("w" in holds_of([(state, T0 + 60_000)], now)) is kept


def test_a_worker_assigned_then_offered_again_keeps_the_latest_claim() -> None:
    old = RequestState(job("R1"), RequestStatus.FILLED, offers=(offer("w", OfferStatus.ACCEPTED),))
    new = RequestState(
        job("R2"), RequestStatus.OFFERING, offers=(offer("w", OfferStatus.MADE, made=T0 + 60_000),)
    )
    for states in (
        [(old, T0 + 1_000), (new, T0 + 60_000)],
        [(new, T0 + 60_000), (old, T0 + 1_000)],
    ):
        assert holds_of(states, T0 + 61_000)["w"].value == "R2"


def test_a_state_outlives_its_deadline_by_the_store_ttl_from_its_save() -> None:
    state = RequestState(job())
    assert remaining_ttl_ms(state, T0, T0) == 600_000 + 24 * 3600 * 1000
    assert remaining_ttl_ms(state, T0, T0 + 600_000 + 24 * 3600 * 1000) == 0


@pytest.mark.parametrize(
    ("epoch", "floors"),
    [
        (None, {}),
        ("", {}),
        ('1700000000000|host:1:ab|{"0": 12, "3": 0}', {0: 12, 3: 0}),
        ("1700000000000|host:1:ab|", {}),
    ],
)
def test_the_epoch_carries_the_worker_event_offsets_the_index_holds(
    epoch: str | None, floors: dict[int, int]
) -> None:
    assert floors_of(epoch) == floors
