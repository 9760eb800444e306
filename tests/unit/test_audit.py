"""The auditor's checks, as tables of small logs and stores and the counts they must give."""

from __future__ import annotations

from typing import Any

import pytest

from dispatch.model import Job, Offer, OfferStatus, RequestState, RequestStatus
from infra.audit import VIOLATIONS, Log, Stored, audit, decode_log, latest_states
from infra.state_codec import dump_state
from schemas import events as ev
from schemas.topics import HIRE_REQUESTS, REQUEST_EVENTS, REQUEST_STATE

pytestmark = pytest.mark.unit

NOW = 1_800_000_000_000
DEADLINE = NOW - 1_000  # every request's deadline has passed unless said otherwise


def hire(rid: str, headcount: int = 1, deadline: int = DEADLINE, market: str = "M1") -> Any:
    return ev.HireRequested(
        event_id=f"hr:{rid}",
        at_ms=deadline - 60_000,
        request_id=rid,
        market_id=market,
        skill="mover",
        headcount=headcount,
        wage_yuan_per_day=200.0,
        start_at_ms=deadline - 60_000,
        deadline_at_ms=deadline,
    )


def made(rid: str, wid: str, oid: str) -> Any:
    return ev.OfferMade(
        event_id=f"om:{oid}",
        at_ms=NOW,
        offer_id=oid,
        request_id=rid,
        worker_id=wid,
        market_id="M1",
        skill="mover",
        wage_yuan_per_day=200.0,
        lon=113.0,
        lat=28.0,
        distance_km=1.0,
        score=1.0,
        wave=1,
        expires_at_ms=NOW + 3000,
    )


def accepted(rid: str, wid: str, oid: str) -> Any:
    return ev.OfferAccepted(
        event_id=f"oa:{oid}", at_ms=NOW, offer_id=oid, request_id=rid, worker_id=wid
    )


def assigned(rid: str, wid: str, oid: str, headcount: int = 1) -> Any:
    return ev.WorkerAssigned(
        event_id=f"wa:{oid}",
        at_ms=NOW,
        request_id=rid,
        worker_id=wid,
        offer_id=oid,
        assigned=1,
        headcount=headcount,
    )


def filled(rid: str, event_id: str = "") -> Any:
    return ev.RequestFilled(
        event_id=event_id or f"rf:{rid}", at_ms=NOW, request_id=rid, headcount=1, offers_made=1
    )


def expired(rid: str) -> Any:
    return ev.RequestExpired(
        event_id=f"re:{rid}", at_ms=NOW, request_id=rid, assigned=0, headcount=1, offers_made=0
    )


def rejected(rid: str) -> Any:
    return ev.RequestRejected(event_id=f"rr:{rid}", at_ms=NOW, request_id=rid, reason="no")


def state(
    rid: str, status: RequestStatus, offers: tuple[tuple[str, str, OfferStatus], ...] = ()
) -> RequestState:
    job = Job(rid, "M1", "mover", 1, 200.0, 113.0, 28.0, NOW, NOW, DEADLINE)
    return RequestState(
        job=job,
        status=status,
        offers=tuple(Offer(o, w, st, 1, 1.0, 1.0, NOW, NOW + 3000) for o, w, st in offers),
    )


A = OfferStatus.ACCEPTED
FILLED, EXPIRED, OFFERING = RequestStatus.FILLED, RequestStatus.EXPIRED, RequestStatus.OFFERING

# A request filled by w1 through offer o1, told in full.
GOOD = Log(
    hires=(hire("r1"),),
    offers=(made("r1", "w1", "o1"),),
    responses=(accepted("r1", "w1", "o1"),),
    events=(assigned("r1", "w1", "o1"), filled("r1")),
)
GOOD_STORE = {"r1": Stored(3, state("r1", FILLED, (("o1", "w1", A),)))}


def counts(log: Log, store: dict[str, Stored] | None = None, **kw: Any) -> dict[str, int]:
    report = audit(log, store or {}, now_ms=NOW, **kw)
    return {k: v for k, v in report.counts.items() if v}


