"""The metric helpers: error systems, dead-letter reason kinds, lag arithmetic, first offers,
decision counts, the probes' answers, the JSON log format and the groups table."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path

import asyncpg
import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError
from prometheus_client import REGISTRY
from pydantic import BaseModel
from redis.exceptions import ConnectionError as RedisConnectionError

from dispatch.model import Job, Offer, OfferStatus, RequestState
from infra import metrics
from infra.backoff import Backoff, Retrying
from infra.health import Health
from infra.process import JsonFormatter, log_ids
from infra.publish import Outgoing
from infra.stack import GroupLag, group_lags
from schemas import events as ev
from schemas.topics import DEAD_LETTERS, OFFERS

pytestmark = pytest.mark.unit


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize(
    ("error", "system"),
    [
        (RedisConnectionError("gone"), "redis"),
        (KafkaConnectionError("no broker"), "kafka"),
        (asyncpg.CannotConnectNowError("starting"), "postgres"),
        (ConnectionRefusedError(111, "refused"), "network"),
        (TimeoutError(), "network"),
        (ValueError("bug"), "other"),
    ],
)
def test_an_errors_system_is_told_by_its_type(error: BaseException, system: str) -> None:
    assert metrics.system_of(error) == system


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("unknown market 'G9'", "unknown_market"),
        ("at_ms is 900000 ms in the future (at most 300000 allowed)", "time"),
        ("deadline_at_ms is more than 86400 s ahead", "time"),
        ("refused: cancel from another market", "refused"),
        ("cannot be decoded: RecursionError: too deep", "undecodable"),
        ("the dispatcher handler failed on it: KeyError: 'x'", "handler_failed"),
        ("gave up after 5 conflicting saves", "conflict"),
        ("headcount: Input should be greater than or equal to 1", "invalid"),
        ("message: Invalid JSON: EOF while parsing a value", "undecodable"),
        ("something nobody foresaw", "other"),
    ],
)
def test_a_dead_letters_reason_becomes_one_of_a_few_kinds(reason: str, kind: str) -> None:
    assert metrics.reason_kind(reason) == kind


def test_dead_letters_are_counted_by_consumer_and_kind() -> None:
    assert metrics.DEAD_LETTER_TOPIC == DEAD_LETTERS
    letter = ev.DeadLetter(
        at_ms=1, consumer="dispatcher", source_topic="t", partition=0, offset=1, key=None,
        reason="unknown market 'G9'", payload="{}",
    )  # fmt: skip
    before = value("gig_dead_letters_total", consumer="unit", reason="unknown_market")
    offer = Outgoing(OFFERS, "w", ev.WorkerWentOffline(event_id="x", at_ms=1, worker_id="w"))
    sent = [Outgoing(DEAD_LETTERS, "k", letter), offer, Outgoing(DEAD_LETTERS, "k", letter)]
    assert metrics.dead_letters_sent("unit", sent) == 2
    after = value("gig_dead_letters_total", consumer="unit", reason="unknown_market")
    assert after - before == 2


def test_lag_is_the_end_minus_the_position_never_negative() -> None:
    a, b, c = (TopicPartition("t", i) for i in range(3))
    ends = {a: 100, b: 5, c: 7}
    assert metrics.lag_by_partition(ends, {a: 40, b: 5}) == {a: 60, b: 0}
    assert metrics.lag_by_partition({a: 3}, {a: 10}) == {a: 0}  # a reset log: not negative


def test_the_lag_gauge_drops_partitions_no_longer_owned() -> None:
    gauge = metrics.LagGauge("unit-group")
    a, b = TopicPartition("t", 0), TopicPartition("t", 1)
    assert gauge.show({a: 3, b: 4}) == 7
    assert value("gig_consumer_lag", group="unit-group", topic="t", partition="1") == 4
    gauge.show({a: 1})
    samples = REGISTRY.get_sample_value("gig_consumer_lag", {"group": "unit-group",
                                        "topic": "t", "partition": "1"})  # fmt: skip
    assert samples is None
    gauge.clear()
    assert (
        REGISTRY.get_sample_value("gig_consumer_lag_measured_seconds", {"group": "unit-group"})
        is None
    )


def _state(offers: tuple[Offer, ...], requested_at_ms: int = 1_000) -> RequestState:
    job = Job("R-1", "G1", "cook", 2, 200.0, 113.0, 28.0, requested_at_ms, 0, 9_999_999)
    return RequestState(job=job, offers=offers)


def _offer(oid: str, made_at_ms: int) -> Offer:
    return Offer(oid, f"w-{oid}", OfferStatus.MADE, 1, 1.0, 0.5, made_at_ms, made_at_ms + 15_000)


def test_the_first_offer_is_timed_from_the_request_only_when_this_decision_made_it() -> None:
    assert metrics.first_offer_s(_state(()), 5_000) is None
    assert metrics.first_offer_s(_state((_offer("a", 3_500),)), 3_500) == 2.5
    later = _state((_offer("a", 3_500), _offer("b", 9_000)))
    assert metrics.first_offer_s(later, 9_000) is None  # a second wave: not the first offer
    before = value("gig_time_to_first_offer_seconds_count")
    assert metrics.first_offers([(_state((_offer("a", 3_500),)), 3_500), (later, 9_000)]) == 1
    assert value("gig_time_to_first_offer_seconds_count") - before == 1


class Fake(BaseModel):
    n: int = 0


class OfferMade(Fake):
    pass


class WorkerAssigned(Fake):
    pass


def test_decisions_are_counted_by_type_with_offers_and_assignments() -> None:
    before = value("gig_offers_total"), value("gig_assignments_total")
    out = [Outgoing(OFFERS, "w", OfferMade()), Outgoing(OFFERS, "w", OfferMade()),
           Outgoing("e", "r", WorkerAssigned()), Outgoing(DEAD_LETTERS, "k", Fake())]  # fmt: skip
    assert metrics.decided(out) == (3, 2, 1)
    assert value("gig_offers_total") - before[0] == 2
    assert value("gig_assignments_total") - before[1] == 1


async def test_a_batch_is_timed_and_sized_but_an_empty_poll_is_not() -> None:
    count = "gig_batch_records_count"
    before = value(count, consumer="unit"), value("gig_batch_records_sum", consumer="unit")

    async def handler(records: list[int]) -> int:
        return len(records)

    timed = metrics.timed("unit", handler)
    assert await timed([1, 2, 3]) == 3
    assert await timed([]) == 0
    assert value(count, consumer="unit") - before[0] == 1
    assert value("gig_batch_records_sum", consumer="unit") - before[1] == 3


async def test_retries_are_counted_by_the_system_that_failed() -> None:
    stop = asyncio.Event()
    retry = Retrying("unit", stop, backoff=Backoff(0.001, 0.001), draw=lambda: 0.0)
    errors, retries = (
        value("gig_errors_total", system="redis"),
        value("gig_retries_total", system="redis"),
    )
    recovered = value("gig_recoveries_total", system="redis")
    assert await retry.wait(RedisConnectionError("gone"))
    assert await retry.wait(RedisConnectionError("still gone"))
    retry.succeeded()
    assert value("gig_errors_total", system="redis") - errors == 2
    assert value("gig_retries_total", system="redis") - retries == 2
    assert value("gig_recoveries_total", system="redis") - recovered == 1
    stop.set()
    assert not await retry.wait(RedisConnectionError("stopped"))  # failed, not retried
    assert value("gig_retries_total", system="redis") - retries == 2


def test_ready_only_when_joined_measured_caught_up_and_the_cache_whole() -> None:
    health = Health()
    probe = metrics.Probe(health, max_lag=10)
    assert probe.ready()[0] is False  # joining
    health.ok()
    ready, body = probe.ready()
    assert not ready and body["lag"] is None  # not measured yet
    health.measured(11)
    assert probe.ready()[0] is False
    health.measured(10)
    assert probe.ready() == (True, probe.ready()[1])
    with metrics.rebuilding():
        ready, body = probe.ready()
        assert not ready and body["cache_rebuilding"] is True
    health.degraded("redis: gone")
    assert probe.ready()[0] is False
    assert probe.alive()["alive"] is True


def test_the_endpoints_answer() -> None:
    health = Health()
    probe = metrics.Probe(health, max_lag=0)
    code, kind, body = metrics.respond("GET", "/readyz", probe)
    assert code == 503 and json.loads(body)["state"] == "joining"
    health.ok()
    health.measured(0)
    assert metrics.respond("GET", "/readyz?verbose=1", probe)[0] == 200
    assert metrics.respond("GET", "/healthz", probe)[0] == 200
    code, kind, body = metrics.respond("GET", "/metrics", probe)
    assert code == 200 and kind.startswith("text/plain") and b"gig_consumer_lag" in body
    assert metrics.respond("GET", "/", probe)[0] == 404
    assert metrics.respond("POST", "/metrics", probe)[0] == 405


def test_throughput_lines_say_what_was_done_and_reset() -> None:
    t = metrics.Throughput("dispatcher", every_s=30, since=0.0)
    t.add(100, 40, 20, 5)
    t.add(0)
    assert not t.due(10.0) and t.due(30.0)
    line = t.line(7, now=10.0)
    assert line == (
        "dispatcher: 1 batches, 100 records (10/s), 40 decisions (4/s), 20 offers, "
        "5 assignments in 10 s; lag 7 records"
    )
    assert t.records == 0 and t.since == 10.0


def test_json_log_lines_carry_request_and_worker_ids() -> None:
    fmt = JsonFormatter()
    record = logging.LogRecord(
        "dispatcher", logging.WARNING, "f", 1, "request %s failed", ("R-1",), None
    )
    record.request_id = "R-1"
    line = json.loads(fmt.format(record))
    assert line["msg"] == "request R-1 failed" and line["request_id"] == "R-1"
    assert line["level"] == "WARNING" and line["logger"] == "dispatcher"
    with log_ids(worker_id="W-9"):
        plain = logging.LogRecord("x", logging.INFO, "f", 1, "hi", None, None)
        assert json.loads(fmt.format(plain))["worker_id"] == "W-9"
    assert "worker_id" not in json.loads(fmt.format(plain))


GROUPS_TABLE = """
Consumer group 'gig-archiver' has no active members.

