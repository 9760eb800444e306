"""The shared consumer loop: batched reads, decoding at the edge, dead letters, commits, and
riding out outages and poison records.

Every consumer reads batches with ``getmany``, decodes each record with a pydantic adapter,
sends anything it cannot decode to the dead-letter topic with the reason, hands the rest to its
handler, and commits the batch after the handler's effects are done. A redelivered batch is
harmless because every handler is idempotent, and that is what makes the rules below safe:

- a handler failing with a retryable error (Redis, Kafka, the network, timeouts) is called
  again with the same batch, with a capped backoff, for as long as it takes; nothing is dropped;
- a publish that fails is sent again (the same bytes, so the same event ids);
- a commit refused after a rebalance is logged and skipped: the records come again to the
  member that owns their partition now;
- a batch that keeps failing with any other error (a bug, a value a service refuses) is split
  in halves down to the record at fault, which is dead-lettered; the rest is handled and the
  offsets committed, so no record can make a consumer crash on every restart;
- the stop event cuts every wait short.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import signal
import time
from bisect import bisect_right
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka import errors as kafka_errors
from aiokafka.errors import KafkaError
from pydantic import BaseModel, TypeAdapter, ValidationError
from redis import exceptions as redis_errors

from consumers.backoff import Retrying, Stopped, describe, unless_stopped
from consumers.health import Health
from schemas.events import DEAD_LETTER_HEAD_MAX, DEAD_LETTER_REASON_MAX, DeadLetter
from schemas.topics import DEAD_LETTERS

T = TypeVar("T")
log = logging.getLogger(__name__)
# Failures of a service that may come back (a Redis restart, a broker hiccup): the batch is
# retried as a whole, which is safe because every handler is idempotent.
RETRYABLE: tuple[type[BaseException], ...] = (
    OSError,  # ConnectionError and TimeoutError among them
    redis_errors.ConnectionError,  # BusyLoadingError too: Redis is loading its data
    redis_errors.TimeoutError,
    redis_errors.ClusterDownError,
    redis_errors.TryAgainError,
    KafkaError,
)
# Kafka errors that no retry can cure: the record itself is the problem.
PERMANENT: tuple[type[BaseException], ...] = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordTooLargeError,
    kafka_errors.RecordListTooLargeError,
    kafka_errors.InvalidTopicError,
    kafka_errors.CorruptRecordException,
    kafka_errors.InvalidTimestampError,
)
# A commit the group no longer accepts: the partition moved to another member.
COMMIT_REFUSED = (kafka_errors.CommitFailedError, kafka_errors.IllegalStateError)
ATTEMPTS = 3  # a batch failing this often with a non-retryable error is searched for its culprit
STOP_GRACE_S = 3.0  # on stop, the batch in hand gets this long to finish and commit
# aiokafka retries a commit by itself while the coordinator is away, without a word: past this
# the loop says so, and tries again.
COMMIT_TIMEOUT_S = 15.0
KEY_HEAD_BYTES = 256


def now_ms() -> int:
    """Wall-clock epoch milliseconds: the live clock the shell hands the core."""
    return int(time.time() * 1000)


def retryable(error: BaseException, kinds: tuple[type[BaseException], ...] = RETRYABLE) -> bool:
    """Whether the same work may succeed later, unchanged."""
    return isinstance(error, kinds) and not isinstance(error, PERMANENT)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to publish: topic, key, and the model that becomes its JSON value."""

    topic: str
    key: str
    message: BaseModel


@dataclass
class Delivery:
    """What the broker acknowledged of some messages, and why the rest failed."""

    acknowledged: list[Outgoing] = field(default_factory=list)
    failed: list[tuple[Outgoing, str]] = field(default_factory=list)


