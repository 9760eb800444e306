"""The console's dead letters on the real stack (Kafka, PostgreSQL, the dispatcher and the
archiver): what a running consumer dead-letters is listed with its reason; only operators
requeue, only whole messages, only once unless forced; a requeued message is taken by the
dispatcher and the requeue is audited on the log. A Chromium test does it from the page.

With ``GIG_SCREENSHOTS=docs/screens`` it saves the dead-letters screenshot of the docs."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import ConsumerRecord
from playwright.async_api import Browser, expect

from archive.archiver import run_archiver
from consumers.services import run_dispatcher
from gateway.serve import Running, serving
from infra.audit import read_topics
from infra.decoding import dead_letter, payload_head
from infra.kafka import make_producer
from infra.publish import Publisher
from infra.settings import Settings
from schemas import events as ev
from schemas.topics import (
    HIRE_REQUESTS,
    OPERATOR_ACTIONS,
    REQUEST_EVENTS,
    REQUEST_STATE,
    WORKER_EVENTS,
)
from tests.conftest import eventually, running
from tests.gateway.conftest import MARKET, bearer, snap, token, with_gateway

API = "/api/v1/console/dead-letters"


@pytest.fixture
def console_settings(archived: Settings) -> Settings:
    """Gateway settings over a fresh, empty archive."""
    return with_gateway(archived)


@pytest.fixture
async def stack(console_settings: Settings) -> AsyncIterator[tuple[Running, httpx.AsyncClient]]:
    """The gateway, the dispatcher and an archiver, and an HTTP client of the gateway."""
    s = console_settings
    archiver = functools.partial(run_archiver, group=f"archiver-{s.key_prefix}")
    async with (
        serving(s) as gw,
        running((run_dispatcher, s), (archiver, s)),
        httpx.AsyncClient(base_url=gw.url, timeout=60) as http,
    ):
        yield gw, http


@contextlib.asynccontextmanager
async def producing(s: Settings) -> AsyncIterator[Publisher]:
    producer = make_producer(s.kafka_slice())
    await producer.start()
    try:
        yield Publisher(producer)
    finally:
        await producer.stop()


def hire(rid: str, market: str = MARKET) -> ev.HireRequested:
    at = int(time.time() * 1000)
    return ev.HireRequested(
        event_id=f"hr:{rid}", at_ms=at, request_id=rid, market_id=market, skill="plumber",
        headcount=1, wage_yuan_per_day=280.0, start_at_ms=at, deadline_at_ms=at + 600_000,
    )  # fmt: skip


async def letters(http: httpx.AsyncClient, who: str, **query: Any) -> list[dict[str, Any]]:
    r = await http.get(API, params=query, headers=bearer(who))
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["letters"]
    return found


async def listed(http: httpx.AsyncClient, who: str, key: str) -> dict[str, Any]:
    """The letter about the message keyed ``key``, once the archive has it."""
    found: list[dict[str, Any]] = []

    async def there() -> bool:
        found[:] = [v for v in await letters(http, who) if v["key"] == key]
        return bool(found)

    await eventually(there, what=f"a dead letter keyed {key} in the list")
    return found[0]


async def publish_letter(s: Settings, message: ev.HireRequested, reason: str) -> None:
    """A letter as ``infra.consume`` writes one for a record its handler failed on."""
    value = message.model_dump_json().encode()
    record: ConsumerRecord[bytes, bytes] = ConsumerRecord(
        HIRE_REQUESTS, 0, 7, 0, 0, message.request_id.encode(), value, None, 1, len(value), ()
    )
    async with producing(s) as pub:
        await pub.publish([dead_letter(record, "dispatcher", reason)])


async def gig_dead(s: Settings, *args: str) -> tuple[int, str, str]:
    """Run ``gig-dead`` against the test's services: exit code, stdout, stderr."""
    env = {**os.environ, "GIG_PG_DSN": s.pg_dsn, "GIG_KAFKA_BOOTSTRAP": s.kafka_bootstrap}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "archive.dead", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def archived_event(s: Settings, request_id: str, kind: str) -> bool:
    conn = await asyncpg.connect(s.pg_dsn)
    try:
        query = "SELECT 1 FROM event_log WHERE request_id = $1 AND type = $2"
        return bool(await conn.fetchval(query, request_id, kind))
    finally:
        await conn.close()


