"""Every Kafka record becomes one row; bad ones are kept raw with the reason."""

from __future__ import annotations

import pytest

from archive.records import row_of
from consumers.journal import Journal, to_input
from dispatch.model import Answer, Cancel, Job, NewJob, Policy, Tick
from schemas import topics as tp
from schemas.journal import DISPATCH_BATCH

pytestmark = pytest.mark.unit


def test_a_valid_offer_is_indexed_by_request_worker_market_and_time() -> None:
    value = (b'{"v":1,"type":"OfferAccepted","event_id":"oa:R1:W1","at_ms":5,'
             b'"offer_id":"R1:W1","request_id":"R1","worker_id":"W1"}')  # fmt: skip
    row = row_of(tp.OFFER_RESPONSES, 2, 7, 9, b"R1", value)
    assert (row.request_id, row.worker_id, row.at_ms, row.error) == ("R1", "W1", 5, None)
    assert row.payload is not None and row.raw is None


@pytest.mark.parametrize(
    ("value", "why"),
    [(b"\xff\xfe", "not JSON"), (b"[1, 2]", "not a JSON object"), (b"{bad", "not JSON"),
     (b'{"type": "OfferAccepted"}', "event_id")],
)  # fmt: skip
def test_malformed_records_are_kept_with_a_reason(value: bytes, why: str) -> None:
    row = row_of(tp.OFFER_RESPONSES, 0, 1, 1, None, value)
    assert row.error is not None and why in row.error
    assert row.raw == value or row.payload is not None


def test_the_journal_round_trips_every_input() -> None:
    job = Job("R1", "M", "cook", 2, 200.0, 112.1, 28.2, 1, 2, 3)
    items = [NewJob(job), Answer("R1", "R1:W", "W", True), Cancel("R1"), Tick("R2")]
    [out] = Journal(Policy(), "i1").entry(items, 42)
    back = DISPATCH_BATCH.validate_json(out.message.model_dump_json())
    assert [to_input(t) for t in back.inputs] == items and back.at_ms == 42
    assert Journal(Policy()).entry([], 1) == []
