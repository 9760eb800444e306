"""Dead letters: list them, show one, requeue one (operators only), audited on the log.

The console (``gateway.console.dead``) and ``gig-dead`` share this module.

Where the letters are read: from the archive (``event_log``), not from Kafka. The archive
keeps every letter for good (the topic's retention drops old ones), it is indexed by type and
time, so filters and "newest first" are one query whatever the topic's size, and it is the
store the console already reads. The price is the archiver's lag: a letter written in the
last seconds may not be listed yet, so a list says how far behind the archiver is. Where
staleness would do harm (has this letter been requeued already?), the audit topic itself is
read from Kafka too.

Ids: a letter is its record on the dead-letter topic, ``partition:offset:time`` (time: the
record's timestamp in ms), so a development broker whose offsets restarted at 0 cannot make
two letters share an id. ``partition:offset`` alone names the newest letter archived there.

What can be requeued (``refusal``): a message of an inbound topic (the services' own outputs
are not put back: their readers would see them twice), held whole (``payload_bytes`` and
``payload_sha256`` match the text: a head cut at 4096 characters, or bytes decoded with
replacement characters, cannot be sent back as they were), with its key whole. A request
that already ended on the log (rejected, say) is not requeued: a second ending would
contradict the first. A letter requeued before is refused unless forced.

A requeue sends the message's bytes with its original key (so to the same partition, in
order with what its key sent since), then a ``DeadLetterRequeued`` on the operator-actions
topic. The copy goes first, so the audit never claims a requeue that did not happen.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

import asyncpg
from pydantic import BaseModel, ValidationError

from infra.audit import TERMINAL_EVENTS, read_topics
from infra.clock import now_ms
from infra.decoding import KEY_HEAD_BYTES
from infra.kafka import ensure_topics, make_producer
from infra.pg import q
from infra.process import require, run_cli
from infra.publish import Outgoing, Publisher
from infra.settings import Settings, get_settings
from schemas.events import (
    DEAD_LETTER,
    EPOCH_MS_MAX,
    ID_MAX,
    ID_PATTERN,
    OPERATOR_ACTION,
    TEXT_MAX,
    DeadLetter,
    DeadLetterRequeued,
)
from schemas.topics import DEAD_LETTERS, HIRE_REQUESTS, INBOUND, OPERATOR_ACTIONS, REQUEST_EVENTS

LIMIT_DEFAULT: Final = 100
LIMIT_MAX: Final = 500
PREVIEW_CHARS: Final = 300
REASON_FILTER_MAX: Final = 200
# A key this long may have been cut when the letter was written (``infra.decoding``).
KEY_WHOLE_BYTES: Final = KEY_HEAD_BYTES - 6
# Raw letters are found by record time, which lies within moments of the letter's own time.
RAW_SLACK_MS: Final = 60_000
AUDIT_READ_TIMEOUT_S: Final = 30.0
ENDINGS: Final = tuple(t.__name__ for t in TERMINAL_EVENTS)
_INT32: Final = 2**31
_INT64: Final = 2**63
_NUMBER = re.compile(r"[0-9]{1,19}")


class Refused(Exception):
    """What was asked of a letter cannot be done: 404 (no such letter) or 409 (why not)."""

    def __init__(self, status: Literal[404, 409], reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Unaudited(Exception):
    """The message was requeued but its audit record could not be published."""


# --- ids and filters ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LetterId:
    """A record of the dead-letter topic; ``ts_ms`` None: the newest archived at that place."""

    part: int
    offset: int
    ts_ms: int | None = None

    def __str__(self) -> str:
        tail = "" if self.ts_ms is None else f":{self.ts_ms}"
        return f"{self.part}:{self.offset}{tail}"


def parse_id(text: str) -> LetterId:
    """``partition:offset[:time]``, or ``ValueError`` saying what an id looks like."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not all(_NUMBER.fullmatch(p) for p in parts):
        raise ValueError(f"{text[:40]!r} is not a letter id (partition:offset or p:o:time)")
    numbers = [int(p) for p in parts]
    if numbers[0] >= _INT32 or any(n >= _INT64 for n in numbers):
        raise ValueError(f"{text[:40]!r} is not a letter id: a number is too large")
    return LetterId(numbers[0], numbers[1], numbers[2] if len(numbers) == 3 else None)


def _clean(text: str | None) -> str | None:
    return (text or "").strip() or None