class Acks:
    """Completes when the broker has acknowledged every message of a send; the failed ones can
    be sent again, as the same bytes (so with the same event ids)."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        messages: Sequence[Outgoing],
        wire: Sequence[tuple[str, bytes, bytes]],
        futures: Sequence[asyncio.Future[Any]],
    ) -> None:
        self.producer, self.messages, self.wire, self.futures = producer, messages, wire, futures

    def __await__(self) -> Generator[Any, None, None]:
        return self._all().__await__()

    async def _all(self) -> None:
        await asyncio.wait(self.futures)
        for f in self.futures:
            f.result()  # the first failure, if any

    async def settled(self) -> Delivery:
        """Wait for every acknowledgement; what came and what failed, with reasons."""
        await asyncio.wait(self.futures)
        out = Delivery()
        for m, f in zip(self.messages, self.futures, strict=True):
            error = f.exception() if not f.cancelled() else asyncio.CancelledError()
            if error is None:
                out.acknowledged.append(m)
            else:
                out.failed.append((m, describe(error)))
        return out

    async def resend(self) -> Acks | None:
        """Send again what was not acknowledged."""
        again = [i for i, f in enumerate(self.futures) if not _acknowledged(f)]
        if not again:
            return None
        return await _send(
            self.producer, [self.messages[i] for i in again], [self.wire[i] for i in again]
        )


def _acknowledged(f: asyncio.Future[Any]) -> bool:
    return f.done() and not f.cancelled() and f.exception() is None


async def _send(
    producer: AIOKafkaProducer,
    messages: Sequence[Outgoing],
    wire: Sequence[tuple[str, bytes, bytes]],
) -> Acks:
    futures = [await producer.send(topic, value, key=key) for topic, key, value in wire]
    return Acks(producer, messages, wire, futures)


class Publisher:
    """Publishes outgoing messages on Kafka."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer

    async def send(self, messages: Sequence[Outgoing]) -> Acks | None:
        """Hand the messages to the producer; return what completes when the broker has them."""
        if not messages:
            return None
        wire = [(m.topic, m.key.encode(), m.message.model_dump_json().encode()) for m in messages]
        return await _send(self.producer, messages, wire)

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        """Send the messages and wait until the broker has them all (raises the first failure)."""
        pending = await self.send(messages)
        if pending is not None:
            await pending

    async def deliver(self, messages: Sequence[Outgoing]) -> Delivery:
        """Send the messages and report what the broker acknowledged (never raises for a
        message the broker refused; raises if the producer refuses to take one)."""
        pending = await self.send(messages)
        return Delivery() if pending is None else await pending.settled()


def explain(error: ValidationError) -> str:
    """A one-line reason a person can act on."""
    parts = []
    for e in error.errors(include_url=False)[:5]:
        # pydantic names validator wrappers in the path ("function-after[...]"): drop them.
        where = ".".join(str(x) for x in e["loc"] if "[" not in str(x)) or "message"
        parts.append(f"{where}: {e['msg']}")
    return "; ".join(parts)


def _json_cost(c: str) -> int:
    """Bytes one character takes in a JSON string (control characters become \\u00XX)."""
    if c in '"\\':
        return 2
    if c < " ":
        return 2 if c in "\b\f\n\r\t" else 6
    return len(c.encode())


def payload_head(raw: bytes, budget: int = DEAD_LETTER_HEAD_MAX) -> str:
    """The start of ``raw`` as text whose JSON encoding takes at most ``budget`` bytes."""
    text = raw[:budget].decode(errors="replace")
    spent = list(itertools.accumulate(_json_cost(c) for c in text))
    return text[: bisect_right(spent, budget)]


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def dead_letter(record: ConsumerRecord[Any, Any], consumer: str, reason: str) -> Outgoing:
    """The dead letter of a record: bounded whatever the record, so it can always be sent."""
    raw = record.value or b""
    key = payload_head(record.key, KEY_HEAD_BYTES) if record.key else None
    letter = DeadLetter(
        at_ms=now_ms(),
        consumer=consumer[:100],
        source_topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=key,
        reason=_bounded(reason, DEAD_LETTER_REASON_MAX),
        payload=payload_head(raw),
        payload_bytes=len(raw),
        payload_sha256=hashlib.sha256(raw).hexdigest(),
    )
    return Outgoing(DEAD_LETTERS, key or f"{record.topic}:{record.partition}", letter)


@dataclass
class Decoded(Generic[T]):
    good: list[tuple[ConsumerRecord[Any, Any], T]]
    dead: list[Outgoing]


def why_undecodable(error: Exception) -> str:
    if isinstance(error, ValidationError):
        return explain(error)
    return f"cannot be decoded: {describe(error)}"


def decode(
    records: Sequence[ConsumerRecord[Any, Any]],
    adapters: Mapping[str, TypeAdapter[T]],
    consumer: str,
) -> Decoded[T]:
    """Split a batch into valid messages and dead letters with reasons; each topic has its
    own adapter, so a message valid on one topic is refused on another. Whatever one record's
    decoding raises (too deep, too big a number, bad text) makes it a dead letter, never an
    error of the batch."""
    out: Decoded[T] = Decoded([], [])
    for r in records:
        try:
            out.good.append((r, adapters[r.topic].validate_json(r.value or b"")))
        except Exception as e:  # anything one record can cause; cancellation passes
            reason = why_undecodable(e)
            log.warning(
                "%s: dead-lettering %s[%d]@%d: %s", consumer, r.topic, r.partition, r.offset, reason
            )
            out.dead.append(dead_letter(r, consumer, reason))
    return out


