"""Riding out outages and poison records: backoff, retries for ever, isolation of the record
at fault, bounded dead letters, stop during any wait, bounded joins."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
from aiokafka.errors import CommitFailedError, KafkaTimeoutError
from redis.exceptions import ConnectionError as RedisConnectionError

from infra import backoff, joining
from infra.consume import Durable, Resilience, consume
from infra.decoding import dead_letter, decode, payload_head
from infra.health import Health
from infra.publish import Outgoing, Publisher
from schemas import events as ev

pytestmark = pytest.mark.unit
T = "gig.worker-events.v1"


@dataclass(frozen=True)
class Record:
    value: bytes | None
    offset: int
    key: bytes | None = b"k"
    topic: str = T
    partition: int = 0


class Consumer:
    """Hands out the batches once, then stops the loop (unless told to keep going)."""

    def __init__(self, batches: list[list[bytes]], stop: asyncio.Event, *, ends: bool = True):
        self.batches, self.stop, self.ends = batches, stop, ends
        self.offset, self.commits = 0, []  # type: ignore[var-annotated]
        self.refuse_commits = 0

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[str, list[Record]]:
        if not self.batches:
            if self.ends:
                self.stop.set()
            await asyncio.sleep(0)
            return {}
        part = []
        for value in self.batches.pop(0):
            part.append(Record(value, self.offset))
            self.offset += 1
        return {"tp": part}

    async def commit(self, offsets: dict[str, int]) -> None:
        if self.refuse_commits:
            self.refuse_commits -= 1
            raise CommitFailedError("the group rebalanced")
        self.commits.append(dict(offsets))


class Sink:
    """Collects dead letters as a publisher would send them."""

    def __init__(self) -> None:
        self.sent: list[Outgoing] = []

    async def send(self, messages: list[Outgoing]) -> None:
        self.sent.extend(messages)

    def letters(self) -> list[ev.DeadLetter]:
        return [m.message for m in self.sent if isinstance(m.message, ev.DeadLetter)]


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backoff.Backoff, "delay", lambda self, attempt, draw: 0.0)


def values(records: list[Any]) -> list[bytes]:
    return [r.value for r in records]


# --- backoff ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "draw", "delay"),
    [(0, 0.0, 0.1), (0, 0.999, 0.2), (1, 0.0, 0.2), (3, 0.5, 1.2), (5, 0.0, 2.5), (50, 1.0, 5.0)],
)
def test_backoff_doubles_from_a_fifth_of_a_second_to_five_with_jitter(
    monkeypatch: pytest.MonkeyPatch, attempt: int, draw: float, delay: float
) -> None:
    monkeypatch.undo()  # the real delays
    assert backoff.Backoff().delay(attempt, draw) == pytest.approx(delay, abs=1e-3)


async def test_a_lasting_failure_is_logged_every_few_seconds_not_per_attempt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    health = Health()
    retry = backoff.Retrying("thing", asyncio.Event(), health, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "infra.backoff"):
        for _ in range(20):  # 20 failures in 2 s: one line
            assert await retry.wait(RedisConnectionError("down"))
            now[0] += 0.1
        now[0] += backoff.LOG_EVERY_S
        assert await retry.wait(RedisConnectionError("down"))
    assert len(caplog.records) == 2
    assert "failing for" in caplog.records[1].getMessage()
    assert health.state == "degraded" and "down" in health.reason
    retry.succeeded()
    assert health.state == "ok"


# --- retries ------------------------------------------------------------------------------


async def test_a_batch_failing_for_a_while_is_handled_once_it_works_and_nothing_is_dropped() -> (
    None
):
    stop, health = asyncio.Event(), Health()
    consumer = Consumer([[b"a", b"b"], [b"c"]], stop)
    done: list[list[bytes]] = []
    failures = [RedisConnectionError("restarting")] * 7 + [KafkaTimeoutError()] * 3

    async def handler(records: list[Any]) -> None:
        if records and values(records) == [b"a", b"b"] and failures:
            raise failures.pop()
        if records:
            done.append(values(records))

    resilience = Resilience(health=health)
    await consume(consumer, handler, stop, resilience=resilience)  # type: ignore[arg-type]
    assert done == [[b"a", b"b"], [b"c"]]
    assert consumer.commits[-1] == {"tp": 3}
    assert health.state == "ok"


async def test_stop_during_a_long_backoff_returns_promptly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backoff.Backoff, "delay", lambda self, attempt, draw: 3600.0)
    stop = asyncio.Event()
    consumer = Consumer([[b"a"]], stop, ends=False)
    failed = asyncio.Event()

    async def handler(records: list[Any]) -> None:
        failed.set()
        raise RedisConnectionError("down")

    task = asyncio.create_task(consume(consumer, handler, stop))  # type: ignore[arg-type]
    await failed.wait()
    stop.set()
    await asyncio.wait_for(task, 30)  # an hour's backoff, cut short
    assert consumer.commits == []


async def test_a_failed_publish_is_sent_again_with_the_same_bytes() -> None:
    stop = asyncio.Event()
    consumer = Consumer([[b"a"]], stop, ends=False)
    producer = FlakyProducer(fail_first=2)
    publisher = Publisher(producer)  # type: ignore[arg-type]
    msg = ev.WorkerWentOffline(event_id="wo:1", at_ms=1, worker_id="w1")

    async def handler(records: list[Any]) -> Durable:
        if consumer.commits:
            stop.set()
        return await publisher.send([Outgoing(T, "w1", msg)] if records else [])

    await consume(consumer, handler, stop)  # type: ignore[arg-type]
    assert len(producer.sent) == 3 and len(set(producer.sent)) == 1  # same event id each time
    assert consumer.commits == [{"tp": 1}]


async def test_a_commit_refused_after_a_rebalance_is_survived() -> None:
    stop = asyncio.Event()
    consumer = Consumer([[b"a"], [b"b"]], stop)
    consumer.refuse_commits = 1
    done: list[bytes] = []

    async def handler(records: list[Any]) -> None:
        done.extend(values(records))

    await consume(consumer, handler, stop)  # type: ignore[arg-type]
    assert done == [b"a", b"b"]
    assert consumer.commits == [{"tp": 2}]  # the first was refused, the loop went on


class FlakyProducer:
    """An aiokafka producer whose first sends are never acknowledged."""

    def __init__(self, fail_first: int) -> None:
        self.fail_first = fail_first
        self.sent: list[tuple[str, bytes, bytes]] = []

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[None]:
        self.sent.append((topic, key, value))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if len(self.sent) <= self.fail_first:
            future.set_exception(KafkaTimeoutError("no answer from the broker"))
        else:
            future.set_result(None)
        return future


# --- poison records -------------------------------------------------------------------------


class Boom:
    """An adapter that fails on chosen payloads the way real decoding can."""

    errors: ClassVar[dict[bytes, Exception]] = {
        b"deep": RecursionError("maximum recursion depth exceeded"),
        b"huge": OverflowError("int too large to convert to float"),
        b"text": UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
    }

    def validate_json(self, raw: bytes) -> str:
        if raw in self.errors:
            raise self.errors[raw]
        return raw.decode()


def test_any_decoding_failure_makes_a_dead_letter_with_a_readable_reason() -> None:
    records = [Record(v, i) for i, v in enumerate([b"ok1", b"deep", b"huge", b"text", b"ok2"])]
    decoded = decode(records, {T: Boom()}, "test")  # type: ignore[dict-item]
    assert [msg for _, msg in decoded.good] == ["ok1", "ok2"]
    reasons = [m.message.reason for m in decoded.dead]  # type: ignore[attr-defined]
    assert ["RecursionError" in reasons[0], "OverflowError" in reasons[1]] == [True, True]
    assert "UnicodeDecodeError" in reasons[2]


def test_deeply_nested_json_is_a_dead_letter() -> None:
    raw = b"[" * 100_000 + b"]" * 100_000
    decoded = decode([Record(raw, 0)], {T: ev.WORKER_EVENT}, "test")
    assert not decoded.good and len(decoded.dead) == 1


def test_a_huge_nul_payload_makes_a_small_dead_letter() -> None:
    raw = b"\x00" * 200_000
    record = Record(raw, 7, key=b"\x00" * 100_000)
    letter = dead_letter(record, "dispatcher", "x" * 50_000)  # type: ignore[arg-type]
    body = letter.message.model_dump_json().encode()
    assert len(body) < 16 * 1024
    assert len(letter.key.encode()) < 2048
    parsed = ev.DEAD_LETTER.validate_json(body)
    assert parsed.payload_bytes == len(raw)
    assert parsed.payload_sha256 == hashlib.sha256(raw).hexdigest()
    assert parsed.payload and set(parsed.payload) == {"\x00"}  # the head, as it was
    assert len(parsed.reason) <= ev.DEAD_LETTER_REASON_MAX


@pytest.mark.parametrize("raw", [b"", b"plain", 'héllo\n"q"'.encode(), b"\xff\xfe" * 5000])
def test_the_head_of_a_payload_fits_its_budget_in_json(raw: bytes) -> None:
    head = payload_head(raw, 100)
    assert len(json.dumps(head, ensure_ascii=False).encode()) <= 102  # the quotes aside
    assert raw.decode(errors="replace").startswith(head)


async def test_a_record_failing_for_good_is_dead_lettered_and_the_rest_handled() -> None:
    stop, sink = asyncio.Event(), Sink()
    batch = [b"a", b"b", b"poison", b"c", b"d", b"e", b"f"]
    consumer = Consumer([batch, [b"g"]], stop)
    handled: list[bytes] = []

    async def handler(records: list[Any]) -> None:
        if b"poison" in values(records):
            raise ValueError("Redis refused the value")
        handled.extend(values(records))

    resilience = Resilience("test", sink)
    await consume(consumer, handler, stop, resilience=resilience)  # type: ignore[arg-type]
    assert sorted(handled) == [b"a", b"b", b"c", b"d", b"e", b"f", b"g"]
    [letter] = sink.letters()
    assert (letter.offset, letter.payload) == (2, "poison")
    assert "ValueError" in letter.reason and "Redis refused the value" in letter.reason
    assert consumer.commits[0] == {"tp": 7}  # the failing batch, committed past the poison


async def test_a_handler_failing_without_records_too_keeps_the_batch() -> None:
    stop, sink = asyncio.Event(), Sink()
    consumer = Consumer([[b"a", b"b"]], stop, ends=False)
    calls = 0

    async def handler(records: list[Any]) -> None:
        nonlocal calls
        calls += 1
        if calls == 30:
            stop.set()
        raise TypeError("a bug in the timers, not in the records")

    resilience = Resilience("test", sink)
    await consume(consumer, handler, stop, resilience=resilience)  # type: ignore[arg-type]
    assert sink.sent == [] and consumer.commits == []


# --- joining ------------------------------------------------------------------------------


class NeverJoins:
    made = 0

    def __init__(self) -> None:
        NeverJoins.made += 1
        self.stopped = False

    async def start(self) -> None:
        await asyncio.Event().wait()

    async def stop(self) -> None:
        self.stopped = True


async def test_a_join_that_never_completes_is_retried_with_fresh_members_until_stopped() -> None:
    stop, health, made = asyncio.Event(), Health(), []

    def make() -> NeverJoins:
        made.append(NeverJoins())
        if len(made) == 3:
            asyncio.get_running_loop().call_later(0.05, stop.set)
        return made[-1]

    with pytest.raises(backoff.Stopped):
        await joining.join_group(make, stop, group="g", timeout_s=0.01, health=health)  # type: ignore[arg-type]
    assert len(made) >= 3 and all(c.stopped for c in made)
    assert health.state == "joining"


async def test_unless_stopped_gives_the_work_its_grace_then_cancels_it() -> None:
    stop = asyncio.Event()
    stop.set()
    assert await backoff.unless_stopped(asyncio.sleep(0, "done"), stop, grace_s=1.0) == "done"
    with pytest.raises(backoff.Stopped):
        await backoff.unless_stopped(asyncio.Event().wait(), stop, grace_s=0.01)
