"""The PostgreSQL event store: batched, idempotent appends and the look-ups replay needs.

Appends go through a temporary staging table filled with ``COPY`` (asyncpg
``copy_records_to_table``), then one ``INSERT … ON CONFLICT DO NOTHING`` into ``event_log``:
a record seen twice (redelivery after a crash) adds nothing. The archiver's position per
partition is written in the same transaction, so rows and progress never disagree.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import astuple, dataclass
from typing import Any

import asyncpg

from archive.records import COLUMNS, Row, as_raw, ordered
from infra.pg import q

log = logging.getLogger("archive")


@dataclass(frozen=True, slots=True)
class Stored:
    """An archived message: where it was on Kafka and its JSON body."""

    topic: str
    part: int
    offset: int
    ts_ms: int
    payload: str


@dataclass(frozen=True, slots=True)
class Position:
    """How far an archiver got on one partition, and how far behind the log end it was."""

    topic: str
    part: int
    next_offset: int
    lag: int | None
    newest_ts_ms: int | None


class PgEventStore:
    """The event store on one asyncpg connection (the archiver's, or a reader's)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def append(
        self, rows: Sequence[Row], progress: Sequence[Position] = (), consumer: str = ""
    ) -> int:
        """Store the rows not stored yet; return how many were new."""
        try:
            return await self._append(ordered(list(rows)), progress, consumer)
        except (asyncpg.DataError, asyncpg.UntranslatableCharacterError) as e:
            log.warning("the store refused a batch (%s); storing it row by row", e)
            return await self._one_by_one(rows, progress, consumer)

    async def _append(self, rows: list[Row], progress: Sequence[Position], consumer: str) -> int:
        async with self.conn.transaction():
            await self.conn.execute(q("create_event_stage"))
            await self.conn.copy_records_to_table(
                "event_stage", records=[astuple(r) for r in rows], columns=list(COLUMNS)
            )
            status = await self.conn.execute(q("insert_staged_events"))
            await self.conn.executemany(
                q("upsert_archive_progress"),
                [(consumer, p.topic, p.part, p.next_offset, p.lag, p.newest_ts_ms)
                 for p in progress],
            )  # fmt: skip
        return int(status.rsplit(" ", 1)[1])

    async def _one_by_one(
        self, rows: Sequence[Row], progress: Sequence[Position], consumer: str
    ) -> int:
        new = 0
        for row in rows:
            try:
                new += await self._append([row], (), consumer)
            except (asyncpg.DataError, asyncpg.UntranslatableCharacterError) as e:
                new += await self._append([as_raw(row, f"refused by the store: {e}")], (), consumer)
        return new + await self._append([], progress, consumer)

    async def _fetch(self, query: str, *args: Any) -> list[Stored]:
        rows = await self.conn.fetch(q(query), *args)
        return [Stored(r["topic"], r["part"], r["kafka_offset"], r["kafka_ts_ms"], r["payload"])
                for r in rows]  # fmt: skip

    async def of_request(self, request_id: str) -> list[Stored]:
        """Every valid event about one request, in time order."""
        return await self._fetch("events_of_request", request_id)

    async def of_worker(self, worker_id: str, from_ms: int, to_ms: int) -> list[Stored]:
        """A worker's presence, offers, answers and the waves that considered them."""
        return await self._fetch("events_of_worker", worker_id, from_ms, to_ms)

    async def of_market(self, market_id: str, from_ms: int, to_ms: int) -> list[Stored]:
        """The requests a market posted in the window (with all their events), and check-ins."""
        return await self._fetch("events_of_market", market_id, from_ms, to_ms)

    async def window(self, from_ms: int, to_ms: int, topics: Sequence[str]) -> list[Stored]:
        """Every valid event of the topics with its time in the window, in time order."""
        return await self._fetch("events_in_window", from_ms, to_ms, list(topics))

    async def report_events(self, from_ms: int, to_ms: int, types: Sequence[str]) -> list[Stored]:
        """The requests posted in the window and their events of ``types``, whenever."""
        return await self._fetch("report_request_events", from_ms, to_ms, list(types))

    async def checkins(self, from_ms: int, to_ms: int) -> list[Stored]:
        """Every worker check-in in the window, in time order."""
        return await self._fetch("report_checkins", from_ms, to_ms)

    async def counts(self) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.conn.fetch(q("count_events"))]

    async def progress(self) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.conn.fetch(q("archive_progress"))]