# A handler may return what completes once its batch's effects are durable (its messages
# acknowledged by the broker), or None when they already are.
Durable = Awaitable[Any] | None
Records = list[ConsumerRecord[Any, Any]]
Handler = Callable[[Records], Awaitable[Durable]]


class Sink(Protocol):
    """Where the loop sends the dead letters of records it had to skip."""

    async def send(self, messages: Sequence[Outgoing]) -> Durable: ...


@dataclass
class Resilience:
    """How a consumer loop rides out trouble: its name (in logs and dead letters), where its
    dead letters go (logged only without one), its health, and what counts as retryable."""

    name: str = "consumer"
    dead_letters: Sink | None = None
    health: Health | None = None
    retryable: tuple[type[BaseException], ...] = RETRYABLE


async def consume(
    consumer: AIOKafkaConsumer,
    handler: Handler,
    stop: asyncio.Event,
    *,
    poll_ms: int = 100,
    max_records: int = 2000,
    resilience: Resilience | None = None,
) -> None:
    """Read batches until ``stop`` is set; commit each batch once its effects are durable.

    The handler is called on every poll, also with an empty batch, so it can do timed work.
    While the broker acknowledges one batch's messages, the next batch is read and handled;
    batches are committed in order, each only after its own messages are acknowledged.
    """
    loop = _Loop(consumer, handler, stop, resilience or Resilience())
    await loop.run(poll_ms, max_records)


@dataclass
class _Pending:
    """A handled batch waiting for its acknowledgements, then its commit."""

    records: Records
    offsets: dict[Any, int]
    settled: asyncio.Task[bool]  # False: its messages failed for good, handle it again


