"""The pure parts of the dead letters' console and ``gig-dead``: ids, filters, what can be
requeued and why not, the audit record, and reading archived rows."""

from __future__ import annotations

import json

import pytest
from aiokafka import ConsumerRecord

from archive import dead
from infra.decoding import dead_letter
from schemas import events as ev
from schemas.topics import HIRE_REQUESTS, OPERATOR_ACTIONS, REQUEST_EVENTS, WORKER_EVENTS

pytestmark = pytest.mark.unit

HIRE = ev.HireRequested(
    event_id="hr:R-1", at_ms=1_700_000_000_000, request_id="R-1", market_id="G4301001",
    skill="plumber", headcount=1, wage_yuan_per_day=260.0, start_at_ms=1_700_000_000_000,
    deadline_at_ms=1_700_000_600_000,
)  # fmt: skip


def letter(
    value: bytes, topic: str = HIRE_REQUESTS, key: bytes | None = b"R-1", reason: str = "boom"
) -> ev.DeadLetter:
    record: ConsumerRecord[bytes, bytes] = ConsumerRecord(
        topic, 2, 41, 0, 0, key, value, None, len(key or b""), len(value), ()
    )
    message = dead_letter(record, "dispatcher", reason).message
    assert isinstance(message, ev.DeadLetter)
    return message


def test_ids_name_a_record_of_the_dead_letter_topic() -> None:
    assert dead.parse_id("0:17") == dead.LetterId(0, 17, None)
    assert dead.parse_id("3:17:1700000000000") == dead.LetterId(3, 17, 1_700_000_000_000)
    assert str(dead.LetterId(3, 17, 5)) == "3:17:5"
    assert str(dead.LetterId(3, 17)) == "3:17"
    for bad in ("", "0", "a:1", "1:2:3:4", "-1:2", "1:²", "1: 2", "9" * 20 + ":1", "4294967296:1"):
        with pytest.raises(ValueError, match="letter id"):
            dead.parse_id(bad)


def test_filters_are_bounded_and_match_like_the_query() -> None:
    f = dead.Filters(" dispatcher ", "", "JSON", 10, 20, 5)
    assert (f.consumer, f.source_topic, f.reason) == ("dispatcher", None, "JSON")
    one = letter(b"{oops", reason="Invalid JSON").model_copy(update={"at_ms": 15})
    assert f.matches(one)
    assert not f.matches(one.model_copy(update={"at_ms": 21}))
    assert not f.matches(one.model_copy(update={"consumer": "presence"}))
    assert not dead.Filters(reason="unknown skill").matches(one)
    with pytest.raises(ValueError, match="start"):
        dead.Filters(from_ms=2, to_ms=1)
    with pytest.raises(ValueError, match="limit"):
        dead.Filters(limit=dead.LIMIT_MAX + 1)


def test_a_whole_message_of_an_inbound_topic_can_be_requeued() -> None:
    whole = letter(HIRE.model_dump_json().encode())
    assert dead.refusal(whole) is None
    assert dead.request_of(whole) == "R-1"
    # Text the archive cannot keep as JSON (a NUL) is still the message, byte for byte.
    assert dead.refusal(letter(b'{"a": "\x00"}')) is None
    # Without a key it goes back without one.
    assert dead.refusal(letter(b"{}", key=None)) is None


def test_a_head_or_replaced_bytes_or_a_cut_key_cannot_be_requeued() -> None:
    big = letter(b'{"note": "' + b"x" * 10_000 + b'"}')
    assert big.payload_bytes == 10_012
    assert "of the message's 10012 bytes" in str(dead.refusal(big))
    assert "holds only the first 40" in str(dead.refusal(big))
    # JSON escapes count towards the head's bound, so a message shorter than it may be cut.
    quoted = letter(b'"' * 3000)
    assert "holds only the first" in str(dead.refusal(quoted))
    replaced = letter(b'{"name": "\xff\xfe"}')
    assert "not valid UTF-8" in str(dead.refusal(replaced))
    assert "key was not kept whole" in str(dead.refusal(letter(b"{}", key=b"\xff")))
    assert "key was not kept whole" in str(dead.refusal(letter(b"{}", key=b"k" * 300)))
    forged = whole_with(payload_sha256="0" * 64)
    assert "does not match" in str(dead.refusal(forged))


def whole_with(**changes: object) -> ev.DeadLetter:
    return letter(HIRE.model_dump_json().encode()).model_copy(update=changes)


def test_letters_without_a_size_or_from_an_output_topic_are_refused() -> None:
    older = whole_with(payload_bytes=None, payload_sha256=None)
    assert "names no size or checksum" in str(dead.refusal(older))
    output = letter(b"{}", topic=REQUEST_EVENTS)
    assert "only messages of the inbound topics" in str(dead.refusal(output))
    assert dead.refusal(letter(b"{}", topic=WORKER_EVENTS)) is None
    assert dead.request_of(letter(b"{}", topic=WORKER_EVENTS)) is None
    assert dead.request_of(letter(b"[" * 5000)) is None  # too deep to read: no request


def test_the_audit_record_says_who_requeued_what_and_where_it_went() -> None:
    one = whole_with()
    lid = dead.LetterId(1, 9, 1_700_000_000_123)
    record = dead.audit_record(lid, one, "ops-li", (0, 77), 1_700_000_001_000, note="fixed")
    again = ev.OPERATOR_ACTION.validate_json(record.model_dump_json())
    assert again == record
    assert (again.operator, again.letter_id, again.source_topic, again.key) == (
        "ops-li", "1:9:1700000000123", HIRE_REQUESTS, "R-1",
    )  # fmt: skip
    assert (again.partition, again.offset, again.forced, again.note) == (0, 77, False, "fixed")
    assert again.payload_sha256 == one.payload_sha256
    assert again.payload_bytes == len(HIRE.model_dump_json().encode())
    assert OPERATOR_ACTIONS.startswith("gig.")


def test_archived_rows_become_letters_whether_json_or_kept_raw() -> None:
    one = letter(b'{"a": "\x00"}')
    text = one.model_dump_json()
    assert "\\u0000" in text  # what the archive keeps as raw bytes
    as_json = {"part": 1, "kafka_offset": 2, "kafka_ts_ms": 3, "payload": text, "raw": None}
    as_raw = {**as_json, "payload": None, "raw": text.encode()}
    for row in (as_json, as_raw):
        assert dead.letter_of(row) == (dead.LetterId(1, 2, 3), one)
    junk = {**as_json, "payload": json.dumps({"type": "Teleported"})}
    assert dead.letter_of(junk) is None


def test_views_and_the_cli_table() -> None:
    one = letter(b'{"note": "' + b"x" * 1000 + b'"}')
    v = dead.view(dead.LetterId(0, 5, 6), one, [])
    assert v.id == "0:5:6" and len(v.preview) == dead.PREVIEW_CHARS
    assert v.refusal is None and v.requeued == []
    text = dead.table(dead.LetterList(letters=[v], more=True, archive_lag=3,
                                      archive_updated_at=None))  # fmt: skip
    assert "0:5:6" in text and "more letters match" in text and "3 dead-letter records" in text
    assert "no dead letters" in dead.table(
        dead.LetterList(letters=[], more=False, archive_lag=None, archive_updated_at=None)
    )
