"""Decoding at the edge: each record validated with its topic's pydantic adapter; what
cannot be decoded becomes a bounded dead letter with a reason a person can act on.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aiokafka import ConsumerRecord
from pydantic import TypeAdapter, ValidationError

from infra.backoff import describe
from infra.clock import now_ms
from infra.publish import Outgoing
from schemas.events import DEAD_LETTER_HEAD_MAX, DEAD_LETTER_REASON_MAX, DeadLetter
from schemas.topics import DEAD_LETTERS

T = TypeVar("T")
log = logging.getLogger(__name__)
KEY_HEAD_BYTES = 256


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
