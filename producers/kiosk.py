"""``gig-kiosk``: post an instant-hire request from a station and watch it fill.

    gig-kiosk post --market G4301001 --skill bricklayer --headcount 3 --wage 300
    gig-kiosk cancel --market G4301001 --request R-...
    gig-kiosk markets --prefecture 4301

``post`` prints each step (offers sent, radius widened, workers assigned) until the request is
filled, expires, is cancelled or is rejected, and exits 0 only when it filled.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from pydantic import ValidationError

from consumers.runtime import Outgoing, Publisher, now_ms, stop_on_signals
from infra.kafka import make_producer
from infra.markets import load_markets
from infra.settings import Settings, get_settings
from schemas import events as ev
from schemas.topics import HIRE_REQUESTS, REQUEST_EVENTS

FINAL = (ev.RequestFilled, ev.RequestExpired, ev.RequestCancelled, ev.RequestRejected)


async def follow(settings: Settings, request_id: str) -> AsyncIterator[ev.RequestEvent]:
    """The request's lifecycle events, from the start of its partition, as they come."""
    kafka = settings.kafka_slice()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=kafka.fetch_max_wait_ms,
    )
    await consumer.start()
    try:
        parts = sorted(consumer.partitions_for_topic(REQUEST_EVENTS) or {0})
        p = DefaultPartitioner()(request_id.encode(), parts, parts)
        tp = TopicPartition(REQUEST_EVENTS, p)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        async for record in consumer:
            msg = ev.REQUEST_EVENT.validate_json(record.value)
            if msg.request_id == request_id:
                yield msg
    finally:
        await consumer.stop()


def describe(msg: ev.RequestEvent) -> str:
    """One line a person at the kiosk understands (Chinese, then English)."""
    match msg:
        case ev.WaveSent():
            n = sum(1 for c in msg.candidates if c.outcome == "offered")
            return f"已推送 {n} 个邀约 / offers sent to {n} workers within {msg.radius_km:g} km"
        case ev.RadiusWidened():
            return f"扩大范围 / widening the search to {msg.radius_km:g} km"
        case ev.WorkerAssigned():
            return f"已录用 {msg.assigned}/{msg.headcount} / worker {msg.worker_id} is coming"
        case ev.RequestFilled():
            return f"招满 / filled: all {msg.headcount} workers are coming"
        case ev.RequestExpired():
            return f"已过期 / expired with {msg.assigned} of {msg.headcount} workers"
        case ev.RequestCancelled():
            return f"已取消 / cancelled ({msg.assigned} already assigned)"
        case ev.RequestRejected():
            return f"被拒绝 / rejected: {msg.reason}"
    return type(msg).__name__


async def post(args: argparse.Namespace, settings: Settings) -> int:
    rid = args.request or f"R-{uuid.uuid4().hex[:12]}"
    at = now_ms()
    lon_lat = {"lon": args.lon, "lat": args.lat} if args.lon is not None else {}
    request = ev.HireRequested(
        event_id=f"hr:{rid}",
        at_ms=at,
        request_id=rid,
        market_id=args.market,
        skill=args.skill,
        headcount=args.headcount,
        wage_yuan_per_day=args.wage,
        start_at_ms=at,
        deadline_at_ms=at + int(args.deadline_min * 60_000),
        note=args.note,
        **lon_lat,
    )
    await _send(settings, [Outgoing(HIRE_REQUESTS, rid, request)])
    print(f"请求 / request {rid}: {args.headcount} × {args.skill} at {args.market}")
    return await _watch(settings, rid, time.monotonic())


async def _watch(settings: Settings, rid: str, started: float) -> int:
    stop = stop_on_signals()
    async for msg in follow(settings, rid):
        print(f"[{time.monotonic() - started:6.1f} s] {describe(msg)}", flush=True)
        if isinstance(msg, FINAL):
            return 0 if isinstance(msg, ev.RequestFilled) else 1
        if stop.is_set():
            print("stopped watching; the request goes on")
            return 130
    return 1


async def cancel(args: argparse.Namespace, settings: Settings) -> int:
    msg = ev.HireCancelled(
        event_id=f"hc:{args.request}",
        at_ms=now_ms(),
        request_id=args.request,
        market_id=args.market,
        reason=args.reason,
    )
    await _send(settings, [Outgoing(HIRE_REQUESTS, args.request, msg)])
    print(f"cancel sent for {args.request}")
    return 0


async def _send(settings: Settings, messages: list[Outgoing]) -> None:
    producer = make_producer(settings.kafka_slice())
    await producer.start()
    try:
        await Publisher(producer).publish(messages)
    finally:
        await producer.stop()


def markets(args: argparse.Namespace) -> int:
    for m in load_markets():
        if args.prefecture in (None, m.prefecture_code):
            print(f"{m.market_id}\t{m.kind}\t{m.lon:.4f},{m.lat:.4f}\t{m.name_zh}\t{m.name_en}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gig-kiosk",
        description="Station kiosk: post instant-hire requests and watch them fill.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    po = sub.add_parser("post", help="post a request and follow it until it ends")
    po.add_argument("--market", required=True, help="your market id, e.g. G4301001")
    po.add_argument("--skill", required=True, choices=ev.SKILLS)
    po.add_argument("--headcount", type=int, default=1, help="workers wanted (1-50)")
    po.add_argument("--wage", type=float, default=250.0, help="yuan per day (250)")
    po.add_argument("--deadline-min", type=float, default=10.0, help="minutes to fill it (10)")
    po.add_argument("--lon", type=float, help="work place, if not at the market")
    po.add_argument("--lat", type=float, help="work place, if not at the market")
    po.add_argument("--request", help="request id (default: a new one)")
    po.add_argument("--note", default="", help="a note for the workers")
    ca = sub.add_parser("cancel", help="cancel a request; live offers are withdrawn")
    ca.add_argument("--market", required=True)
    ca.add_argument("--request", required=True)
    ca.add_argument("--reason", default="")
    mk = sub.add_parser("markets", help="list markets (id, kind, place, names)")
    mk.add_argument("--prefecture", help="prefecture code, e.g. 4301 for Changsha")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``gig-kiosk``."""
    args = parser().parse_args(argv)
    if args.command == "markets":
        sys.exit(markets(args))
    try:
        run = post if args.command == "post" else cancel
        sys.exit(asyncio.run(run(args, get_settings())))
    except ValidationError as e:
        sys.exit(f"gig-kiosk: the request is not valid: {e}")


if __name__ == "__main__":
    main()