CASES: list[tuple[str, Log, dict[str, Stored], dict[str, int]]] = [
    ("a request told in full", GOOD, GOOD_STORE, {}),
    ("no requests at all", Log(), {}, {}),
    (
        "a request that ended with no worker",
        Log(hires=(hire("r1"),), events=(expired("r1"),)),
        {},
        {},
    ),
    ("a rejected request has ended", Log(hires=(hire("r1"),), events=(rejected("r1"),)), {}, {}),
    ("a request that never ended is lost", Log(hires=(hire("r1"),)), {}, {"lost": 1}),
    (
        "only a wave is not an end",
        Log(hires=(hire("r1"), hire("r1")), events=(assigned("r1", "w1", "o1"),)),
        {},
        {"lost": 1, "unaccepted": 1},
    ),
    (
        "the same terminal event twice is a redelivery",
        Log(hires=(hire("r1"),), events=(expired("r1"), expired("r1"))),
        {},
        {},
    ),
    (
        "a request filled and expired is contradictory",
        Log(hires=(hire("r1"),), events=(filled("r1"), expired("r1"))),
        {},
        {"contradictory": 1},
    ),
    (
        "two fills with different ids are one kind of end",
        Log(hires=(hire("r1"),), events=(filled("r1"), filled("r1", "rf:again"))),
        {},
        {},
    ),
    (
        "a worker assigned to two requests is double-booked",
        Log(
            hires=(hire("r1"), hire("r2")),
            offers=(made("r1", "w1", "o1"), made("r2", "w1", "o2")),
            responses=(accepted("r1", "w1", "o1"), accepted("r2", "w1", "o2")),
            events=(assigned("r1", "w1", "o1"), assigned("r2", "w1", "o2")),
        ),
        {},
        {"double_booked": 1, "lost": 2},
    ),
    (
        "two workers for a headcount of one is over-filling",
        Log(
            hires=(hire("r1"),),
            offers=(made("r1", "w1", "o1"), made("r1", "w2", "o2")),
            responses=(accepted("r1", "w1", "o1"), accepted("r1", "w2", "o2")),
            events=(assigned("r1", "w1", "o1"), assigned("r1", "w2", "o2"), filled("r1")),
        ),
        {},
        {"over_filled": 1},
    ),
    (
        "the same worker assigned twice to one request is one worker",
        Log(
            hires=(hire("r1"),),
            offers=(made("r1", "w1", "o1"),),
            responses=(accepted("r1", "w1", "o1"),),
            events=(assigned("r1", "w1", "o1"), assigned("r1", "w1", "o1"), filled("r1")),
        ),
        {},
        {},
    ),
    (
        "an assignment nobody accepted",
        Log(
            hires=(hire("r1"),),
            offers=(made("r1", "w1", "o1"),),
            events=(assigned("r1", "w1", "o1"), filled("r1")),
        ),
        {},
        {"unaccepted": 1},
    ),
    (
        "the store says filled, the log does not",
        Log(hires=(hire("r1"),), events=(expired("r1"),)),
        {"r1": Stored(2, state("r1", FILLED))},
        {"unannounced": 1},
    ),
    (
        "the store says assigned, the log has no WorkerAssigned",
        Log(hires=(hire("r1"),), offers=(made("r1", "w1", "o1"),), events=(expired("r1"),)),
        {"r1": Stored(2, state("r1", EXPIRED, (("o1", "w1", A),)))},
        {"unannounced": 1},
    ),
    (
        "the store holds an offer never made",
        Log(hires=(hire("r1"),), events=(expired("r1"),)),
        {"r1": Stored(2, state("r1", EXPIRED, (("o1", "w1", OfferStatus.EXPIRED),)))},
        {"unannounced": 1},
    ),
    (
        "a pending outbox is being announced, not unannounced",
        Log(hires=(hire("r1"),), events=(expired("r1"),)),
        {"r1": Stored(2, state("r1", FILLED), pending=True)},
        {},
    ),
    (
        "a store's double-booking counts too",
        Log(hires=(hire("r1"), hire("r2"))),
        {
            "r1": Stored(2, state("r1", OFFERING, (("o1", "w1", A),))),
            "r2": Stored(2, state("r2", OFFERING, (("o2", "w1", A),))),
        },
        {"lost": 2, "unannounced": 4, "double_booked": 1},
    ),
]


@pytest.mark.parametrize(
    ("log", "store", "want"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_counts(log: Log, store: dict[str, Stored], want: dict[str, int]) -> None:
    assert counts(log, store) == want


def test_a_request_before_its_deadline_and_grace_is_open_not_lost() -> None:
    log = Log(hires=(hire("r1", deadline=NOW + 5_000), hire("r2", deadline=NOW - 5_000)))
    report = audit(log, {}, now_ms=NOW, grace_ms=10_000)
    assert (report.open, report.counts["lost"]) == (2, 0)
    report = audit(log, {}, now_ms=NOW, grace_ms=0)
    assert (report.open, report.counts["lost"]) == (1, 1)


def test_a_request_acknowledged_but_missing_from_the_log_is_lost() -> None:
    report = audit(GOOD, GOOD_STORE, now_ms=NOW, acknowledged={"r1", "r9"})
    assert [(f.kind, f.request_id) for f in report.findings] == [("lost", "r9")]


def test_requests_of_unknown_markets_are_not_judged_when_the_registry_is_given() -> None:
    log = Log(hires=(hire("r1", market="nowhere"),))
    assert counts(log, markets={"M1"}) == {}
    assert counts(log) == {"lost": 1}


def test_the_latest_version_of_each_request_state_wins() -> None:
    def saved(version: int, status: RequestStatus) -> ev.RequestStateSaved:
        return ev.RequestStateSaved(
            request_id="r1", version=version, at_ms=NOW, state=dump_state(state("r1", status))
        )

    states = latest_states([saved(1, OFFERING), saved(3, FILLED), saved(2, EXPIRED)])
    assert states["r1"].status is FILLED


def test_the_request_state_topic_is_judged_like_the_store() -> None:
    saved = ev.RequestStateSaved(
        request_id="r1", version=2, at_ms=NOW, state=dump_state(state("r1", FILLED))
    )
    log = Log(hires=(hire("r1"),), events=(expired("r1"),), states=(saved,))
    report = audit(log, {}, now_ms=NOW)
    assert report.counts["unannounced"] == 1
    assert "request-state topic" in report.findings[0].detail


def test_decoding_counts_what_the_schemas_refuse() -> None:
    raw = {
        HIRE_REQUESTS: [hire("r1").model_dump_json().encode(), b"{not json"],
        REQUEST_EVENTS: [expired("r1").model_dump_json().encode(), b'{"type":"Nope"}'],
        REQUEST_STATE: [],
    }
    log = decode_log(raw)
    assert (len(log.hires), len(log.events), log.unreadable) == (1, 1, 2)


def test_the_table_names_every_violation() -> None:
    report = audit(Log(hires=(hire("r1"),)), {}, now_ms=NOW)
    table = report.table()
    assert all(k.replace("_", "-") in table for k in VIOLATIONS)
    assert "lost: r1" in table and not report.clean
    assert report.as_dict()["lost"] == 1
