"""The consumer loop: batches are committed after their handler, retried on outages."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from consumers import runtime

pytestmark = pytest.mark.unit


class FakeConsumer:
    def __init__(self, batches: list[list[str]], stop: asyncio.Event) -> None:
        self.batches, self.stop, self.commits = batches, stop, 0

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[str, list[str]]:
        if not self.batches:
            self.stop.set()
            return {}
        return {"tp": self.batches.pop(0)}

    async def commit(self) -> None:
        self.commits += 1


async def test_each_batch_is_committed_after_its_handler_and_outages_are_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime.asyncio, "sleep", _no_sleep)
    stop = asyncio.Event()
    consumer = FakeConsumer([["a", "b"], ["c"]], stop)
    seen: list[list[str]] = []
    failures = iter([RedisConnectionError("redis restarting")])

    async def handler(records: list[Any]) -> None:
        if records == ["c"] and (e := next(failures, None)):
            raise e
        seen.append(records)

    await runtime.consume(consumer, handler, stop)  # type: ignore[arg-type]
    assert seen == [["a", "b"], ["c"], []]
    assert consumer.commits == 2


async def test_a_lasting_outage_stops_the_consumer_without_committing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime.asyncio, "sleep", _no_sleep)
    stop = asyncio.Event()
    consumer = FakeConsumer([["a"]], stop)

    async def handler(records: list[Any]) -> None:
        raise RedisConnectionError("down")

    with pytest.raises(RedisConnectionError):
        await runtime.consume(consumer, handler, stop)  # type: ignore[arg-type]
    assert consumer.commits == 0


async def _no_sleep(_: float) -> None:
    return None