GROUP  TOPIC  PARTITION  CURRENT-OFFSET  LOG-END-OFFSET  LAG  CONSUMER-ID  HOST  CLIENT-ID
gig-archiver  gig.offers.v1  0  10  25  15  -  -  -
gig-archiver  gig.offers.v1  1  -  4  -  -  -  -

GROUP  TOPIC  PARTITION  CURRENT-OFFSET  LOG-END-OFFSET  LAG  CONSUMER-ID  HOST  CLIENT-ID
gig-dispatcher  gig.hire-requests.v1 0  7  7  0  aiokafka-1-abc  /127.0.0.1  aiokafka-1
gig-dispatcher  gig.hire-requests.v1 1  3  5  2  aiokafka-2-def  /127.0.0.1  aiokafka-2
"""


def test_the_groups_table_is_summed_per_group() -> None:
    assert group_lags(GROUPS_TABLE) == [
        GroupLag("gig-archiver", 15, 2, 1, 0),
        GroupLag("gig-dispatcher", 2, 2, 0, 2),
    ]
    assert group_lags("") == []


def test_the_grafana_dashboard_imports_and_shows_only_metrics_that_exist() -> None:
    path = Path(metrics.__file__).parent / "grafana" / "gig-dispatch.json"
    dash = json.loads(path.read_text())
    assert dash["__inputs"][0]["name"] == "DS_PROMETHEUS"
    suffixes = ("", "_total", "_bucket", "_sum", "_count")
    known = {
        f.name + end for f in REGISTRY.collect() if f.name.startswith("gig_") for end in suffixes
    }
    titles = [p["title"] for p in dash["panels"]]
    assert len(set(titles)) == len(titles) >= 8
    for p in dash["panels"]:
        assert p["datasource"]["uid"] == "${DS_PROMETHEUS}"
        for target in p["targets"]:
            for name in re.findall(r"gig_\w+", target["expr"]):
                assert name in known, (p["title"], name)