class _Loop:
    def __init__(
        self, consumer: AIOKafkaConsumer, handler: Handler, stop: asyncio.Event, r: Resilience
    ) -> None:
        self.consumer, self.handler, self.stop, self.r = consumer, handler, stop, r
        self.pending: _Pending | None = None

    async def run(self, poll_ms: int, max_records: int) -> None:
        try:
            while not self.stop.is_set():
                records, offsets = await self._poll(poll_ms, max_records)
                durable = await self._handled(records)
                await self._settle_pending()
                if records or durable is not None:
                    task = asyncio.create_task(self._settle(durable, offsets))
                    self.pending = _Pending(records, offsets, task)
        except Stopped:
            log.info("%s: stopped while waiting", self.r.name)
        finally:
            await self._finish()

    async def _poll(self, poll_ms: int, max_records: int) -> tuple[Records, dict[Any, int]]:
        retry = Retrying(f"{self.r.name}: reading", self.stop, self.r.health)
        while True:
            try:
                batch = await self.consumer.getmany(timeout_ms=poll_ms, max_records=max_records)
            except KafkaError as e:
                if not await retry.wait(e):
                    raise Stopped from e
                continue
            retry.succeeded()
            offsets = {tp: part[-1].offset + 1 for tp, part in batch.items() if part}
            return [r for part in batch.values() for r in part], offsets

    async def _handled(
        self, records: Records, *, now: bool = False, alone: bool = False
    ) -> Durable:
        """Run the handler on ``records`` until it succeeds, waiting out retryable failures.

        ``now``: also wait for the acknowledgements (a failure there counts as the handler's).
        ``alone``: the records were split off a failing batch; a failure is theirs at once.
        A batch that keeps failing otherwise is split until its culprit is found.
        """
        retry = Retrying(f"{self.r.name}: a batch of {len(records)}", self.stop, self.r.health)
        failures = 0
        while True:
            try:
                durable = await self._call(records)
                if now:
                    await self._acked(durable)
                    durable = None
                retry.succeeded()
                return durable
            except Stopped:
                raise
            except Exception as e:
                if not retryable(e, self.r.retryable):
                    failures += 1
                    if failures == 1 and not alone:
                        log.exception("%s: the handler failed", self.r.name)
                    if failures >= (1 if alone else ATTEMPTS) and await self._blame(records, alone):
                        await self._isolate(records, e)
                        return None
                if not await retry.wait(e):
                    raise Stopped from e

    async def _call(self, records: Records) -> Durable:
        return await unless_stopped(self.handler(records), self.stop, grace_s=STOP_GRACE_S)

    async def _blame(self, records: Records, alone: bool) -> bool:
        """Whether the records are at fault: the handler works without them."""
        if alone or not records:
            return alone
        try:
            await self._acked(await self._call([]))
        except Stopped:
            raise
        except Exception as e:
            log.error(
                "%s: the handler fails even without records (%s): the batch is kept and retried",
                self.r.name,
                describe(e),
            )
            return False
        return True

    async def _isolate(self, records: Records, error: Exception) -> None:
        """Handle what can be handled of a failing batch; dead-letter the records at fault."""
        if len(records) == 1:
            await self._dead_letter(records[0], error)
            return
        log.warning(
            "%s: looking for the record at fault among %d (%s)",
            self.r.name,
            len(records),
            describe(error),
        )
        half = len(records) // 2
        for part in (records[:half], records[half:]):
            await self._handled(part, now=True, alone=True)

    async def _dead_letter(self, record: ConsumerRecord[Any, Any], error: Exception) -> None:
        reason = f"the {self.r.name} handler failed on it: {describe(error)}"
        where = f"{record.topic}[{record.partition}]@{record.offset}"
        log.error("%s: skipping %s, dead-lettered: %s", self.r.name, where, reason)
        if self.r.dead_letters is None:
            return
        letter = [dead_letter(record, self.r.name, reason)]
        retry = Retrying(f"{self.r.name}: dead-lettering {where}", self.stop, self.r.health)
        while True:
            try:
                await self._acked(await self.r.dead_letters.send(letter))
                retry.succeeded()
                return
            except Stopped:
                raise
            except Exception as e:
                if not retryable(e, self.r.retryable):
                    log.error("%s: %s cannot be dead-lettered: %s", self.r.name, where, describe(e))
                    return
                if not await retry.wait(e):
                    raise Stopped from e

    async def _acked(self, durable: Durable) -> None:
        """Wait for ``durable``; a retryable failure of a publish is sent again until it works."""
        retry = Retrying(f"{self.r.name}: publishing", self.stop, self.r.health)
        while durable is not None:
            try:
                await unless_stopped(durable, self.stop, grace_s=STOP_GRACE_S)
                retry.succeeded()
                return
            except Stopped:
                raise
            except Exception as e:
                if not (isinstance(durable, Acks) and retryable(e, self.r.retryable)):
                    raise
                if not await retry.wait(e):
                    raise Stopped from e
                durable = await self._resent(durable)

    async def _resent(self, acks: Acks) -> Durable:
        try:
            return await unless_stopped(acks.resend(), self.stop, grace_s=STOP_GRACE_S)
        except Stopped:
            raise
        except Exception as e:
            if not retryable(e, self.r.retryable):
                raise
            return acks  # not even handed over: the next wait fails again and resends

    async def _settle(self, durable: Durable, offsets: dict[Any, int]) -> bool:
        """In the background: acknowledgements, then the commit. False when the messages
        failed for good, so the batch must be handled again."""
        try:
            await self._acked(durable)
        except Stopped:
            raise
        except Exception as e:
            log.warning("%s: a batch's messages failed (%s); handling it again", self.r.name, e)
            return False
        await self._commit(offsets)
        return True

    async def _settle_pending(self) -> None:
        """Wait for the previous batch; handle it again, serially, if its messages failed."""
        pending, self.pending = self.pending, None
        if pending is not None and not await pending.settled:
            await self._handled(pending.records, now=True)
            await self._commit(pending.offsets)

    async def _commit(self, offsets: dict[Any, int]) -> None:
        retry = Retrying(f"{self.r.name}: committing", self.stop, self.r.health)
        while offsets:
            try:
                commit = self.consumer.commit(offsets)
                await unless_stopped(
                    commit, self.stop, grace_s=STOP_GRACE_S, timeout_s=COMMIT_TIMEOUT_S
                )
                retry.succeeded()
                return
            except Stopped:
                raise
            except COMMIT_REFUSED as e:
                log.warning(
                    "%s: commit refused (%s); the group rebalanced, the records will be read "
                    "again by the partition's owner",
                    self.r.name,
                    describe(e),
                )
                return
            except Exception as e:
                if not retryable(e, self.r.retryable):
                    log.error("%s: commit failed (%s); skipped", self.r.name, describe(e))
                    return
                if not await retry.wait(e):
                    raise Stopped from e

    async def _finish(self) -> None:
        """On the way out: let the batch in hand settle and commit (briefly, if stopping)."""
        pending, self.pending = self.pending, None
        if pending is None:
            return
        try:
            await pending.settled
        except Exception as e:  # Stopped among them: the batch is simply read again
            log.info("%s: the last batch was not committed (%s)", self.r.name, describe(e))


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
