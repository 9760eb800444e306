"""The shared consumer loop: batched reads, dead letters, commits, and riding out outages and
poison records (decoding is ``infra.decoding``, publishing ``infra.publish``).

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
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka import errors as kafka_errors
from aiokafka.errors import KafkaError
from redis import exceptions as redis_errors

from infra.backoff import Retrying, Stopped, describe, unless_stopped
from infra.decoding import dead_letter
from infra.health import Health
from infra.publish import Acks, Outgoing
from infra.tasks import within

log = logging.getLogger(__name__)
T = TypeVar("T")
# Failures of a service that may come back (a Redis restart, a broker hiccup): the batch is
# retried as a whole, which is safe because every handler is idempotent.
RETRYABLE: tuple[type[BaseException], ...] = (
    OSError,  # ConnectionError and TimeoutError among them
    redis_errors.ConnectionError,  # BusyLoadingError too: Redis is loading its data
    redis_errors.TimeoutError,
    redis_errors.ClusterDownError,
    redis_errors.TryAgainError,
    redis_errors.RedisClusterException,  # a slot without a primary while a cluster fails over
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


def retryable(error: BaseException, kinds: tuple[type[BaseException], ...] = RETRYABLE) -> bool:
    """Whether the same work may succeed later, unchanged."""
    return isinstance(error, kinds) and not isinstance(error, PERMANENT)


async def starting(
    what: str,
    step: Callable[[], Awaitable[T]],
    stop: asyncio.Event,
    health: Health | None = None,
) -> T:
    """A start-up step (read the registry, check the cache) tried until the service it needs
    answers: capped backoff, a log line now and then saying why it waits, ``Stopped`` on stop.
    An error no retry can cure is raised at once."""
    retrying = Retrying(what, stop, health, line="%(what)s: waiting %(for_s).0f s so far "
                        "(%(error)s); next try in %(delay_s).1f s")  # fmt: skip
    while True:
        try:
            result = await unless_stopped(step(), stop)
        except Stopped:
            raise
        except Exception as e:
            if not retryable(e) or not await retrying.wait(e):
                if stop.is_set():
                    raise Stopped from None
                raise
            continue
        retrying.succeeded()
        return result


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
            # Cancelled from outside, the stop event is not set and the settling would retry
            # without end: it gets the same grace as a stop, then the batch is read again.
            if not await within(pending.settled, STOP_GRACE_S + COMMIT_TIMEOUT_S):
                log.info("%s: the last batch was not committed in time", self.r.name)
        except Exception as e:  # Stopped among them: the batch is simply read again
            log.info("%s: the last batch was not committed (%s)", self.r.name, describe(e))
