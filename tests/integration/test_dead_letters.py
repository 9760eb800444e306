"""Malformed input on every inbound topic goes to the dead-letter topic with its reason, and
the consumers go on serving valid messages."""

from __future__ import annotations

import json

import pytest
from redis.asyncio import Redis

from consumers.services import run_dispatcher, run_presence
from infra.audit import read_topics
from infra.clock import now_ms
from infra.kafka import make_producer
from infra.keys import Keys
from infra.redis_index import RedisWorkerIndex
from infra.settings import Settings
from schemas import events as ev
from schemas.topics import (
    DEAD_LETTERS,
    HIRE_REQUESTS,
    OFFER_RESPONSES,
    REQUEST_EVENTS,
    WORKER_EVENTS,
)
from tests.conftest import eventually, running
from tests.integration.helpers import Tap, checkin, hire, publisher, tap

pytestmark = pytest.mark.integration


def _hire_json(**changes: object) -> bytes:
    body = json.loads(hire("R-bad").message.model_dump_json())
    body.update(changes)
    return json.dumps(body).encode()


# (topic, key, raw value, a phrase the reason must contain)
BAD = [
    (HIRE_REQUESTS, "R-bad", b"{not json", "Invalid JSON"),
    (HIRE_REQUESTS, "R-bad", _hire_json(headcount=0), "headcount"),
    (HIRE_REQUESTS, "R-bad", _hire_json(lon=113.0, lat=50.0), "lat"),
    (HIRE_REQUESTS, "R-bad", _hire_json(skill="astronaut"), "unknown skill"),
    (
        HIRE_REQUESTS,
        "R-bad",
        _hire_json(request_id="R-unknown-market", market_id="G9999999"),
        "unknown market",
    ),
    (HIRE_REQUESTS, "R-bad", b'{"type": "Teleported", "v": 1}', "type"),
    (WORKER_EVENTS, "w-bad", b"", "Invalid JSON"),
    (
        WORKER_EVENTS,
        "w-bad",
        json.dumps(
            {
                "type": "WorkerLocated",
                "v": 1,
                "event_id": "x",
                "at_ms": 1,
                "worker_id": "w",
                "lon": "east",
            }
        ).encode(),
        "lon",
    ),
    (OFFER_RESPONSES, "R-bad", b"[]", "object"),
    (OFFER_RESPONSES, "R-bad", json.dumps({"type": "OfferAccepted", "v": 2}).encode(), "v"),
]


async def test_bad_messages_are_dead_lettered_and_consumers_go_on(
    settings: Settings, redis: Redis
) -> None:
    index = RedisWorkerIndex(redis, Keys(settings.key_prefix, settings.worker_buckets))
    async with (
        running((run_presence, settings), (run_dispatcher, settings)),
        publisher(settings) as pub,
        tap(settings, DEAD_LETTERS, REQUEST_EVENTS) as seen,
    ):
        producer = make_producer(settings.kafka_slice())
        await producer.start()
        for topic, key, value, _ in BAD:
            await producer.send_and_wait(topic, value, key=key.encode())
        await producer.stop()
        # After the bad ones, valid messages still flow: a worker checks in, a request is offered.
        await pub.publish([checkin("ok-worker", 113.262, 28.2033)])
        await eventually(lambda: _indexed(index), what="the valid check-in")
        await pub.publish([hire("R-good")])
        await eventually(lambda: _has_wave(seen, "R-good"), what="offers for the valid request")
        found: list[ev.DeadLetter] = []

        async def every_letter() -> bool:
            # Read afresh from the log each time: what the dead-letter topic holds, whatever a
            # live reader may have seen.
            found[:] = await _dead_letters(settings)
            return len(found) >= len(BAD)

        await eventually(every_letter, 90, what=lambda: _missing(found, seen))

    letters = found
    for (topic, _, value, phrase), letter in zip(BAD, _in_send_order(letters, BAD), strict=True):
        assert letter.source_topic == topic
        assert letter.payload == value.decode(errors="replace")
        assert phrase.lower() in letter.reason.lower(), (phrase, letter.reason)
        assert letter.consumer in ("dispatcher", "presence")
    rejected = [r for r in seen.of(ev.RequestRejected) if r.request_id == "R-unknown-market"]
    assert rejected and "unknown market" in rejected[0].reason  # the kiosk is told why


def _in_send_order(
    letters: list[ev.DeadLetter], bad: list[tuple[str, str, bytes, str]]
) -> list[ev.DeadLetter]:
    by_payload = {letter.payload: letter for letter in letters}
    return [by_payload[value.decode(errors="replace")] for _, _, value, _ in bad]


async def _indexed(index: RedisWorkerIndex) -> bool:
    return await index.available() == 1


async def _has_wave(seen: Tap, rid: str) -> bool:
    return any(w.request_id == rid for w in seen.of(ev.WaveSent))


async def _dead_letters(settings: Settings) -> list[ev.DeadLetter]:
    values = (await read_topics(settings.kafka_bootstrap, (DEAD_LETTERS,)))[DEAD_LETTERS]
    return [ev.DEAD_LETTER.validate_json(v) for v in values]


def _missing(found: list[ev.DeadLetter], seen: Tap) -> str:
    """What the dead letters lack, said when they do not all come."""
    have = {letter.payload for letter in found}
    lacking = [value[:80] for _, _, value, _ in BAD if value.decode(errors="replace") not in have]
    return f"dead letters for {lacking}; rejections seen: {seen.of(ev.RequestRejected)}"


del now_ms