@dataclass(frozen=True, slots=True)
class Filters:
    """Which letters to list: exact consumer and source topic, a phrase of the reason (any
    case), the letter's time between ``from_ms`` and ``to_ms``, at most ``limit``."""

    consumer: str | None = None
    source_topic: str | None = None
    reason: str | None = None
    from_ms: int = 0
    to_ms: int = EPOCH_MS_MAX
    limit: int = LIMIT_DEFAULT

    def __post_init__(self) -> None:
        for name in ("consumer", "source_topic", "reason"):
            object.__setattr__(self, name, _clean(getattr(self, name)))
        if not 1 <= self.limit <= LIMIT_MAX:
            raise ValueError(f"the limit is 1 to {LIMIT_MAX}")
        if not 0 <= self.from_ms <= self.to_ms <= EPOCH_MS_MAX:
            raise ValueError("the window's start must not be after its end")

    def matches(self, letter: DeadLetter) -> bool:
        return (
            self.consumer in (None, letter.consumer)
            and self.source_topic in (None, letter.source_topic)
            and (self.reason is None or self.reason.lower() in letter.reason.lower())
            and self.from_ms <= letter.at_ms <= self.to_ms
        )


# --- what can be requeued: pure ----------------------------------------------------------------


def not_whole(letter: DeadLetter) -> str | None:
    """Why the letter's text is not the original message byte for byte, or None."""
    if letter.payload_bytes is None or letter.payload_sha256 is None:
        return (
            "the letter does not hold a message whole: it names no size or checksum (an "
            "older letter, or one about a dispatcher's input rather than a message)"
        )
    raw = letter.payload.encode(errors="replace")
    if len(raw) < letter.payload_bytes:
        return (
            f"the letter holds only the first {len(raw)} of the message's "
            f"{letter.payload_bytes} bytes"
        )
    if len(raw) == letter.payload_bytes and hashlib.sha256(raw).hexdigest() == (
        letter.payload_sha256
    ):
        return None
    if "\ufffd" in letter.payload:
        return (
            "the message's bytes were not valid UTF-8: the letter holds them decoded with "
            "replacement characters, not as they were"
        )
    return "the letter's text does not match the message's size and checksum"


def key_problem(letter: DeadLetter) -> str | None:
    """Why the message's key was not kept whole, or None (no key: sent without one)."""
    if letter.key is None:
        return None
    if "\ufffd" in letter.key or len(letter.key.encode(errors="replace")) > KEY_WHOLE_BYTES:
        return "the message's key was not kept whole (too long, or not valid UTF-8)"
    return None


def refusal(letter: DeadLetter) -> str | None:
    """Why the letter cannot be requeued whatever the log says, or None."""
    if letter.source_topic not in INBOUND:
        return (
            f"only messages of the inbound topics ({', '.join(INBOUND)}) are requeued; this "
            f"one came from {letter.source_topic[:80]}"
        )
    return not_whole(letter) or key_problem(letter)


def request_of(letter: DeadLetter) -> str | None:
    """The request id of a letter holding a ``HireRequested``, else None."""
    if letter.source_topic != HIRE_REQUESTS:
        return None
    try:
        body = json.loads(letter.payload)
    except (ValueError, RecursionError):
        return None
    if isinstance(body, dict) and body.get("type") == "HireRequested":
        rid = body.get("request_id")
        return rid if isinstance(rid, str) else None
    return None


def audit_record(
    letter_id: LetterId,
    letter: DeadLetter,
    operator: str,
    where: tuple[int, int],
    at_ms: int,
    *,
    forced: bool = False,
    note: str = "",
) -> DeadLetterRequeued:
    """The audit of a requeue: ``where`` is the copy's (partition, offset) on its topic."""
    assert letter.payload_bytes is not None and letter.payload_sha256 is not None
    return DeadLetterRequeued(
        event_id=f"dlr:{letter_id}:{at_ms}",
        at_ms=at_ms,
        operator=operator,
        letter_id=str(letter_id),
        consumer=letter.consumer,
        reason=letter.reason,
        source_topic=letter.source_topic,
        key=letter.key,
        payload_bytes=letter.payload_bytes,
        payload_sha256=letter.payload_sha256,
        partition=where[0],
        offset=where[1],
        forced=forced,
        note=note,
    )


# --- what the console and the CLI show ---------------------------------------------------------


class Requeue(BaseModel):
    """One requeue of a letter."""

    operator: str
    at_ms: int
    forced: bool
    partition: int
    offset: int
    note: str


class LetterView(BaseModel):
    """A letter in a list: its facts, the start of its message, and whether it can be
    requeued (``refusal``: why not, whatever the log says)."""

    id: str
    at_ms: int
    consumer: str
    source_topic: str
    partition: int
    offset: int
    key: str | None
    reason: str
    payload_bytes: int | None
    payload_sha256: str | None
    preview: str
    refusal: str | None
    requeued: list[Requeue]


