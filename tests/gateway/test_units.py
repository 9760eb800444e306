"""Pure parts of the gateway: tokens, permissions, station keys, batch sorting, AsyncAPI."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import jwt
import pytest
from aiokafka import ConsumerRecord
from pydantic import SecretStr

from gateway import auth, tokens
from gateway.app import create_app
from gateway.asyncapi import document
from gateway.fanout import pushes, sort_batch
from gateway.keys import GatewayKeys
from gateway.serve import serving
from gateway.supervise import Backoff, Supervisor
from infra.settings import GatewaySettings, Settings
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


def test_secret_from_settings_else_dev_file_only_when_asked(tmp_path: Path) -> None:
    assert auth.resolve_secret(GatewaySettings(secret=SecretStr(SECRET))) == SECRET
    dev = tmp_path / "gateway-secret"
    with pytest.raises(auth.SecretError, match="GIG_GATEWAY__SECRET"):
        auth.resolve_secret(GatewaySettings(), dev)  # production never makes one silently
    assert not dev.exists()
    made = auth.resolve_secret(GatewaySettings(dev_secret=True), dev)
    assert len(made) >= 32 and auth.resolve_secret(GatewaySettings(dev_secret=True), dev) == made
    assert dev.stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("weak", ["", "a", "x" * 31])
def test_short_secrets_are_refused(weak: str, tmp_path: Path) -> None:
    with pytest.raises(auth.SecretError, match="at least 32"):
        auth.resolve_secret(GatewaySettings(secret=SecretStr(weak)))
    dev = tmp_path / "gateway-secret"
    dev.write_text(weak)
    with pytest.raises(auth.SecretError):
        auth.resolve_secret(GatewaySettings(dev_secret=True), dev)


async def test_the_gateway_does_not_start_with_a_weak_secret() -> None:
    weak = Settings().model_copy(update={"gateway": GatewaySettings(secret=SecretStr("a"), port=0)})
    with pytest.raises(auth.SecretError, match="at least 32"):
        async with serving(weak):
            pytest.fail("the gateway started with a one-letter secret")


def test_gig_token_refuses_a_weak_or_missing_secret(capsys: pytest.CaptureFixture[str]) -> None:
    weak = Settings().model_copy(update={"gateway": GatewaySettings(secret=SecretStr("a"))})
    with pytest.raises(auth.SecretError):
        tokens.credentials(weak, "worker", "W-1", None)


BAD_IDS = ["", "W 1", "W-1; DROP", "x" * 141, "工人"]


@pytest.mark.parametrize("subject", BAD_IDS)
def test_tokens_only_for_valid_ids(subject: str) -> None:
    with pytest.raises(ValueError):
        auth.issue_token(SECRET, "worker", subject, NOW_S, 60)
    good = Settings().model_copy(update={"gateway": GatewaySettings(secret=SecretStr(SECRET))})
    with pytest.raises(ValueError):
        tokens.credentials(good, "worker", subject, None)
    with pytest.raises(SystemExit):
        tokens.main(["worker", subject])


@pytest.mark.parametrize("subject", BAD_IDS)
def test_a_token_naming_an_invalid_id_is_401(subject: str) -> None:
    forged_by_us = jwt.encode(
        {"sub": subject, "role": "worker", "iat": NOW_S, "exp": NOW_S + 60}, SECRET, "HS256"
    )
    with pytest.raises(auth.AuthError) as refused:
        auth.verify_token(SECRET, forged_by_us, NOW_S)
    assert refused.value.status == 401


def test_refusals_are_generic() -> None:
    for rule, who, subject in [
        (auth.may_write_market, STATION, "G2"),
        (auth.may_write_market, WORKER, "G1"),
        (auth.may_read_market, STATION, "G2"),
        (auth.may_read_worker, WORKER, "W2"),
    ]:
        with pytest.raises(auth.AuthError) as refused:
            rule(who, subject)
        assert refused.value.reason == auth.NOT_ALLOWED
    with pytest.raises(auth.AuthError) as bad:
        auth.verify_token(SECRET, "not-a-jwt", NOW_S)
    assert "not-a-jwt" not in bad.value.reason and "Invalid" not in bad.value.reason


# --- OpenAPI --------------------------------------------------------------------------------


def test_openapi_lists_every_status_and_the_skill_enum() -> None:
    spec = create_app(Settings()).openapi()
    api = "/api/v1"
    expected = {
        ("post", f"{api}/requests"): {"202", "401", "403", "409", "422"},
        ("get", f"{api}/requests/{{request_id}}"): {"200", "401", "403", "404"},
        ("post", f"{api}/requests/{{request_id}}/cancel"): {"202", "401", "403", "404"},
        ("get", f"{api}/requests/{{request_id}}/events"): {"200", "401", "403", "404"},
        ("get", f"{api}/workers/{{worker_id}}/offers"): {"200", "401", "403", "422"},
        ("post", f"{api}/answers"): {"200", "401", "403", "409"},
        ("post", f"{api}/worker/check-in"): {"202", "401", "403", "422"},
        ("post", f"{api}/worker/offline"): {"202", "401", "403"},
        ("post", f"{api}/auth/station"): {"200", "401", "422"},
        ("post", f"{api}/auth/dev"): {"200", "404", "422"},
        ("get", f"{api}/me"): {"200", "401"},
    }
    for (method, path), codes in expected.items():
        assert codes <= set(spec["paths"][path][method]["responses"]), (method, path)
    skill = spec["components"]["schemas"]["HireRequestIn"]["properties"]["skill"]
    assert skill["enum"] == list(ev.SKILLS)


# --- supervision ------------------------------------------------------------------------------


async def test_a_dying_task_is_restarted_with_backoff_until_stopped() -> None:
    started: asyncio.Queue[int] = asyncio.Queue()
    runs = 0

    async def job() -> None:
        nonlocal runs
        runs += 1
        started.put_nowait(runs)
        if runs < 3:
            raise RuntimeError("boom")  # dies twice
        await asyncio.Event().wait()

    sup = Supervisor("test-job", job, Backoff(first_s=0.001, max_s=0.002))
    sup.start()
    assert [await asyncio.wait_for(started.get(), 10) for _ in range(3)] == [1, 2, 3]
    assert sup.restarts == 2 and sup.current is not None and not sup.current.done()
    sup.current.cancel()  # killed by someone else: restarted too
    assert await asyncio.wait_for(started.get(), 10) == 4
    assert sup.restarts == 3
    await sup.stop()
    assert sup.current.done()


def test_backoff_doubles_up_to_its_cap() -> None:
    b = Backoff(first_s=0.5, max_s=3.0)
    assert [b.delay_s(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


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
