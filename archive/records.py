"""Kafka records to event-store rows: pure, and never failing.

Every record becomes exactly one row. A valid message is kept as JSON with the fields the
store is indexed on (request, worker, market, time); anything else is kept as raw bytes with
the reason it is not valid, so nothing the brokers carried is ever lost.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from pydantic import TypeAdapter, ValidationError

from infra.decoding import explain
from schemas import events as ev
from schemas import topics
from schemas.journal import DISPATCH_BATCH
from schemas.topics import DISPATCH_JOURNAL

ADAPTERS: Final[dict[str, TypeAdapter[Any]]] = {
    topics.HIRE_REQUESTS: ev.HIRE_INBOUND,
    topics.WORKER_EVENTS: ev.WORKER_EVENT,
    topics.OFFER_RESPONSES: ev.OFFER_RESPONSE,
    topics.OFFERS: ev.OFFER_EVENT,
    topics.REQUEST_EVENTS: ev.REQUEST_EVENT,
    topics.DEAD_LETTERS: TypeAdapter(ev.DeadLetter),
    DISPATCH_JOURNAL: DISPATCH_BATCH,
    topics.OPERATOR_ACTIONS: ev.OPERATOR_ACTION,
}
ARCHIVED_TOPICS: Final = topics.ALL_TOPICS
MAX_MS: Final = 2**62  # anything larger cannot be a time and would not fit a bigint


@dataclass(frozen=True, slots=True)
class Row:
    """One event-store row; the column order of ``event_stage``."""

    topic: str
    part: int
    kafka_offset: int
    kafka_ts_ms: int
    key: str | None
    event_id: str | None
    type: str | None
    at_ms: int | None
    request_id: str | None
    worker_id: str | None
    market_id: str | None
    lon: float | None
    lat: float | None
    payload: str | None
    raw: bytes | None
    error: str | None


COLUMNS: Final = Row.__slots__


def _text(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    return value[:200] if isinstance(value, str) and "\x00" not in value else None


def _number(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if isinstance(value, int | float) and not isinstance(value, bool) and abs(value) < 1e6:
        return float(value)
    return None


def _ms(body: dict[str, Any]) -> int | None:
    value = body.get("at_ms")
    return value if isinstance(value, int) and 0 <= value < MAX_MS else None


def validation_error(topic: str, raw: bytes) -> str | None:
    """Why the message does not fit its topic's schema, or None when it does."""
    adapter = ADAPTERS.get(topic)
    if adapter is None:
        return None
    try:
        adapter.validate_json(raw)
    except ValidationError as e:
        return explain(e)
    return None


def _no_constant(name: str) -> Any:
    # PostgreSQL's jsonb refuses NaN and Infinity: such a record is kept raw at once, rather
    # than failing its whole batch's COPY (which then goes row by row).
    raise ValueError(f"{name} is not JSON")


def row_of(
    topic: str, part: int, offset: int, ts_ms: int, key: bytes | None, value: bytes | None
) -> Row:
    """The row for one record."""
    raw = value or b""
    k = key.decode(errors="replace").replace("\x00", "?") if key else None
    common = (topic, part, offset, ts_ms, k)
    try:
        text = raw.decode()
        body = json.loads(text, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as e:
        return Row(*common, None, None, None, None, None, None, None, None, None, raw,
                   f"not JSON: {e}")  # fmt: skip
    if not isinstance(body, dict) or "\\u0000" in text:
        return Row(*common, None, None, None, None, None, None, None, None, None, raw,
                   "not a JSON object")  # fmt: skip
    return Row(
        *common,
        event_id=_text(body, "event_id"),
        type=_text(body, "type"),
        at_ms=_ms(body),
        request_id=_text(body, "request_id"),
        worker_id=_text(body, "worker_id"),
        market_id=_text(body, "market_id"),
        lon=_number(body, "lon"),
        lat=_number(body, "lat"),
        payload=text,
        raw=None,
        error=validation_error(topic, raw),
    )


def as_raw(row: Row, reason: str) -> Row:
    """The row kept as raw bytes only (the store refused its JSON)."""
    raw = row.raw if row.raw is not None else (row.payload or "").encode()
    return Row(row.topic, row.part, row.kafka_offset, row.kafka_ts_ms, row.key,
               None, None, None, None, None, None, None, None, None, raw, reason)  # fmt: skip


def ordered(rows: list[Row]) -> list[Row]:
    """Rows in archive order (topic, partition, offset)."""
    return sorted(rows, key=lambda r: (r.topic, r.part, r.kafka_offset))