class LetterDetail(LetterView):
    """One letter, with the whole text it holds."""

    payload: str


class LetterList(BaseModel):
    """Letters newest first; ``more``: the limit cut the list. ``archive_lag``: how many
    dead-letter records the archiver had not archived when it last said (None: unknown)."""

    letters: list[LetterView]
    more: bool
    archive_lag: int | None
    archive_updated_at: datetime | None


def view(lid: LetterId, letter: DeadLetter, requeues: Sequence[DeadLetterRequeued]) -> LetterView:
    return LetterView(
        id=str(lid),
        at_ms=letter.at_ms,
        consumer=letter.consumer,
        source_topic=letter.source_topic,
        partition=letter.partition,
        offset=letter.offset,
        key=letter.key,
        reason=letter.reason,
        payload_bytes=letter.payload_bytes,
        payload_sha256=letter.payload_sha256,
        preview=letter.payload[:PREVIEW_CHARS],
        refusal=refusal(letter),
        requeued=[
            Requeue(
                operator=r.operator,
                at_ms=r.at_ms,
                forced=r.forced,
                partition=r.partition,
                offset=r.offset,
                note=r.note,
            )
            for r in requeues
        ],
    )


# --- reading the archive -----------------------------------------------------------------------

Found = tuple[LetterId, DeadLetter]


def letter_of(row: Mapping[str, Any]) -> Found | None:
    """The letter of an archived record (JSON, or bytes the archive kept raw), or None if the
    record is not a valid letter."""
    data = row["payload"] if row["payload"] is not None else row["raw"]
    try:
        letter = DEAD_LETTER.validate_json(data or b"")
    except ValidationError:
        return None
    return LetterId(row["part"], row["kafka_offset"], row["kafka_ts_ms"]), letter


async def list_letters(conn: asyncpg.Connection, f: Filters) -> LetterList:
    """The letters matching ``f``, newest first, with their requeues and the archive's lag."""
    rows = await conn.fetch(
        q("dead_letters"), DEAD_LETTERS, f.consumer, f.source_topic, f.reason,
        f.from_ms, f.to_ms, f.limit + 1,
    )  # fmt: skip
    raw = await conn.fetch(
        q("raw_dead_letters"), DEAD_LETTERS, max(0, f.from_ms - RAW_SLACK_MS),
        min(f.to_ms + RAW_SLACK_MS, _INT64 - 1), f.limit + 1,
    )  # fmt: skip
    found = [x for x in map(letter_of, rows) if x is not None]
    found += [x for x in map(letter_of, raw) if x is not None and f.matches(x[1])]
    found.sort(key=lambda x: (x[1].at_ms, x[0].part, x[0].offset), reverse=True)
    shown = found[: f.limit]
    requeues = await archived_requeues(conn, [str(lid) for lid, _ in shown])
    lag = await conn.fetchrow(q("dead_letter_archive_lag"), DEAD_LETTERS)
    return LetterList(
        letters=[view(lid, letter, requeues.get(str(lid), [])) for lid, letter in shown],
        more=len(found) > f.limit,
        archive_lag=None if lag is None or lag["lag"] is None else int(lag["lag"]),
        archive_updated_at=None if lag is None else lag["updated_at"],
    )


async def find(conn: asyncpg.Connection, lid: LetterId) -> Found:
    """The archived letter ``lid`` names, or ``Refused(404)``."""
    row = await conn.fetchrow(q("dead_letter_at"), DEAD_LETTERS, lid.part, lid.offset, lid.ts_ms)
    found = None if row is None else letter_of(row)
    if found is None:
        raise Refused(
            404,
            f"no dead letter {lid} in the archive (a letter of the last moments may not be "
            "archived yet)",
        )
    return found


async def show(conn: asyncpg.Connection, lid: LetterId) -> LetterDetail:
    """One letter with the whole text it holds, and its requeues."""
    full, letter = await find(conn, lid)
    requeues = (await archived_requeues(conn, [str(full)])).get(str(full), [])
    return LetterDetail(**view(full, letter, requeues).model_dump(), payload=letter.payload)


async def archived_requeues(
    conn: asyncpg.Connection, ids: Sequence[str]
) -> dict[str, list[DeadLetterRequeued]]:
    """The archived requeues of the letters, by letter id, oldest first."""
    out: dict[str, list[DeadLetterRequeued]] = {}
    if not ids:
        return out
    for row in await conn.fetch(q("requeues_of_letters"), OPERATOR_ACTIONS, list(ids)):
        r = OPERATOR_ACTION.validate_json(row["payload"])
        out.setdefault(r.letter_id, []).append(r)
    return out


