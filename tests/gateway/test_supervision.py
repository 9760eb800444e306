"""The gateway notices its own failures: a fan-out task that dies is restarted, and offers
reach workers again. (A task that raises is restarted the same way: tests/gateway/test_units
shows it on the supervisor alone.) Real Kafka, Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from gateway.app import Parts
from gateway.serve import Running
from infra.publish import Outgoing
from infra.settings import Settings
from schemas import events as ev
from schemas.topics import OFFERS
from tests.conftest import eventually
from tests.gateway.conftest import MARKET, Recording, token

pytestmark = pytest.mark.integration


def offer(worker: str, n: int) -> ev.OfferMade:
    now = int(time.time() * 1000)
    oid = f"R-sup-{n}:{worker}"
    return ev.OfferMade(
        event_id=f"om:{oid}", at_ms=now, offer_id=oid, request_id=f"R-sup-{n}", worker_id=worker,
        market_id=MARKET, skill="cook", wage_yuan_per_day=300.0, lon=113.0, lat=28.0,
        distance_km=1.0, score=1.0, wave=1, expires_at_ms=now + 120_000,
    )  # fmt: skip


async def offer_arrives(ws: ClientConnection, offer_id: str, timeout_s: float = 30.0) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            msg: dict[str, Any] = json.loads(await ws.recv())
            if msg.get("offer_id") == offer_id:
                return


async def publish(recording: Recording, made: ev.OfferMade) -> None:
    await recording.inner.publish([Outgoing(OFFERS, made.worker_id, made)])


async def warmed_up(ws: ClientConnection, recording: Recording, worker: str) -> None:
    """Publish until the gateway's consumer has its partitions and an offer comes through."""
    for n in range(30):
        first = offer(worker, -n - 1)
        await publish(recording, first)
        try:
            await offer_arrives(ws, first.offer_id, timeout_s=2.0)
            return
        except TimeoutError:
            continue
    pytest.fail("no offer reached the worker")


async def test_a_killed_fanout_is_restarted_and_offers_flow_again(
    gateway: tuple[Running, Recording], gw_settings: Settings
) -> None:
    running, recording = gateway
    parts: Parts = running.app.state.parts
    worker = f"W-{uuid.uuid4().hex[:8]}"
    url = (
        running.url.replace("http", "ws")
        + f"/ws/worker?token={token(gw_settings, 'worker', worker)}"
    )
    async with connect(url) as ws:
        await warmed_up(ws, recording, worker)
        killed = parts.fanout.current
        assert killed is not None
        killed.cancel()

        async def restarted() -> bool:
            return parts.fanout.restarts >= 1 and parts.fanout.current is not killed

        # The killed task first commits what it handled and leaves its group: on a loaded
        # machine, with the test's topics just made, the coordinator may take a while.
        await eventually(restarted, timeout_s=90.0, what="the fan-out restarted")
        after = offer(worker, 1)
        await publish(recording, after)
        await offer_arrives(ws, after.offer_id)