@pytest.mark.integration
async def test_dead_letters_are_listed_with_reasons_and_only_whole_ones_requeued(
    console_settings: Settings, stack: tuple[Running, httpx.AsyncClient]
) -> None:
    s, (_, http) = console_settings, stack
    op, sup = token(s, "operator", "ops"), token(s, "supervisor", "sup")
    tag = uuid.uuid4().hex[:6]
    bad, big, lost = f"R-bad-{tag}", f"R-big-{tag}", f"R-lost-{tag}"
    async with producing(s) as pub:
        await pub.producer.send_and_wait(HIRE_REQUESTS, b"{not json", key=bad.encode())
        huge = b'{"type": "HireRequested", "note": "' + b"x" * 10_000 + b'"}'
        await pub.producer.send_and_wait(HIRE_REQUESTS, huge, key=big.encode())
        unknown = hire(lost, market="G9999999").model_dump_json().encode()
        await pub.producer.send_and_wait(HIRE_REQUESTS, unknown, key=lost.encode())

    # Each is listed, newest first, with the reason the dispatcher gave.
    one = await listed(http, sup, bad)
    assert one["consumer"] == "dispatcher" and one["source_topic"] == HIRE_REQUESTS
    assert "Invalid JSON" in one["reason"] and one["payload_bytes"] == 9
    assert one["preview"] == "{not json" and one["refusal"] is None
    two = await listed(http, sup, big)
    assert two["payload_bytes"] == len(huge) and "holds only the first" in two["refusal"]
    three = await listed(http, sup, lost)
    assert "unknown market" in three["reason"]
    everything = await letters(http, sup)
    times = [v["at_ms"] for v in everything]
    assert times == sorted(times, reverse=True)

    # Filters.
    assert [v["key"] for v in await letters(http, sup, reason="invalid JSON")] == [bad]
    assert await letters(http, sup, source_topic=WORKER_EVENTS) == []
    assert await letters(http, sup, consumer="presence") == []
    assert len(await letters(http, sup, consumer="dispatcher", limit=1)) == 1
    assert await letters(http, sup, **{"from": int(time.time() * 1000) + 3_600_000}) == []

    # One letter, whole.
    r = await http.get(f"{API}/{two['id']}", headers=bearer(sup))
    assert r.status_code == 200 and r.json()["payload"] == payload_head(huge)

    # A supervisor reads but may not requeue; an operator may not requeue a head, nor a
    # request that already ended on the log (the dispatcher rejected it).
    r = await http.post(f"{API}/{one['id']}/requeue", headers=bearer(sup), json={})
    assert r.status_code == 403
    r = await http.post(f"{API}/{two['id']}/requeue", headers=bearer(op), json={})
    assert r.status_code == 409 and "holds only the first" in r.json()["detail"]
    await eventually(lambda: archived_event(s, lost, "RequestRejected"), what="the rejection")
    r = await http.post(f"{API}/{three['id']}/requeue", headers=bearer(op), json={"force": True})
    assert r.status_code == 409 and "already ended on the log (RequestRejected)" in r.text

    # The same from the command line.
    code, out, _ = await gig_dead(s, "list", "--reason", "invalid json")
    assert code == 0 and one["id"] in out and two["id"] not in out
    code, out, _ = await gig_dead(s, "show", one["id"])
    assert code == 0 and out.rstrip().endswith("{not json") and "requeueable: yes" in out
    code, _, err = await gig_dead(s, "requeue", two["id"], "--operator", "ops")
    assert code == 2 and "holds only the first" in err
    code, _, err = await gig_dead(s, "requeue", "nope", "--operator", "ops")
    assert code == 2 and "not a letter id" in err

    # Bounded inputs.
    for query in ({"from": 2, "to": 1}, {"limit": 0}, {"limit": 501}, {"reason": "x" * 201}):
        assert (await http.get(API, params=query, headers=bearer(sup))).status_code == 422
    assert (await http.get(f"{API}/nope", headers=bearer(sup))).status_code == 422
    assert (await http.get(f"{API}/0:99999999", headers=bearer(sup))).status_code == 404
    r = await http.post(f"{API}/0:1/requeue", headers=bearer(op), json={"note": "n" * 201})
    assert r.status_code == 422
    assert (await http.get(API)).status_code == 401
    assert (await http.get(API, headers=bearer(token(s, "worker", "W1")))).status_code == 403


