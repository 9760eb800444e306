"""Starting Kafka clients without hanging: a bounded, logged, stop-interruptible group join.

``AIOKafkaConsumer.start()`` returns once the group gave the consumer its first assignment, and
waits for ever when the group cannot form (no broker, a coordinator that never answers, a group
stuck with a departed leader). Here every attempt has ``join_timeout_s``; an attempt that times
out or fails closes its consumer, and a fresh one (a new member id) tries again after a backoff,
until it joins or the service is stopped. Producers start the same way, without the group.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from infra.backoff import Retrying, Stopped, describe, unless_stopped
from infra.health import Health
from infra.tasks import within

log = logging.getLogger(__name__)
CLOSE_TIMEOUT_S = 5.0


async def join_group(
    make: Callable[[], AIOKafkaConsumer],
    stop: asyncio.Event,
    *,
    group: str,
    timeout_s: float,
    health: Health | None = None,
) -> AIOKafkaConsumer:
    """A started consumer of ``make`` that has its first assignment; ``Stopped`` if ``stop``
    comes first. Each attempt is a new consumer, closed if it does not join in ``timeout_s``."""
    began = time.monotonic()
    retry = Retrying(
        f"joining group {group}",
        stop,
        since=began,
        line="still %(what)s after %(for_s).0f s: %(error)s; next try in %(delay_s).1f s",
    )
    if health is not None:
        health.joining(f"joining group {group}")
    log.info("joining group %s…", group)
    while True:
        consumer = make()
        try:
            await unless_stopped(consumer.start(), stop, timeout_s=timeout_s)
        except Exception as e:
            await close(consumer)
            if isinstance(e, Stopped) or not await retry.wait(e):
                raise Stopped from None
            if health is not None:
                health.joining(f"still joining group {group}: {describe(e)}")
            continue
        log.info(
            "joined group %s, %d partitions, after %.1f s",
            group,
            len(consumer.assignment()),
            time.monotonic() - began,
        )
        if health is not None:
            health.ok()
        return consumer


async def start_producer(
    make: Callable[[], AIOKafkaProducer],
    stop: asyncio.Event,
    *,
    timeout_s: float,
    health: Health | None = None,
) -> AIOKafkaProducer:
    """A started producer of ``make``, retried like a join; ``Stopped`` if ``stop`` comes first."""
    retry = Retrying("starting the producer", stop, health)
    while True:
        producer = make()
        try:
            await unless_stopped(producer.start(), stop, timeout_s=timeout_s)
        except Exception as e:
            await close(producer)
            if isinstance(e, Stopped) or not await retry.wait(e):
                raise Stopped from None
            continue
        retry.succeeded()
        return producer


async def close(client: AIOKafkaConsumer | AIOKafkaProducer) -> None:
    """Stop a client that may have failed to start, without waiting long or raising."""
    try:
        if not await within(client.stop(), CLOSE_TIMEOUT_S):
            log.info("a Kafka client did not close within %.0f s; left behind", CLOSE_TIMEOUT_S)
    except Exception as e:
        log.debug("closing a Kafka client failed: %s", describe(e))