# --- requeueing --------------------------------------------------------------------------------


async def requeues_of(
    settings: Settings, conn: asyncpg.Connection, letter_id: str
) -> list[DeadLetterRequeued]:
    """Every requeue of a letter: the audit topic read to its end (no lag), and the archive
    (which keeps what a younger broker's log does not)."""
    log = await read_topics(settings.kafka_bootstrap, (OPERATOR_ACTIONS,), AUDIT_READ_TIMEOUT_S)
    seen: dict[str, DeadLetterRequeued] = {}
    for value in log[OPERATOR_ACTIONS]:
        try:
            r = OPERATOR_ACTION.validate_json(value)
        except ValidationError:
            continue
        if r.letter_id == letter_id:
            seen[r.event_id] = r
    for r in (await archived_requeues(conn, [letter_id])).get(letter_id, []):
        seen.setdefault(r.event_id, r)
    return sorted(seen.values(), key=lambda r: r.at_ms)


async def ended(conn: asyncpg.Connection, letter: DeadLetter) -> str | None:
    """Why a letter's request must not be taken again: it already ended on the log."""
    rid = request_of(letter)
    if rid is None:
        return None
    end = await conn.fetchval(q("request_ended"), rid, REQUEST_EVENTS, list(ENDINGS))
    if end is None:
        return None
    return (
        f"request {rid} already ended on the log ({end}): taking it again would contradict "
        "that; post it anew under a new request id"
    )


@dataclass(frozen=True, slots=True)
class Ask:
    """An operator's requeue: which letter, who, forced or not, and why (``note``)."""

    letter_id: LetterId
    operator: str
    force: bool = False
    note: str = ""


async def requeue(
    settings: Settings,
    conn: asyncpg.Connection,
    publisher: Publisher,
    ask: Ask,
    clock: Callable[[], int] = now_ms,
) -> DeadLetterRequeued:
    """Put a letter's message back on its source topic with its key, and audit it on the log;
    ``Refused`` says why not. One requeue of a letter at a time, across processes."""
    async with conn.transaction():
        lid, letter = await find(conn, ask.letter_id)
        await conn.execute(q("lock_dead_letter"), str(lid))
        why = refusal(letter) or await ended(conn, letter)
        if why is not None:
            raise Refused(409, why)
        before = await requeues_of(settings, conn, str(lid))
        if before and not ask.force:
            last = before[-1]
            raise Refused(
                409,
                f"letter {lid} was requeued already, by {last.operator} at {last.at_ms} "
                f"(to {last.source_topic}[{last.partition}]@{last.offset}); force to send it again",
            )
        await ensure_topics(settings.kafka_slice(), (OPERATOR_ACTIONS,))
        key = None if letter.key is None else letter.key.encode()
        meta = await publisher.producer.send_and_wait(
            letter.source_topic, letter.payload.encode(), key=key
        )
        record = audit_record(
            lid, letter, ask.operator, (meta.partition, meta.offset), clock(),
            forced=bool(before), note=ask.note,
        )  # fmt: skip
        try:
            await publisher.publish([Outgoing(OPERATOR_ACTIONS, str(lid), record)])
        except Exception as e:
            raise Unaudited(
                f"letter {lid} was requeued to {letter.source_topic}[{meta.partition}]@"
                f"{meta.offset}, but its audit record could not be published: {e}"
            ) from e
    return record


# --- gig-dead ----------------------------------------------------------------------------------


def _when(text: str) -> int:
    from replay.cli import when  # the same times as ``replay`` (CST unless an offset is given)

    return when(text)


def _time(ms: int) -> str:
    from replay.timeline import LOCAL

    return datetime.fromtimestamp(ms / 1000, LOCAL).strftime("%Y-%m-%d %H:%M:%S")


def _operator(text: str) -> str:
    if not (1 <= len(text) <= ID_MAX and re.fullmatch(ID_PATTERN, text)):
        raise ValueError("--operator must be an id: letters, digits and _ . : - (1-140)")
    return text


def table(letters: LetterList) -> str:
    """The list as text, one line a letter."""
    lines = [f"{'id':<22} {'time (CST)':<19} {'consumer':<12} {'source':<24} {'key':<20} "
             f"{'bytes':>7}  reason"]  # fmt: skip
    for v in letters.letters:
        size = "?" if v.payload_bytes is None else str(v.payload_bytes)
        mark = f" [requeued ×{len(v.requeued)}]" if v.requeued else ""
        lines.append(
            f"{v.id:<22} {_time(v.at_ms):<19} {v.consumer[:12]:<12} {v.source_topic[:24]:<24} "
            f"{(v.key or '-')[:20]:<20} {size:>7}  {v.reason[:90]}{mark}"
        )
    if not letters.letters:
        lines.append("(no dead letters match)")
    if letters.more:
        lines.append("… more letters match: narrow the filters or raise --limit")
    if letters.archive_lag:
        lines.append(f"the archiver is {letters.archive_lag} dead-letter records behind")
    return "\n".join(lines)


