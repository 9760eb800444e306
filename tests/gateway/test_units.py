"""Pure parts of the gateway: tokens, permissions, station keys, batch sorting, AsyncAPI."""

from __future__ import annotations

import secrets

import pytest
from aiokafka import ConsumerRecord

from gateway import auth
from gateway.asyncapi import document
from gateway.fanout import pushes, sort_batch
from gateway.keys import GatewayKeys
from infra.settings import GatewaySettings
from schemas import events as ev
from schemas.topics import ALL_TOPICS, OFFERS, REQUEST_EVENTS

pytestmark = pytest.mark.unit
SECRET = secrets.token_urlsafe(32)
NOW_S = 1_780_000_000


def test_token_round_trip_and_expiry() -> None:
    token = auth.issue_token(SECRET, "worker", "W-1", NOW_S, 60)
    assert auth.verify_token(SECRET, token, NOW_S + 59) == auth.Principal("worker", "W-1")
    with pytest.raises(auth.AuthError) as late:
        auth.verify_token(SECRET, token, NOW_S + 60)
    assert late.value.status == 401


@pytest.mark.parametrize("token", [None, "", "not-a-jwt"])
def test_missing_or_garbled_token_is_401(token: str | None) -> None:
    with pytest.raises(auth.AuthError) as refused:
        auth.verify_token(SECRET, token, NOW_S)
    assert refused.value.status == 401


def test_forged_token_is_401() -> None:
    forged = auth.issue_token("another-secret-" + SECRET, "supervisor", "x", NOW_S, 60)
    with pytest.raises(auth.AuthError) as refused:
        auth.verify_token(SECRET, forged, NOW_S)
    assert refused.value.status == 401


def test_unknown_role_is_401() -> None:
    token = auth.issue_token(SECRET, "admin", "x", NOW_S, 60)  # type: ignore[arg-type]
    with pytest.raises(auth.AuthError):
        auth.verify_token(SECRET, token, NOW_S)


def test_station_keys_differ_per_market_and_check() -> None:
    a, b = auth.station_key(SECRET, "G4301001"), auth.station_key(SECRET, "G4301002")
    assert a != b and len(a) == auth.STATION_KEY_CHARS
    auth.check_station_key(SECRET, "G4301001", a)
    with pytest.raises(auth.AuthError):
        auth.check_station_key(SECRET, "G4301002", a)


STATION = auth.Principal("station", "G1")
WORKER = auth.Principal("worker", "W1")
SUPERVISOR = auth.Principal("supervisor", "audit")


@pytest.mark.parametrize(
    ("rule", "who", "subject", "allowed"),
    [
        (auth.may_write_market, STATION, "G1", True),
        (auth.may_write_market, STATION, "G2", False),
        (auth.may_write_market, WORKER, "G1", False),
        (auth.may_write_market, SUPERVISOR, "G1", False),
        (auth.may_read_market, STATION, "G1", True),
        (auth.may_read_market, STATION, "G2", False),
        (auth.may_read_market, SUPERVISOR, "G2", True),
        (auth.may_read_market, WORKER, "G1", False),
        (auth.may_read_worker, WORKER, "W1", True),
        (auth.may_read_worker, WORKER, "W2", False),
        (auth.may_read_worker, SUPERVISOR, "W2", True),
        (auth.may_read_worker, STATION, "W1", False),
    ],
)
def test_permission_table(rule: object, who: auth.Principal, subject: str, allowed: bool) -> None:
    assert callable(rule)
    if allowed:
        rule(who, subject)
    else:
        with pytest.raises(auth.AuthError) as refused:
            rule(who, subject)
        assert refused.value.status == 403


def test_secret_from_settings_else_dev_file(tmp_path: object) -> None:
    from pathlib import Path

    from pydantic import SecretStr

    assert auth.resolve_secret(GatewaySettings(secret=SecretStr("s3"))) == "s3"
    dev = Path(str(tmp_path)) / "gateway-secret"
    made = auth.resolve_secret(GatewaySettings(), dev)
    assert len(made) >= 32 and auth.resolve_secret(GatewaySettings(), dev) == made
    assert dev.stat().st_mode & 0o077 == 0


def offer(worker: str, expires_at_ms: int) -> ev.OfferMade:
    return ev.OfferMade(
        event_id=f"om:{worker}", at_ms=1, offer_id=f"O-{worker}", request_id="R-1",
        worker_id=worker, market_id="G1", skill="cook", wage_yuan_per_day=300.0, lon=113.0,
        lat=28.0, distance_km=1.0, score=1.0, wave=1, expires_at_ms=expires_at_ms,
    )  # fmt: skip


def record(topic: str, value: bytes, offset: int = 0) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(topic, 0, offset, 0, 0, b"k", value, None, 1, len(value), ())


def test_sort_batch_skips_lapsed_offers_and_dead_letters_garbage() -> None:
    filled = ev.RequestFilled(
        event_id="rf:1", at_ms=5, request_id="R-1", headcount=1, offers_made=1
    )
    records = [
        record(OFFERS, offer("W1", 2_000).model_dump_json().encode()),
        record(OFFERS, offer("W2", 500).model_dump_json().encode()),
        record(OFFERS, b"{nonsense"),
        record(REQUEST_EVENTS, filled.model_dump_json().encode()),
    ]
    batch = sort_batch(records, now_ms=1_000)
    assert [m.worker_id for m in batch.made] == ["W1"]
    assert batch.happened == [("R-1", filled)]
    assert len(batch.dead) == 1
    keys = GatewayKeys("p")
    assert [c for c, _ in pushes(batch, keys)] == [
        keys.worker_channel("W1"),
        keys.request_channel("R-1"),
    ]


def test_asyncapi_describes_every_topic_and_message() -> None:
    doc = document()
    assert doc["asyncapi"].startswith("3.")
    addresses = {c["address"] for c in doc["channels"].values()}
    assert addresses == set(ALL_TOPICS)
    schemas = doc["components"]["schemas"]
    for name in ("HireRequested", "OfferMade", "OfferWithdrawn", "OfferAccepted", "WaveSent",
                 "DispatchBatch"):  # fmt: skip
        assert name in schemas
