"""Kafka plumbing: topic creation with explicit partitions, producer and consumer factories.

The settings suit both the embedded Tansu broker and Apache Kafka. Against Tansu a fetch waits
for the whole ``fetch_max_wait_ms``, so it is kept short; consumer groups use short session
timeouts because Tansu forms a group in about half of one.
"""

from __future__ import annotations

import contextlib
import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from infra.settings import KafkaSettings
from schemas.topics import ALL_TOPICS

log = logging.getLogger(__name__)


async def ensure_topics(kafka: KafkaSettings, topics: tuple[str, ...] = ALL_TOPICS) -> None:
    """Create any missing topic with the configured partition count."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(t, kafka.partitions, 1) for t in topics if t not in existing]
        if missing:
            # Another process may create them between our list and our create.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
            log.info("created topics %s", ", ".join(t.name for t in missing))
    finally:
        await admin.close()


def make_producer(kafka: KafkaSettings) -> AIOKafkaProducer:
    """A producer that batches for a couple of milliseconds and waits for the leader."""
    return AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap,
        linger_ms=kafka.linger_ms,
        acks=1,
        max_batch_size=256 * 1024,
    )


def make_consumer(
    kafka: KafkaSettings, *topics: str, group_id: str | None, from_start: bool = True
) -> AIOKafkaConsumer:
    """A consumer with manual commits (the caller commits after its effects)."""
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=kafka.bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_start else "latest",
        fetch_max_wait_ms=kafka.fetch_max_wait_ms,
        session_timeout_ms=kafka.session_timeout_ms,
        heartbeat_interval_ms=kafka.heartbeat_interval_ms,
        max_poll_records=kafka.max_batch,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
