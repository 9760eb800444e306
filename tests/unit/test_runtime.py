"""The consumer loop: batches are committed after their handler, retried on outages."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from infra import backoff
from infra import consume as consume_module
from infra.consume import Durable, consume
from infra.tasks import within

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class Record:
    value: str
    offset: int


class FakeConsumer:
    def __init__(self, batches: list[list[str]], stop: asyncio.Event) -> None:
        self.batches, self.stop, self.commits = batches, stop, 0
        self.offset = 0

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[str, list[Record]]:
        if not self.batches:
            self.stop.set()
            return {}
        records = []
        for value in self.batches.pop(0):
            records.append(Record(value, self.offset))
            self.offset += 1
        return {"tp": records}

    async def commit(self, offsets: dict[str, int]) -> None:
        self.commits += 1
        self.committed = offsets


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backoff.Backoff, "delay", lambda self, attempt, draw: 0.0)


async def test_each_batch_is_committed_after_its_handler_and_outages_are_retried() -> None:
    stop = asyncio.Event()
    consumer = FakeConsumer([["a", "b"], ["c"]], stop)
    seen: list[list[str]] = []
    failures = iter([RedisConnectionError("redis restarting")])

    async def handler(records: list[Any]) -> None:
        values = [r.value for r in records]
        if values == ["c"] and (e := next(failures, None)):
            raise e
        seen.append(values)

    await consume(consumer, handler, stop)  # type: ignore[arg-type]
    assert seen == [["a", "b"], ["c"], []]
    assert consumer.commits == 2
    assert consumer.committed == {"tp": 3}  # the next offset to read


async def test_a_batch_is_committed_only_after_its_messages_are_acknowledged() -> None:
    stop = asyncio.Event()
    consumer = FakeConsumer([["a"], ["b"]], stop)
    acks: list[asyncio.Future[None]] = []
    both_handled = asyncio.Event()

    async def handler(records: list[Any]) -> Durable:
        if not records:
            return None
        acks.append(asyncio.get_running_loop().create_future())
        if len(acks) == 2:
            both_handled.set()
        return acks[-1]

    task = asyncio.create_task(consume(consumer, handler, stop))  # type: ignore[arg-type]
    await both_handled.wait()  # the second batch is handled while the first waits for its ack
    assert consumer.commits == 0
    acks[0].set_result(None)
    acks[1].set_result(None)
    await task
    assert consumer.commits == 2 and consumer.committed == {"tp": 2}


async def test_a_lasting_outage_is_waited_out_until_stopped_without_committing() -> None:
    stop = asyncio.Event()
    consumer = FakeConsumer([["a"]], stop)
    consumer.stop = asyncio.Event()  # the fake no longer stops the loop by itself
    calls = 0

    async def handler(records: list[Any]) -> None:
        nonlocal calls
        calls += 1
        if calls == 50:
            stop.set()
        raise RedisConnectionError("down")

    await consume(consumer, handler, stop)  # type: ignore[arg-type]
    assert calls == 50 and consumer.commits == 0


async def test_a_loop_cancelled_from_outside_ends_although_its_last_batch_never_settles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(consume_module, "STOP_GRACE_S", 0.05)
    monkeypatch.setattr(consume_module, "COMMIT_TIMEOUT_S", 0.05)
    stop = asyncio.Event()  # never set: the owner cancels the task instead
    consumer = FakeConsumer([["a"]], stop)
    consumer.stop = asyncio.Event()
    handled = asyncio.Event()
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def handler(records: list[Any]) -> Durable:
        if records:
            return never  # its acknowledgements never come
        handled.set()
        await asyncio.sleep(60)  # the cancellation lands here, in the next batch's handler
        return None

    task = asyncio.create_task(consume(consumer, handler, stop))  # type: ignore[arg-type]
    await handled.wait()
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=5)
    assert task in done and task.cancelled()
    assert consumer.commits == 0


async def test_within_leaves_behind_work_that_ignores_its_cancellation() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:  # like a client whose close awaits its own tasks
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await release.wait()

    async with asyncio.timeout(5):
        assert not await within(stubborn(), 0.05)
        assert await within(asyncio.sleep(0), 1.0)
        with pytest.raises(ValueError):
            await within(_fails(), 1.0)
    release.set()


async def _fails() -> None:
    raise ValueError("no")
