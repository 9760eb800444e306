"""Offer-to-socket and hired-to-socket latency: from an ``OfferMade`` or a ``Hired`` published
on Kafka to the worker's socket.

    python -m gateway.measure --workers 200 --offers 3000 --rate 500

It starts a private Apache Kafka node, uses the configured Redis and PostgreSQL, runs a gateway in
this process, connects ``--workers`` worker sockets, publishes offers to them at ``--rate`` per
second (each stamped with the time it is sent; every other one is a ``Hired``), and reports
for each kind p50, p99 and max of receipt time minus that stamp, plus how many arrived.
Client and gateway share the machine's clock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from pydantic import SecretStr
from websockets.asyncio.client import ClientConnection, connect

from gateway import auth
from gateway.serve import serving
from infra import pg
from infra.broker import private_cluster
from infra.clock import now_ms
from infra.kafka import ensure_topics, make_producer
from infra.publish import Outgoing, Publisher
from infra.settings import Settings
from schemas import events as ev
from schemas.topics import OFFERS


@contextlib.contextmanager
def private_broker() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp, private_cluster(Path(tmp)) as cluster:
        yield cluster.bootstrap


def offer(worker: str, n: int) -> ev.OfferMade:
    at = now_ms()
    return ev.OfferMade(
        event_id=f"om:{n}", at_ms=at, offer_id=f"O-{n}", request_id=f"R-{n}", worker_id=worker,
        market_id="G4301001", skill="cook", wage_yuan_per_day=300.0, lon=113.0, lat=28.0,
        distance_km=1.0, score=1.0, wave=1, expires_at_ms=at + 60_000,
    )  # fmt: skip


def hired(worker: str, n: int) -> ev.Hired:
    return ev.Hired(
        event_id=f"hi:{n}", at_ms=now_ms(), offer_id=f"O-{n}", request_id=f"R-{n}",
        worker_id=worker, market_id="G4301001", market_name_zh="长沙市第1零工市场",
        market_name_en="Changsha Gig Market 1", address="岳麓区", skill="cook",
        wage_yuan_per_day=300.0, start_at_ms=now_ms(), note="8:00-17:00", contact="0731-1",
        headcount=2, others=1, lon=113.0, lat=28.0,
    )  # fmt: skip


KINDS = ("OfferMade", "Hired")


async def receive(
    ws: ClientConnection, out: dict[str, list[float]], arrived: asyncio.Event
) -> None:
    async for raw in ws:
        msg = json.loads(raw)
        if msg.get("type") in out:
            out[msg["type"]].append(time.time() * 1000 - msg["at_ms"])
            arrived.set()


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else float("nan")


async def measure(args: argparse.Namespace, bootstrap: str) -> str:
    base = Settings(kafka_bootstrap=bootstrap, key_prefix=f"lat{uuid.uuid4().hex[:6]}")
    # The broker is this run's own, its topics new: the gateway's group reads from the start.
    kafka = base.kafka.model_copy(
        update={"fetch_max_wait_ms": args.fetch_wait_ms, "new_group_start": "earliest"}
    )
    gw = base.gateway.model_copy(
        update={"secret": SecretStr(uuid.uuid4().hex * 2), "group": f"lat-{uuid.uuid4().hex[:6]}"}
    )
    settings = base.model_copy(update={"kafka": kafka, "gateway": gw})
    await ensure_topics(settings.kafka_slice())
    await pg.prepare(settings.pg_dsn)
    secret = auth.resolve_secret(gw)
    workers = [f"W-lat-{i}" for i in range(args.workers)]
    latencies: dict[str, list[float]] = {kind: [] for kind in KINDS}
    arrived = asyncio.Event()
    async with serving(settings) as running, contextlib.AsyncExitStack() as sockets:
        readers = []
        for w in workers:
            tok = auth.issue_token(secret, "worker", w, int(time.time()), 3600)
            url = f"{running.url.replace('http', 'ws')}/ws/worker?token={tok}"
            ws = await sockets.enter_async_context(connect(url))
            await ws.recv()  # Welcome
            readers.append(asyncio.create_task(receive(ws, latencies, arrived)))
        producer = make_producer(settings.kafka_slice())
        await producer.start()
        pub = Publisher(producer)
        try:
            # Warm up until the gateway's consumer group has its partitions.
            while not arrived.is_set():
                await pub.publish([Outgoing(OFFERS, workers[0], offer(workers[0], -1))])
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrived.wait(), 1.0)
            for kind in KINDS:
                latencies[kind].clear()
            gap = 1.0 / args.rate
            started = time.monotonic()
            for n in range(args.offers):
                w = workers[n % len(workers)]
                msg = offer(w, n) if n % 2 == 0 else hired(w, n)
                await pub.publish([Outgoing(OFFERS, w, msg)])
                await asyncio.sleep(max(0.0, started + (n + 1) * gap - time.monotonic()))
            await asyncio.sleep(1.0)
        finally:
            await producer.stop()
            for r in readers:
                r.cancel()
    head = (f"{args.offers} messages (half offers, half hires), {args.workers} sockets, "
            f"{args.rate:g}/s, fetch_max_wait_ms={args.fetch_wait_ms}")  # fmt: skip
    return "\n".join([head] + [_line(kind, v) for kind, v in latencies.items()])


def _line(kind: str, values: list[float]) -> str:
    return (
        f"  {kind:<9} to socket: {len(values)} arrived, p50 {pct(values, 50):.1f} ms, "
        f"p99 {pct(values, 99):.1f} ms, max {max(values, default=float('nan')):.1f} ms"
    )


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m gateway.measure", description=__doc__)
    p.add_argument("--workers", type=int, default=200, help="worker sockets (200)")
    p.add_argument("--offers", type=int, default=3000, help="offers to send (3000)")
    p.add_argument("--rate", type=float, default=500.0, help="offers per second (500)")
    p.add_argument("--fetch-wait-ms", type=int, default=Settings().kafka.fetch_max_wait_ms,
                   help="the gateway consumer's fetch_max_wait_ms (settings default)")  # fmt: skip
    args = p.parse_args(argv)
    with private_broker() as bootstrap:
        print(asyncio.run(measure(args, bootstrap)))


if __name__ == "__main__":
    main()
