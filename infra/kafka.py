"""Kafka plumbing: topic creation with explicit partitions and replication, producer and
consumer factories.

Producers wait for every in-sync replica (``acks=all``) and are idempotent, so a retried send
never duplicates a record in the log. Consumers commit by hand, after their effects.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from infra.settings import KafkaSettings
from schemas.topics import ALL_TOPICS, COMPACTED, OPERATOR_ACTIONS

log = logging.getLogger(__name__)
# Compacted topics keep the latest record per key; records older than this still go, so
# the log of long-finished requests does not grow for ever.
COMPACTED_RETENTION_MS = 7 * 24 * 3600 * 1000


def topic_config(kafka: KafkaSettings, topic: str) -> dict[str, str]:
    """Per-topic settings: durability for all, compaction where the topic is a table."""
    config = {"min.insync.replicas": str(min(kafka.min_insync, kafka.replication))}
    if topic == OPERATOR_ACTIONS:  # an audit: small, and kept for good
        config |= {"retention.ms": "-1"}
    if topic in COMPACTED:
        config |= {
            "cleanup.policy": "compact,delete",
            "retention.ms": str(COMPACTED_RETENTION_MS),
        }
    return config


async def ensure_topics(kafka: KafkaSettings, topics: tuple[str, ...] = ALL_TOPICS) -> list[str]:
    """Create any missing topic with the configured partitions and replication; return the
    names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(t, kafka.partitions, kafka.replication, topic_configs=topic_config(kafka, t))
            for t in topics
            if t not in existing
        ]
        if missing:
            # Another process may create them between our list and our create.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
            log.info("created topics %s", ", ".join(t.name for t in missing))
        return [t.name for t in missing]
    finally:
        await admin.close()


def make_producer(kafka: KafkaSettings) -> AIOKafkaProducer:
    """An idempotent producer that batches for a couple of milliseconds and waits for every
    in-sync replica."""
    return AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap,
        linger_ms=kafka.linger_ms,
        acks="all",
        enable_idempotence=True,
        max_batch_size=256 * 1024,
        request_timeout_ms=15_000,
    )


def make_consumer(
    kafka: KafkaSettings,
    *topics: str,
    group_id: str | None,
    start: Literal["latest", "earliest"] | None = None,
) -> AIOKafkaConsumer:
    """A consumer with manual commits (the caller commits after its effects). A group with no
    committed offset starts where ``start`` says, by default ``kafka.new_group_start``."""
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=kafka.bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset=start or kafka.new_group_start,
        fetch_max_wait_ms=kafka.fetch_max_wait_ms,
        session_timeout_ms=kafka.session_timeout_ms,
        heartbeat_interval_ms=kafka.heartbeat_interval_ms,
        max_poll_records=kafka.max_batch,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )


async def partitions(bootstrap: str, topics: Sequence[str]) -> list[TopicPartition]:
    """Every partition of those of the topics that exist, from the cluster's metadata (a
    consumer's own metadata may not list a topic's partitions until it subscribes)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        present = [t for t in topics if t in set(await admin.list_topics())]
        described = await admin.describe_topics(present) if present else []
    finally:
        await admin.close()
    return [TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]]


async def start_group_at_end(kafka: KafkaSettings, group: str, topics: tuple[str, ...]) -> None:
    """Commit the group's offsets at the topics' current ends, so that the group's first
    members read what is published from now on, however long they take to join."""
    parts = await partitions(kafka.bootstrap, topics)
    consumer = make_consumer(kafka, group_id=group)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(parts)
        consumer.assign(parts)
        await consumer.commit(dict(ends))
    finally:
        await consumer.stop()