@pytest.mark.integration
async def test_an_operator_requeues_a_letter_it_is_taken_and_the_requeue_is_audited(
    console_settings: Settings, stack: tuple[Running, httpx.AsyncClient]
) -> None:
    s, (_, http) = console_settings, stack
    op = token(s, "operator", "ops-wang")
    rid = f"R-dlq-{uuid.uuid4().hex[:8]}"
    message = hire(rid)
    # The dispatcher's handler failed on it once (Redis timed out): the reason no longer holds.
    await publish_letter(s, message, "the dispatcher handler failed on it: TimeoutError")
    letter = await listed(http, op, rid)
    assert letter["refusal"] is None and letter["requeued"] == []

    r = await http.post(
        f"{API}/{letter['id']}/requeue", headers=bearer(op), json={"note": "Redis is back"}
    )
    assert r.status_code == 200, r.text
    done = ev.OPERATOR_ACTION.validate_python(r.json())
    assert (done.operator, done.letter_id, done.source_topic, done.key) == (
        "ops-wang", letter["id"], HIRE_REQUESTS, rid,
    )  # fmt: skip
    assert (done.forced, done.note) == (False, "Redis is back")

    # The message is back on its topic, byte for byte and with its key, and the dispatcher
    # takes it: the request has a saved state.
    async def taken() -> bool:
        log = await read_topics(s.kafka_bootstrap, (HIRE_REQUESTS, REQUEST_STATE), 30)
        states = [ev.REQUEST_STATE_SAVED.validate_json(v) for v in log[REQUEST_STATE]]
        return message.model_dump_json().encode() in log[HIRE_REQUESTS] and any(
            st.request_id == rid for st in states
        )

    await eventually(taken, what="the requeued request taken by the dispatcher")

    # The audit is on the log, and a second requeue is refused unless forced.
    audit = await read_topics(s.kafka_bootstrap, (OPERATOR_ACTIONS,), 30)
    assert [ev.OPERATOR_ACTION.validate_json(v) for v in audit[OPERATOR_ACTIONS]] == [done]
    r = await http.post(f"{API}/{letter['id']}/requeue", headers=bearer(op), json={})
    assert r.status_code == 409 and "requeued already, by ops-wang" in r.json()["detail"]
    code, out, err = await gig_dead(s, "requeue", letter["id"], "--operator", "ops-li", "--force")
    assert code == 0, err
    assert f"requeued {letter['id']} to {HIRE_REQUESTS}" in out

    # The list shows both requeues once the archive has them.
    async def both() -> bool:
        found = [v for v in await letters(http, op) if v["id"] == letter["id"]]
        return [(q["operator"], q["forced"]) for q in found[0]["requeued"]] == [
            ("ops-wang", False),
            ("ops-li", True),
        ]

    await eventually(both, what="both requeues in the list")
    assert not [
        v for v in (await read_topics(s.kafka_bootstrap, (REQUEST_EVENTS,), 30))[REQUEST_EVENTS]
        if b"RequestRejected" in v and rid.encode() in v
    ]  # fmt: skip


@pytest.mark.e2e
async def test_the_dead_tab_lists_a_letter_and_an_operator_requeues_it(
    console_settings: Settings, stack: tuple[Running, httpx.AsyncClient], browser: Browser
) -> None:
    s, (gw, http) = console_settings, stack
    rid = f"R-page-{uuid.uuid4().hex[:8]}"
    await publish_letter(s, hire(rid), "the dispatcher handler failed on it: TimeoutError")
    async with producing(s) as pub:  # and one the dispatcher refuses, with markup in it
        await pub.producer.send_and_wait(HIRE_REQUESTS, b"<img src=x onerror=alert(1)>", key=b"K")
    letter = await listed(http, token(s, "supervisor", "sup"), rid)
    markup = await listed(http, token(s, "supervisor", "sup"), "K")

    page = await (await browser.new_context(viewport={"width": 1280, "height": 900})).new_page()
    await page.goto(f"{gw.url}/supervisor#dead")
    await page.select_option("#dev-role", "operator")
    await page.click("#dev-login-btn")
    await expect(page.locator("#who-text")).to_contain_text("Operator")
    await page.click('#tabs button[data-tab="dead"]')
    row = page.locator(f'#dead-table tr[data-id="{letter["id"]}"]')
    await expect(row).to_contain_text("TimeoutError", timeout=30_000)
    await expect(row).to_contain_text(rid)
    await expect(row).to_have_attribute("data-state", "ready")

    # The markup is shown as text, never run.
    await page.locator(f'#dead-table tr[data-id="{markup["id"]}"]').click()
    await expect(page.locator("#dead-payload")).to_have_text("<img src=x onerror=alert(1)>")
    assert await page.locator("#dead-detail img").count() == 0

    await row.click()
    await expect(page.locator("#dead-payload")).to_contain_text(f'"request_id":"{rid}"')
    await page.fill("#dead-note", "Redis is back")
    await page.click("#dead-requeue")
    outcome = page.locator("#dead-outcome")
    await expect(outcome).to_have_attribute("data-state", "done", timeout=30_000)
    await expect(outcome).to_contain_text(f"Requeued to {HIRE_REQUESTS}")
    await expect(row).to_have_attribute("data-state", "requeued", timeout=30_000)
    await snap(page, "console-dead-letters")

    # Again, unforced: refused, and said so in both languages.
    await row.click()
    await page.click("#dead-requeue")
    await expect(outcome).to_have_attribute("data-state", "refused", timeout=30_000)
    await expect(outcome).to_contain_text("已重投过")

    # A supervisor sees the letter but no Requeue button.
    sup = await (await browser.new_context()).new_page()
    await sup.goto(f"{gw.url}/supervisor")
    await sup.click("#dev-login-btn")
    await sup.click('#tabs button[data-tab="dead"]')
    await sup.locator(f'#dead-table tr[data-id="{letter["id"]}"]').click()
    await expect(sup.locator("#dead-detail")).to_contain_text("Only an operator may requeue")
    assert await sup.locator("#dead-requeue").count() == 0
