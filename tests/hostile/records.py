"""Hostile records for the inbound topics: hand-picked ones and Hypothesis strategies.

Every record made here must be refused by the consumer of its topic (dead-lettered with a
reason), except the ``tolerated`` ones: well-formed messages a consumer takes and ignores
(a replayed request, an answer to an unknown offer), which must *not* be dead-lettered.

The strategies never depend on the code under test to decide what is invalid: each mutation
breaks a rule of the message schemas (DESIGN.md, schemas/events.py) on purpose.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from schemas.events import (
    EPOCH_MS_MAX,
    ID_MAX,
    ID_PATTERN,
    LAT_MAX,
    LAT_MIN,
    LON_MAX,
    LON_MIN,
    SKILLS,
)
from schemas.topics import HIRE_REQUESTS, OFFER_RESPONSES, WORKER_EVENTS

MARKET: Final = "G4301001"
OTHER_MARKET: Final = "G4301002"
UNKNOWN_MARKET: Final = "G9999999"
MARKET_LON, MARKET_LAT = 113.26145, 28.20326
# Apache Kafka's default message.max.bytes (1 MiB + 12) bounds a record batch; a value 1 KiB
# under 1 MiB leaves room for the batch and record headers.
NEAR_MAX_VALUE_BYTES: Final = 1024 * 1024 - 1024
CONSUMER: Final = {
    HIRE_REQUESTS: "dispatcher",
    OFFER_RESPONSES: "dispatcher",
    WORKER_EVENTS: "presence",
}


@dataclass(frozen=True)
class Hostile:
    """A record to publish, what it is, and whether its consumer must dead-letter it."""

    topic: str
    key: bytes | None
    value: bytes | None
    label: str
    refused: bool = True


def dumps(body: Any) -> bytes:
    """JSON as a careless producer writes it: NaN and Infinity as bare tokens."""
    return json.dumps(body, allow_nan=True).encode()


# --- valid bodies, to be broken ------------------------------------------------------------


def hire_body(now: int, rid: str = "R-hostile", **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "v": 1,
        "type": "HireRequested",
        "event_id": f"hr:{rid}",
        "at_ms": now,
        "request_id": rid,
        "market_id": MARKET,
        "skill": "bricklayer",
        "headcount": 1,
        "wage_yuan_per_day": 260.0,
        "lon": MARKET_LON,
        "lat": MARKET_LAT,
        "start_at_ms": now,
        "deadline_at_ms": now + 600_000,
        "note": "",
    }
    return body | changes


def cancel_body(now: int, rid: str = "R-hostile", **changes: Any) -> dict[str, Any]:
    body = {
        "v": 1,
        "type": "HireCancelled",
        "event_id": f"hc:{rid}",
        "at_ms": now,
        "request_id": rid,
        "market_id": MARKET,
        "reason": "",
    }
    return body | changes


def checkin_body(now: int, wid: str = "W-hostile", **changes: Any) -> dict[str, Any]:
    body = {
        "v": 1,
        "type": "WorkerCheckedIn",
        "event_id": f"ci:{wid}",
        "at_ms": now,
        "worker_id": wid,
        "market_id": MARKET,
        "lon": MARKET_LON,
        "lat": MARKET_LAT,
        "skills": ["bricklayer"],
    }
    return body | changes


def located_body(now: int, wid: str = "W-hostile", **changes: Any) -> dict[str, Any]:
    body = {
        "v": 1,
        "type": "WorkerLocated",
        "event_id": f"wl:{wid}",
        "at_ms": now,
        "worker_id": wid,
        "lon": MARKET_LON,
        "lat": MARKET_LAT,
    }
    return body | changes


def offline_body(now: int, wid: str = "W-hostile", **changes: Any) -> dict[str, Any]:
    body = {
        "v": 1,
        "type": "WorkerWentOffline",
        "event_id": f"wo:{wid}",
        "at_ms": now,
        "worker_id": wid,
    }
    return body | changes


def answer_body(now: int, kind: str = "OfferAccepted", **changes: Any) -> dict[str, Any]:
    body = {
        "v": 1,
        "type": kind,
        "event_id": "oa:O-hostile",
        "at_ms": now,
        "offer_id": "O-hostile",
        "request_id": "R-hostile",
        "worker_id": "W-hostile",
    }
    if kind == "OfferDeclined":
        body["reason"] = ""
    return body | changes


Template = Callable[[int], dict[str, Any]]
TEMPLATES: Final[dict[str, tuple[Template, ...]]] = {
    HIRE_REQUESTS: (hire_body, cancel_body),
    WORKER_EVENTS: (checkin_body, located_body, offline_body),
    OFFER_RESPONSES: (answer_body, lambda now: answer_body(now, "OfferDeclined")),
}
TYPES: Final = {
    HIRE_REQUESTS: {"HireRequested", "HireCancelled"},
    WORKER_EVENTS: {"WorkerCheckedIn", "WorkerLocated", "WorkerWentOffline"},
    OFFER_RESPONSES: {"OfferAccepted", "OfferDeclined"},
}
# Fields without a default (``type`` is the discriminator: without it nothing can be read).
REQUIRED: Final = {
    "HireRequested": (
        "type",
        "event_id",
        "at_ms",
        "request_id",
        "market_id",
        "skill",
        "headcount",
        "wage_yuan_per_day",
        "start_at_ms",
        "deadline_at_ms",
    ),
    "HireCancelled": ("type", "event_id", "at_ms", "request_id", "market_id"),
    "WorkerCheckedIn": ("type", "event_id", "at_ms", "worker_id", "lon", "lat", "skills"),
    "WorkerLocated": ("type", "event_id", "at_ms", "worker_id", "lon", "lat"),
    "WorkerWentOffline": ("type", "event_id", "at_ms", "worker_id"),
    "OfferAccepted": ("type", "event_id", "at_ms", "offer_id", "request_id", "worker_id"),
    "OfferDeclined": ("type", "event_id", "at_ms", "offer_id", "request_id", "worker_id"),
}


# --- values each field refuses ---------------------------------------------------------------


def _not_an_id(s: str) -> bool:
    return len(s) > ID_MAX or re.fullmatch(ID_PATTERN, s) is None


NOT_STRINGS = st.one_of(
    st.integers(),
    st.booleans(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
BAD_ID = st.one_of(
    st.just(""),
    st.text(alphabet="a", min_size=ID_MAX + 1, max_size=ID_MAX + 200),
    st.text(max_size=30).filter(_not_an_id),
    NOT_STRINGS,
)
# Integers are not floats here (strict), nor are booleans: only values out of range or of
# another type. NaN and infinities become the bare JSON tokens NaN / Infinity.
_NON_FINITE = st.sampled_from([float("nan"), float("inf"), float("-inf")])
BAD_MS = st.one_of(
    st.integers(max_value=-1),
    st.integers(min_value=EPOCH_MS_MAX, max_value=2**70),
    st.floats(),
    st.text(max_size=20),
    st.booleans(),
    st.none(),
)


def _bad_float(low: float, high: float) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.floats(max_value=low, exclude_max=True),
        st.floats(min_value=high, exclude_min=True),
        _NON_FINITE,
        st.text(max_size=10),
        st.booleans(),
    )


BAD_VALUES: Final[dict[str, st.SearchStrategy[Any]]] = {
    "v": st.one_of(st.integers().filter(lambda n: n != 1), st.text(max_size=5), st.none()),
    "event_id": BAD_ID,
    "request_id": BAD_ID,
    "market_id": BAD_ID,
    "worker_id": BAD_ID,
    "offer_id": BAD_ID,
    "at_ms": BAD_MS,
    "start_at_ms": BAD_MS,
    "deadline_at_ms": BAD_MS,
    "skill": st.one_of(st.text(max_size=50).filter(lambda s: s not in SKILLS), NOT_STRINGS),
    "skills": st.one_of(
        st.just([]),
        st.lists(st.sampled_from(SKILLS), min_size=6, max_size=9),
        st.lists(st.text(max_size=8).filter(lambda s: s not in SKILLS), min_size=1, max_size=3),
        st.sampled_from(SKILLS),  # a string is not a list of skills
        st.none(),
    ),
    "headcount": st.one_of(
        st.integers(max_value=0),
        st.integers(min_value=51),
        st.floats(),
        st.text(max_size=5),
        st.booleans(),
        st.none(),
    ),
    "wage_yuan_per_day": _bad_float(0.0, 5000.0),
    "lon": _bad_float(LON_MIN, LON_MAX),
    "lat": _bad_float(LAT_MIN, LAT_MAX),
    "note": st.one_of(st.text(min_size=201, max_size=400), NOT_STRINGS),
    "reason": st.one_of(st.text(min_size=201, max_size=400), NOT_STRINGS),
}


@st.composite
def mutated(draw: st.DrawFn, topic: str, now: int) -> bytes:
    """A valid message of the topic with one rule broken."""
    body = draw(st.sampled_from(TEMPLATES[topic]))(now)
    kind = body["type"]
    how = draw(st.sampled_from(["value", "value", "value", "missing", "extra", "type"]))
    if how == "value":
        name = draw(st.sampled_from(sorted(set(body) & set(BAD_VALUES))))
        body[name] = draw(BAD_VALUES[name])
    elif how == "missing":
        del body[draw(st.sampled_from(REQUIRED[kind]))]
    elif how == "extra":
        name = draw(st.text(min_size=1, max_size=12).filter(lambda s: s not in body))
        body[name] = draw(st.one_of(st.integers(), st.text(max_size=5), st.none()))
    else:
        body["type"] = draw(
            st.one_of(
                st.text(max_size=20).filter(lambda s: s not in TYPES[topic]), NOT_STRINGS, st.none()
            )
        )
    return dumps(body)


JSON_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20))
NOT_A_MESSAGE = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
).map(dumps)


@st.composite
def broken_utf8(draw: st.DrawFn, topic: str, now: int) -> bytes:
    """A valid message with bytes that are not UTF-8 inside one of its strings."""
    raw = dumps(draw(st.sampled_from(TEMPLATES[topic]))(now))
    cut = raw.index(b'"', raw.index(b'"event_id"') + 11) + 1  # inside the event id's value
    return (
        raw[:cut]
        + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80"]))
        + raw[cut:]
    )


def hostile_values(topic: str, now: int) -> st.SearchStrategy[bytes]:
    return st.one_of(
        mutated(topic, now),
        mutated(topic, now),
        NOT_A_MESSAGE,
        st.binary(max_size=200),
        broken_utf8(topic, now),
    )


def hostile_keys() -> st.SearchStrategy[bytes | None]:
    return st.one_of(st.none(), st.binary(max_size=40), st.just(b"\xff" * 300))


def generated(topic: str, now: int, count: int) -> list[Hostile]:
    """``count`` Hypothesis-made records the topic's consumer must refuse (derandomized)."""
    found: list[Hostile] = []

    @settings(
        max_examples=count,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(hostile_keys(), hostile_values(topic, now))
    def collect(key: bytes | None, value: bytes) -> None:
        found.append(Hostile(topic, key, value, "hypothesis"))

    collect()
    return found


# --- hand-picked -----------------------------------------------------------------------------


def everywhere(topic: str, now: int) -> list[Hostile]:
    """What every inbound topic must refuse, whatever its schema."""
    body = TEMPLATES[topic][0](now)
    deep_object = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    near_max = dumps(body | {"pad": "x" * (NEAR_MAX_VALUE_BYTES - len(dumps(body | {"pad": ""})))})
    picked = [
        (b"{not json", "malformed JSON"),
        (b"", "empty value"),
        (None, "null value (tombstone)"),
        (b"\xff\xfe\xfd\xfc", "not UTF-8"),
        (b"\x00" * 64, "NUL bytes"),
        (b"null", "JSON null"),
        (b"[]", "JSON array"),
        (b'"HireRequested"', "JSON string"),
        (b"42", "JSON number"),
        (b"{}", "empty object"),
        (b"[" * 100_000, "100 000 open brackets"),
        (b"[" * 100_000 + b"]" * 100_000, "100 000 nested arrays"),
        (deep_object, "100 000 nested objects"),
        (b'{"type": NaN}', "NaN token"),
        (b"1" * 5000, "a 5000-digit number"),
        (near_max, "just under the broker's max message size"),
        (dumps(body | {"type": "Teleported"}), "unknown type"),
        (dumps(body | {"v": 2}), "schema version 2"),
        (dumps([body]), "the message wrapped in a list"),
        (dumps(body | {"at_ms": -1}), "negative timestamp"),
        (dumps(body | {"at_ms": 2**63 - 1}), "timestamp 2**63-1"),
        (dumps(body | {"at_ms": 10**30}), "timestamp 10**30"),
        (dumps(body | {"at_ms": 1e308}), "timestamp 1e308"),
        (dumps(body | {"at_ms": float("inf")}), "timestamp Infinity"),
        (dumps(body | {"event_id": "x" * 10_000}), "10 000-character event id"),
        (dumps(body | {"event_id": "a\u0000b"}), "NUL in an id"),
    ]
    out = [Hostile(topic, b"hostile", v, label) for v, label in picked]
    out.append(Hostile(topic, b"\xff\xfe" * 50, b"{not json", "key not UTF-8"))
    out.append(Hostile(topic, b"k" * 10_000, b"{not json", "10 KB key"))
    out.append(Hostile(topic, None, b"{not json", "no key"))
    replay = Hostile(topic, b"hostile", b'{"replayed": true}', "replayed malformed record")
    return [*out, replay, replay]


def hire_specific(now: int) -> list[Hostile]:
    bad = [
        (hire_body(now, note="\x00" * 160_000), "160 000 NUL characters escaped (960 KB)"),
        (hire_body(now, deadline_at_ms=2**63 - 1), "deadline 2**63-1"),
        (hire_body(now, wage_yuan_per_day=1e308), "wage 1e308"),
        (hire_body(now, wage_yuan_per_day=float("nan")), "wage NaN"),
        (hire_body(now, wage_yuan_per_day=float("inf")), "wage Infinity"),
        (hire_body(now, headcount=2**63), "headcount 2**63"),
        (
            hire_body(
                now,
                rid="R-future",
                at_ms=now + 2 * 86_400_000,
                start_at_ms=now + 2 * 86_400_000,
                deadline_at_ms=now + 2 * 86_400_000 + 60_000,
            ),
            "sent two days from now",
        ),
        (hire_body(now, rid="R-far", deadline_at_ms=now + 25 * 3_600_000), "deadline 25 h ahead"),
        (hire_body(now, start_at_ms=-5), "negative start"),
        (hire_body(now, deadline_at_ms=now - 1), "deadline before it was sent"),
        (hire_body(now, rid="R-unknown-market", market_id=UNKNOWN_MARKET), "unknown market"),
        (hire_body(now, lon=MARKET_LAT, lat=MARKET_LON), "lon and lat swapped"),
        (hire_body(now, lat=91.0), "latitude 91"),
        (hire_body(now, lon=181.0), "longitude 181"),
        (hire_body(now, lon=0.0, lat=0.0), "null island"),
        (hire_body(now, lon=MARKET_LON, lat=None), "lon without lat"),
        (hire_body(now, rid=MARKET, market_id="R-swapped"), "request and market ids swapped"),
        (hire_body(now, skill="astronaut"), "unknown skill"),
        (cancel_body(now, market_id=UNKNOWN_MARKET, reason="x" * 5000), "cancel, long reason"),
        (checkin_body(now), "a worker event on the hire topic"),
    ]
    out = [Hostile(HIRE_REQUESTS, b"R-hostile", dumps(b), label) for b, label in bad]
    raw_nul = dumps(hire_body(now, note="NUL")).replace(b'"NUL"', b'"' + b"\x00" * 200_000 + b'"')
    out.append(Hostile(HIRE_REQUESTS, b"R-hostile", raw_nul, "200 KB note of raw NUL bytes"))
    return out


def worker_specific(now: int) -> list[Hostile]:
    bad = [
        (checkin_body(now, market_id=UNKNOWN_MARKET), "check-in at an unknown market"),
        (checkin_body(now, lon=MARKET_LAT, lat=MARKET_LON), "lon and lat swapped"),
        (checkin_body(now, lat=-91.0), "latitude -91"),
        (checkin_body(now, lon=float("nan")), "longitude NaN"),
        (checkin_body(now, skills=["bricklayer"] * 6), "six skills"),
        (checkin_body(now, skills="bricklayer"), "skills as a string"),
        (checkin_body(now, worker_id=MARKET, market_id="W-swapped"), "worker and market swapped"),
        (located_body(now, lon=1e308, lat=-1e308), "position 1e308"),
        (offline_body(now, worker_id=None), "no worker id"),
        (answer_body(now), "an answer on the worker topic"),
    ]
    return [Hostile(WORKER_EVENTS, b"W-hostile", dumps(b), label) for b, label in bad]


def worker_clock(now: int) -> list[Hostile]:
    """Worker events whose times lie outside the consumer's window (a rule of the edge that
    reads the consumer's clock, not of the schema)."""
    bad = [
        (checkin_body(now, wid="W-future", at_ms=now + 2 * 86_400_000), "check-in two days ahead"),
        (located_body(now, wid="W-future", at_ms=EPOCH_MS_MAX - 1), "located in 2099"),
    ]
    return [Hostile(WORKER_EVENTS, b"W-future", dumps(b), label) for b, label in bad]


def answer_specific(now: int) -> list[Hostile]:
    bad = [
        (answer_body(now, at_ms=now + 2 * 86_400_000), "answer sent two days from now"),
        (answer_body(now, offer_id=["O-1"]), "offer id as a list"),
        (answer_body(now, "OfferDeclined", reason="\x00" * 1000), "decline, 1000 NULs"),
        (answer_body(now, worker_id="W 1"), "worker id with a space"),
        (hire_body(now), "a hire request on the answers topic"),
    ]
    return [Hostile(OFFER_RESPONSES, b"R-hostile", dumps(b), label) for b, label in bad]


def tolerated(now: int) -> list[Hostile]:
    """Well-formed input a consumer takes without harm and must not dead-letter (the replay of
    a valid request is sent with the valid work)."""
    return [
        Hostile(
            OFFER_RESPONSES,
            b"R-nobody",
            dumps(answer_body(now, request_id="R-nobody")),
            "answer to an unknown request",
            False,
        ),
        Hostile(
            WORKER_EVENTS,
            b"W-nobody",
            dumps(offline_body(now, wid="W-nobody")),
            "unknown worker goes offline",
            False,
        ),
    ]


def catalogue(now: int, per_topic: int) -> list[Hostile]:
    """Every hostile record of the suite that must be dead-lettered, hand-picked first."""
    out = hire_specific(now) + worker_specific(now) + worker_clock(now) + answer_specific(now)
    for topic in (HIRE_REQUESTS, WORKER_EVENTS, OFFER_RESPONSES):
        out += everywhere(topic, now)
        out += generated(topic, now, per_topic)
    return out