def details(d: LetterDetail) -> str:
    """One letter as text, with the message it holds."""
    can = "yes" if d.refusal is None else f"no: {d.refusal}"
    facts = [
        ("id", d.id), ("time", _time(d.at_ms)), ("consumer", d.consumer),
        ("source", f"{d.source_topic}[{d.partition}]@{d.offset}"), ("key", d.key or "-"),
        ("reason", d.reason), ("bytes", str(d.payload_bytes)), ("sha256", str(d.payload_sha256)),
        ("requeueable", can),
    ]  # fmt: skip
    facts += [
        ("requeued", f"by {r.operator} at {_time(r.at_ms)} to [{r.partition}]@{r.offset}"
                     f"{' (forced)' if r.forced else ''} {r.note}".rstrip())
        for r in d.requeued
    ]  # fmt: skip
    return "\n".join(f"{k:>12}: {v}" for k, v in facts) + "\n\n" + d.payload


async def _with_conn(settings: Settings, body: Callable[[asyncpg.Connection], Any]) -> Any:
    conn = await asyncpg.connect(settings.pg_dsn)
    try:
        return await body(conn)
    finally:
        await conn.close()


async def _requeue_cli(settings: Settings, ask: Ask) -> str:
    producer = make_producer(settings.kafka_slice())
    await producer.start()
    try:
        done = await _with_conn(
            settings, lambda conn: requeue(settings, conn, Publisher(producer), ask)
        )
    finally:
        await producer.stop()
    return (
        f"requeued {done.letter_id} to {done.source_topic}[{done.partition}]@{done.offset} "
        f"(key {done.key or '-'}, {done.payload_bytes} bytes), audited on {OPERATOR_ACTIONS}"
    )


def _command(args: argparse.Namespace, settings: Settings) -> str:
    if args.command == "list":
        f = Filters(args.consumer, args.source_topic, args.reason,
                    _when(args.start) if args.start else 0,
                    _when(args.end) if args.end else EPOCH_MS_MAX, args.limit)  # fmt: skip
        require(settings, "postgres")
        return table(asyncio.run(_with_conn(settings, lambda c: list_letters(c, f))))
    lid = parse_id(args.id)
    if args.command == "show":
        require(settings, "postgres")
        return details(asyncio.run(_with_conn(settings, lambda c: show(c, lid))))
    ask = Ask(lid, _operator(args.operator), args.force, (args.note or "")[:TEXT_MAX])
    require(settings, "postgres", "kafka")
    return asyncio.run(_requeue_cli(settings, ask))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gig-dead",
        description="Dead letters from the archive: list them with their reasons, show one, "
        "and requeue one (its message back on its source topic with its key, audited on "
        f"{OPERATOR_ACTIONS}).",
    )
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="the letters, newest first")
    ls.add_argument("--consumer", help="only this consumer's (dispatcher, presence, archiver…)")
    ls.add_argument("--source-topic", help="only letters about this topic's messages")
    ls.add_argument("--reason", help="only letters whose reason contains this (any case)")
    ls.add_argument("--from", dest="start", metavar="T", help="2026-11-26T07:00 (CST) or ms")
    ls.add_argument("--to", dest="end", metavar="T", help="end, likewise")
    ls.add_argument("--limit", type=int, default=LIMIT_DEFAULT, help=f"at most (1-{LIMIT_MAX})")
    sh = sub.add_parser("show", help="one letter, with the message it holds")
    sh.add_argument("id", help="a letter id from `gig-dead list` (partition:offset[:time])")
    rq = sub.add_parser("requeue", help="put a letter's message back on its source topic")
    rq.add_argument("id", help="a letter id from `gig-dead list`")
    rq.add_argument("--operator", required=True, help="who requeues (recorded in the audit)")
    rq.add_argument("--force", action="store_true", help="even if it was requeued before")
    rq.add_argument("--note", help="why, in a few words (recorded in the audit)")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``gig-dead``."""
    args = parser().parse_args(argv)
    run_cli(
        "gig-dead",
        lambda: print(_command(args, get_settings())),
        expected=(Refused, ValueError, Unaudited),
    )


if __name__ == "__main__":
    main()
