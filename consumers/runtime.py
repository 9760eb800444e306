"""The shared consumer loop: batched reads, decoding at the edge, dead letters, commits.

Every consumer reads batches with ``getmany``, decodes each record with a pydantic adapter,
sends anything it cannot decode to the dead-letter topic with the reason, hands the rest to its
handler, and commits the batch after the handler's effects are done. A redelivered batch is
harmless because every handler is idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import KafkaError
from pydantic import BaseModel, TypeAdapter, ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from schemas.events import DeadLetter
from schemas.topics import DEAD_LETTERS

T = TypeVar("T")
log = logging.getLogger(__name__)
HANDLER_RETRIES = 3
# Failures of a service that may come back (a Redis restart, a broker hiccup): the batch is
# retried as a whole, which is safe because every handler is idempotent.
RETRYABLE = (
    ConnectionError,
    OSError,
    TimeoutError,
    RedisConnectionError,
    RedisTimeoutError,
    KafkaError,
)


def now_ms() -> int:
    """Wall-clock epoch milliseconds: the live clock the shell hands the core."""
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to publish: topic, key, and the model that becomes its JSON value."""

    topic: str
    key: str
    message: BaseModel


class Publisher:
    """Publishes outgoing messages on Kafka."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer

    async def send(self, messages: Sequence[Outgoing]) -> Awaitable[Any] | None:
        """Hand the messages to the producer; return what completes when the broker has them."""
        futures = [
            await self.producer.send(
                m.topic, m.message.model_dump_json().encode(), key=m.key.encode()
            )
            for m in messages
        ]
        return asyncio.gather(*futures) if futures else None

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        """Send the messages and wait until the broker has them all."""
        pending = await self.send(messages)
        if pending is not None:
            await pending


class MemoryPublisher:
    """Collects what would be published, for unit tests."""

    def __init__(self) -> None:
        self.sent: list[Outgoing] = []

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        self.sent.extend(messages)


def explain(error: ValidationError) -> str:
    """A one-line reason a person can act on."""
    parts = []
    for e in error.errors(include_url=False)[:5]:
        # pydantic names validator wrappers in the path ("function-after[...]"): drop them.
        where = ".".join(str(x) for x in e["loc"] if "[" not in str(x)) or "message"
        parts.append(f"{where}: {e['msg']}")
    return "; ".join(parts)


def dead_letter(record: ConsumerRecord[Any, Any], consumer: str, reason: str) -> Outgoing:
    raw = record.value or b""
    key = record.key.decode(errors="replace") if record.key else None
    letter = DeadLetter(
        at_ms=now_ms(),
        consumer=consumer,
        source_topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=key,
        reason=reason,
        payload=raw.decode(errors="replace"),
    )
    return Outgoing(DEAD_LETTERS, key or f"{record.topic}:{record.partition}", letter)


@dataclass
class Decoded(Generic[T]):
    good: list[tuple[ConsumerRecord[Any, Any], T]]
    dead: list[Outgoing]


def decode(
    records: Sequence[ConsumerRecord[Any, Any]],
    adapters: Mapping[str, TypeAdapter[T]],
    consumer: str,
) -> Decoded[T]:
    """Split a batch into valid messages and dead letters with reasons; each topic has its
    own adapter, so a message valid on one topic is refused on another."""
    out: Decoded[T] = Decoded([], [])
    for r in records:
        try:
            out.good.append((r, adapters[r.topic].validate_json(r.value or b"")))
        except ValidationError as e:
            log.warning(
                "%s: dead-lettering %s[%d]@%d: %s",
                consumer,
                r.topic,
                r.partition,
                r.offset,
                explain(e),
            )
            out.dead.append(dead_letter(r, consumer, explain(e)))
    return out


# A handler may return what completes once its batch's effects are durable (its messages
# acknowledged by the broker), or None when they already are.
Durable = Awaitable[Any] | None
Handler = Callable[[list[ConsumerRecord[Any, Any]]], Awaitable[Durable]]


async def consume(
    consumer: AIOKafkaConsumer,
    handler: Handler,
    stop: asyncio.Event,
    *,
    poll_ms: int = 100,
    max_records: int = 2000,
) -> None:
    """Read batches until ``stop`` is set; commit each batch once its effects are durable.

    The handler is called on every poll, also with an empty batch, so it can do timed work.
    While the broker acknowledges one batch's messages, the next batch is read and handled;
    batches are committed in order, each only after its own messages are acknowledged.
    """
    settling: asyncio.Task[None] | None = None
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=poll_ms, max_records=max_records)
            records = [r for part in batch.values() for r in part]
            durable = await _with_retries(handler, records)
            if settling is not None:
                await settling
                settling = None
            if records:
                offsets = {tp: part[-1].offset + 1 for tp, part in batch.items() if part}
                settling = asyncio.create_task(_settle(consumer, durable, offsets))
            elif durable is not None:
                await durable
    finally:
        if settling is not None:
            await settling


async def _settle(consumer: AIOKafkaConsumer, durable: Durable, offsets: dict[Any, int]) -> None:
    if durable is not None:
        await durable
    await consumer.commit(offsets)


async def _with_retries(handler: Handler, records: list[ConsumerRecord[Any, Any]]) -> Durable:
    for attempt in range(1, HANDLER_RETRIES + 1):
        try:
            return await handler(records)
        except RETRYABLE as e:
            if attempt == HANDLER_RETRIES:
                raise
            log.warning("batch failed (%s), retry %d of %d", e, attempt, HANDLER_RETRIES - 1)
            await asyncio.sleep(0.2 * 2**attempt)
    return None


def stop_on_signals() -> asyncio.Event:
    """An event set by Ctrl-C or SIGTERM, so services stop between batches and commit."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
