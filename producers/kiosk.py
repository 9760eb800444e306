"""``gig-kiosk``: post an instant-hire request from a station and watch it fill.

    gig-kiosk post --market G4301001 --key KEY --skill bricklayer --headcount 3 --wage 300
    gig-kiosk cancel --market G4301001 --key KEY --request R-...
    gig-kiosk markets --prefecture 4301

``post`` prints each step (offers sent, radius widened, workers assigned) until the request is
filled, expires, is cancelled or is rejected, and exits 0 only when it filled.

Requests go through the gateway's HTTP API with the station's key (``--key`` or
``GIG_STATION_KEY``), like the kiosk page: the gateway checks the market and claims the
request id for it. ``--direct`` (operators only) publishes straight to Kafka instead.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from pydantic import ValidationError

from infra.backoff import describe as why
from infra.clock import now_ms
from infra.joining import close
from infra.kafka import make_producer, partitions
from infra.markets import load_markets
from infra.process import stop_on_signals
from infra.publish import Outgoing, Publisher
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
        parts = sorted(tp.partition for tp in await partitions(kafka.bootstrap, [REQUEST_EVENTS]))
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
    if not await _send(settings, [Outgoing(HIRE_REQUESTS, rid, request)]):
        return 2
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
    if not await _send(settings, [Outgoing(HIRE_REQUESTS, args.request, msg)]):
        return 2
    print(f"cancel of {args.request} acknowledged by the broker")
    return 0


async def _send(settings: Settings, messages: list[Outgoing]) -> bool:
    """Send the messages; True once the broker acknowledged every one (else say why)."""
    producer = make_producer(settings.kafka_slice())
    try:
        await producer.start()
        delivery = await Publisher(producer).deliver(messages)
    except KafkaError as e:
        print(f"未发送 / not sent: the broker cannot be reached ({why(e)})", file=sys.stderr)
        return False
    finally:
        await close(producer)
    for _, reason in delivery.failed:
        print(f"未发送 / not sent: the broker did not take it ({reason})", file=sys.stderr)
    return not delivery.failed


# --- through the gateway (the default) --------------------------------------------------------
# A station talks to the gateway's HTTP API with its station key: the gateway checks the
# market, claims the request id for it and publishes. ``--direct`` is for operators only.

API = "/api/v1"
KEY_ENV = "GIG_STATION_KEY"
GATEWAY_ENV = "GIG_GATEWAY_URL"


class KioskError(Exception):
    """A refusal or failure to tell the person at the kiosk (exit 2)."""


def gateway_url(args: argparse.Namespace, settings: Settings) -> str:
    g = settings.gateway
    return str(args.gateway or os.environ.get(GATEWAY_ENV) or f"http://{g.host}:{g.port}")


async def _login(http: httpx.AsyncClient, market: str, key: str | None) -> dict[str, str]:
    """The station's token for its key, as request headers."""
    if not key:
        raise KioskError(f"give the station key (--key or {KEY_ENV}); gig-token prints it")
    r = await http.post(f"{API}/auth/station", json={"market_id": market, "key": key})
    if r.status_code != 200:
        raise KioskError(_refusal(r))
    return {"Authorization": f"Bearer {r.json()['token']}"}


def _refusal(r: httpx.Response) -> str:
    detail = r.json().get("detail") if "json" in r.headers.get("content-type", "") else r.text
    return f"被拒绝 / refused ({r.status_code}): {detail}"


async def post_http(args: argparse.Namespace, settings: Settings) -> int:
    """Post through the gateway, then follow the request's progress stream."""
    rid = args.request or f"R-{uuid.uuid4().hex[:12]}"
    body: dict[str, object] = {
        "request_id": rid, "market_id": args.market, "skill": args.skill,
        "headcount": args.headcount, "wage_yuan_per_day": args.wage,
        "deadline_min": args.deadline_min, "note": args.note,
    }  # fmt: skip
    if args.lon is not None:
        body |= {"lon": args.lon, "lat": args.lat}
    async with httpx.AsyncClient(base_url=gateway_url(args, settings), timeout=30) as http:
        headers = await _login(http, args.market, args.key or os.environ.get(KEY_ENV))
        r = await http.post(f"{API}/requests", json=body, headers=headers)
        if r.status_code != 202:
            raise KioskError(_refusal(r))
        print(f"请求 / request {rid}: {args.headcount} × {args.skill} at {args.market}")
        if args.no_watch:
            return 0
        return await _follow_http(http, headers, rid, time.monotonic())


async def _follow_http(
    http: httpx.AsyncClient, headers: dict[str, str], rid: str, started: float
) -> int:
    url = f"{API}/requests/{rid}/events"
    async with http.stream("GET", url, headers=headers, timeout=None) as r:
        if r.status_code != 200:
            await r.aread()
            raise KioskError(_refusal(r))
        async for line in r.aiter_lines():
            if not line.startswith("data:"):
                continue
            msg = ev.REQUEST_EVENT.validate_json(line.removeprefix("data:").strip())
            print(f"[{time.monotonic() - started:6.1f} s] {describe(msg)}", flush=True)
            if isinstance(msg, FINAL):
                return 0 if isinstance(msg, ev.RequestFilled) else 1
    return 1


async def cancel_http(args: argparse.Namespace, settings: Settings) -> int:
    async with httpx.AsyncClient(base_url=gateway_url(args, settings), timeout=30) as http:
        headers = await _login(http, args.market, args.key or os.environ.get(KEY_ENV))
        url = f"{API}/requests/{args.request}/cancel"
        r = await http.post(url, json={"reason": args.reason}, headers=headers)
        if r.status_code != 202:
            raise KioskError(_refusal(r))
    print(f"cancel taken for {args.request}")
    return 0


def _run(args: argparse.Namespace, settings: Settings) -> int:
    """The command through the gateway, or straight to Kafka with ``--direct``."""
    if args.direct:
        return asyncio.run((post if args.command == "post" else cancel)(args, settings))
    try:
        return asyncio.run((post_http if args.command == "post" else cancel_http)(args, settings))
    except KioskError as e:
        print(f"gig-kiosk: {e}", file=sys.stderr)
    except httpx.TransportError as e:
        print(f"gig-kiosk: the gateway cannot be reached ({type(e).__name__})", file=sys.stderr)
    return 2


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
    po.add_argument("--no-watch", action="store_true", help="post, then exit without following")
    ca = sub.add_parser("cancel", help="cancel a request; live offers are withdrawn")
    ca.add_argument("--market", required=True)
    ca.add_argument("--request", required=True)
    ca.add_argument("--reason", default="")
    for sp in (po, ca):
        sp.add_argument("--key", help=f"the station key (or {KEY_ENV}); `gig-token station …`")
        sp.add_argument("--gateway", help=f"gateway URL (or {GATEWAY_ENV}; settings' host:port)")
        sp.add_argument("--direct", action="store_true",
                        help="operators only: publish straight to Kafka, bypassing the gateway's "
                             "checks (no key needed)")  # fmt: skip
    mk = sub.add_parser("markets", help="list markets (id, kind, place, names)")
    mk.add_argument("--prefecture", help="prefecture code, e.g. 4301 for Changsha")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``gig-kiosk``."""
    args = parser().parse_args(argv)
    if args.command == "markets":
        sys.exit(markets(args))
    try:
        sys.exit(_run(args, get_settings()))
    except ValidationError as e:
        sys.exit(f"gig-kiosk: the request is not valid: {e}")


if __name__ == "__main__":
    main()
