"""Publishing on Kafka: ``Outgoing`` messages in, the broker's acknowledgements out.

A send returns ``Acks``, which completes once the broker has every message; what it refused
can be sent again as the same bytes (so with the same event ids).
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from pydantic import BaseModel

from infra.backoff import describe


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
