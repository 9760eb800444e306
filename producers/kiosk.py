"""``gig-kiosk``: post an instant-hire request from a station and watch it fill.

    gig-kiosk post --market G4301001 --key KEY --skill 瓦工 --headcount 3 --wage 300
    gig-kiosk job --market G4301001 --key KEY --request R-... --worker W-1 --step arrived
    gig-kiosk cancel --market G4301001 --key KEY --request R-...
    gig-kiosk markets --prefecture 长沙          # or 4301, or Changsha
    gig-kiosk skills

``post`` prints each step (offers sent, radius widened, workers assigned) until the request is
filled, expires, is cancelled or is rejected, and exits 0 only when it filled; a request that
expired short of its headcount ends with what to do next (a longer search, a higher wage, the
command that posts again for the workers still missing). Markets and skills are printed with
their Chinese and English names, and ``--skill`` takes either (or the code).

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
import unicodedata
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from functools import cache

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from pydantic import ValidationError

from infra.backoff import describe as why
from infra.clock import now_ms
from infra.joining import close
from infra.kafka import make_producer, partitions
from infra.markets import Market, Prefecture, load_markets, load_prefectures
from infra.process import START_GATEWAY, require, require_url, run_cli, stop_on_signals
from infra.publish import Outgoing, Publisher
from infra.settings import Settings, get_settings
from schemas import events as ev
from schemas.names import SKILL_NAMES_ZH, skill_en, skill_from, skill_label
from schemas.topics import HIRE_REQUESTS, REQUEST_EVENTS

FINAL = (ev.RequestFilled, ev.RequestExpired, ev.RequestCancelled, ev.RequestRejected)
JOB_STEPS = ("arrived", "done", "no_show", "cancelled")


class KioskError(Exception):
    """A refusal or failure to tell the person at the kiosk (exit 2)."""


# --- names -----------------------------------------------------------------------------------


@cache
def _markets() -> dict[str, Market]:
    return {m.market_id: m for m in load_markets()}


def market_label(market_id: str) -> str:
    """``长沙市第1零工市场 Changsha Gig Market 1 (G4301001)``, or the bare id if unknown."""
    m = _markets().get(market_id)
    return f"{m.name_zh} {m.name_en} ({market_id})" if m else market_id


def _fold(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def find_prefecture(text: str, prefectures: Sequence[Prefecture]) -> Prefecture:
    """The prefecture a person means: its code (``4301``), its English name (``changsha``)
    or its Chinese name with or without 市 (``长沙``), or the unique one such a name begins
    (``湘西``). ``KioskError`` listing the valid ones otherwise."""
    q = _fold(text).removesuffix("市")
    exact = [p for p in prefectures if q in _names(p)]
    begun = [p for p in prefectures if len(q) >= 2 and any(n.startswith(q) for n in _names(p))]
    for found in (exact, begun):
        if len(found) == 1:
            return found[0]
    valid = ", ".join(f"{p.code} {p.name_zh} {p.name_en}" for p in prefectures)
    kind = "ambiguous" if len(begun) > 1 else "unknown"
    raise KioskError(f"{kind} prefecture {text!r}; give a code or a name: {valid}")


def _names(p: Prefecture) -> tuple[str, ...]:
    return (p.code, _fold(p.name_en), _fold(p.name_zh).removesuffix("市"))


def skill_arg(text: str) -> str:
    """argparse type of ``--skill``: a skill's code, English or Chinese name."""
    skill = skill_from(text)
    if skill is None:
        known = ", ".join(f"{k} ({zh})" for k, zh in SKILL_NAMES_ZH.items())
        raise argparse.ArgumentTypeError(f"unknown skill {text!r}; one of: {known}")
    return skill


# --- what the kiosk prints -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Posted:
    """What was asked for, so the outcome can say what to change."""

    request_id: str
    market_id: str
    skill: str
    headcount: int
    wage: float
    deadline_min: float

    def line(self) -> str:
        return (f"请求 / request {self.request_id}: {self.headcount} × "
                f"{skill_label(self.skill)} at {market_label(self.market_id)}, "
                f"{self.wage:g} 元/yuan a day")  # fmt: skip


@dataclass
class Progress:
    """What the follower has seen of a request so far."""

    widest_km: float = 0.0
    offered: int = 0
    seen: set[str] = field(default_factory=set)  # event ids: a resumed stream repeats none


def describe(msg: ev.RequestEvent) -> str | None:
    """One line a person at the kiosk understands (Chinese, then English); None for a step
    not worth a line (a wave that reached nobody)."""
    match msg:
        case ev.WaveSent():
            n = sum(1 for c in msg.candidates if c.outcome == "offered")
            if n == 0:
                return None
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
    return _job_line(msg)


JOB_WORDS = {
    "arrived": "已到岗 / arrived",
    "done": "已完工 / done",
    "no_show": "未到 / did not come (no-show)",
    "cancelled": "已取消 / job cancelled",
}


def _job_line(msg: object) -> str | None:
    """A hired worker's job moved on (``JobChanged``); read by name, so a kiosk built before
    or after that message existed prints it or skips it, and never fails on it."""
    if getattr(msg, "type", None) != "JobChanged":
        return None
    status = str(getattr(msg, "status", ""))
    reason = str(getattr(msg, "reason", ""))
    by = str(getattr(msg, "by", ""))
    words = JOB_WORDS.get(status, status)
    return f"工人 / worker {getattr(msg, 'worker_id', '?')}: {words}" + (
        f" ({by}{': ' + reason if reason else ''})" if by else ""
    )


def advice(posted: Posted, assigned: int, widest_km: float, widest_allowed_km: float) -> list[str]:
    """What to do about a request that ended short of its headcount, with the flags to use."""
    missing = posted.headcount - assigned
    wage = _round_up(posted.wage * 1.2)
    longer = max(posted.deadline_min * 2, 10.0)
    if widest_km < widest_allowed_km:
        wider = (
            f"扩大范围 / widen the search: it reached {widest_km:g} km before time ran out; "
            f"give it longer to reach {widest_allowed_km:g} km: --deadline-min {longer:g}"
        )
    else:
        wider = (
            f"扩大范围 / the search already reached {widest_allowed_km:g} km, the widest: "
            "nobody else free with this skill; a higher wage or a later hour finds more"
        )
    command = (
        f"gig-kiosk post --market {posted.market_id} --skill {posted.skill} "
        f"--headcount {missing} --wage {wage:g} --deadline-min {longer:g}"
    )
    return [
        f"还差 {missing} 人 / {missing} of {posted.headcount} still missing. 怎么办 / what next:",
        f"  {wider}",
        f"  提高工资 / raise the wage: {posted.wage:g} → {wage:g} 元/yuan a day: --wage {wage:g}",
        f"  再发一次 / post again for the {missing} missing:",
        f"    {command}",
    ]  # fmt: skip


def _round_up(wage: float, step: float = 10.0) -> float:
    return float(-(-wage // step) * step)


def show(msg: ev.RequestEvent, progress: Progress, started: float) -> None:
    """Print the event's line (if any) and note how far the search went."""
    if msg.event_id in progress.seen:
        return
    progress.seen.add(msg.event_id)
    if isinstance(msg, ev.WaveSent | ev.RadiusWidened):
        progress.widest_km = max(progress.widest_km, msg.radius_km)
    line = describe(msg)
    if line is not None:
        print(f"[{time.monotonic() - started:6.1f} s] {line}", flush=True)


def outcome(msg: ev.RequestEvent, posted: Posted, progress: Progress, settings: Settings) -> int:
    """The exit code of a final event (0 only when filled), after any advice."""
    if isinstance(msg, ev.RequestExpired) and msg.assigned < msg.headcount:
        widest_allowed = max(settings.policy.radii_km, default=0.0)
        for line in advice(posted, msg.assigned, progress.widest_km, widest_allowed):
            print(line, flush=True)
    return 0 if isinstance(msg, ev.RequestFilled) else 1


def parse_event(data: str | bytes) -> ev.RequestEvent | None:
    """A request event from JSON, or None for a kind this kiosk does not know (skipped)."""
    try:
        return ev.REQUEST_EVENT.validate_json(data)
    except ValidationError:
        return None


# --- straight to Kafka (operators) -----------------------------------------------------------


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
            msg = parse_event(record.value)
            if msg is not None and msg.request_id == request_id:
                yield msg
    finally:
        await consumer.stop()


async def post(args: argparse.Namespace, settings: Settings) -> int:
    posted = _posted(args)
    at = now_ms()
    lon_lat = {"lon": args.lon, "lat": args.lat} if args.lon is not None else {}
    request = ev.HireRequested(
        event_id=f"hr:{posted.request_id}",
        at_ms=at,
        request_id=posted.request_id,
        market_id=args.market,
        skill=args.skill,
        headcount=args.headcount,
        wage_yuan_per_day=args.wage,
        start_at_ms=at + int(args.start_in_min * 60_000),
        deadline_at_ms=at + int(args.deadline_min * 60_000),
        note=args.note,
        contact=args.contact,
        address=args.address,
        **lon_lat,
    )
    if not await _send(settings, [Outgoing(HIRE_REQUESTS, posted.request_id, request)]):
        return 2
    print(posted.line(), flush=True)
    return await _watch(settings, posted, time.monotonic())


def _posted(args: argparse.Namespace) -> Posted:
    return Posted(args.request or f"R-{uuid.uuid4().hex[:12]}", args.market, args.skill,
                  args.headcount, args.wage, args.deadline_min)  # fmt: skip


def _extras(args: argparse.Namespace) -> dict[str, str]:
    """contact and address, only when given (a gateway from before them refuses the fields)."""
    return {k: v for k in ("contact", "address") if (v := getattr(args, k))}


async def _watch(settings: Settings, posted: Posted, started: float) -> int:
    stop = stop_on_signals()
    progress = Progress()
    async for msg in follow(settings, posted.request_id):
        show(msg, progress, started)
        if isinstance(msg, FINAL):
            return outcome(msg, posted, progress, settings)
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


def gateway_url(args: argparse.Namespace, settings: Settings) -> str:
    g = settings.gateway
    return str(args.gateway or os.environ.get(GATEWAY_ENV) or f"http://{g.host}:{g.port}")


async def _login(http: httpx.AsyncClient, market: str, key: str | None) -> dict[str, str]:
    """The station's token for its key, as request headers."""
    if not key:
        raise KioskError(
            f"give the station key (--key or {KEY_ENV}); `gig-token station {market} --key` "
            "prints it"
        )
    r = await http.post(f"{API}/auth/station", json={"market_id": market, "key": key})
    if r.status_code != 200:
        raise KioskError(_refusal(r))
    return {"Authorization": f"Bearer {r.json()['token']}"}


def _refusal(r: httpx.Response) -> str:
    detail = r.json().get("detail") if "json" in r.headers.get("content-type", "") else r.text
    if isinstance(detail, list):  # pydantic's errors: where, and what is wrong there
        detail = "; ".join(f"{'.'.join(map(str, e.get('loc', [])[1:]))}: {e.get('msg')}"
                           for e in detail if isinstance(e, dict))  # fmt: skip
    return f"被拒绝 / refused ({r.status_code}): {detail}"


def _body(args: argparse.Namespace, posted: Posted) -> dict[str, object]:
    body: dict[str, object] = {
        "request_id": posted.request_id, "market_id": args.market, "skill": args.skill,
        "headcount": args.headcount, "wage_yuan_per_day": args.wage,
        "deadline_min": args.deadline_min, "note": args.note, **_extras(args),
    }  # fmt: skip
    if args.start_in_min:
        body["start_in_min"] = args.start_in_min
    if args.lon is not None:
        body |= {"lon": args.lon, "lat": args.lat}
    return body


async def post_http(args: argparse.Namespace, settings: Settings) -> int:
    """Post through the gateway, then follow the request's progress stream."""
    posted = _posted(args)
    async with httpx.AsyncClient(base_url=gateway_url(args, settings), timeout=30) as http:
        headers = await _login(http, args.market, args.key or os.environ.get(KEY_ENV))
        r = await http.post(f"{API}/requests", json=_body(args, posted), headers=headers)
        if r.status_code != 202:
            raise KioskError(_refusal(r))
        print(posted.line(), flush=True)
        if args.no_watch:
            return 0
        return await _follow_http(http, headers, posted, settings)


async def _follow_http(
    http: httpx.AsyncClient, headers: dict[str, str], posted: Posted, settings: Settings
) -> int:
    started, progress = time.monotonic(), Progress()
    url = f"{API}/requests/{posted.request_id}/events"
    async with http.stream("GET", url, headers=headers, timeout=None) as r:
        if r.status_code != 200:
            await r.aread()
            raise KioskError(_refusal(r))
        async for line in r.aiter_lines():
            msg = parse_event(line.removeprefix("data:")) if line.startswith("data:") else None
            if msg is None:
                continue
            show(msg, progress, started)
            if isinstance(msg, FINAL):
                return outcome(msg, posted, progress, settings)
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


async def job_http(args: argparse.Namespace, settings: Settings) -> int:
    """Report a hired worker's job: arrived, done, no-show or cancelled."""
    async with httpx.AsyncClient(base_url=gateway_url(args, settings), timeout=30) as http:
        headers = await _login(http, args.market, args.key or os.environ.get(KEY_ENV))
        url = f"{API}/requests/{args.request}/jobs/{args.worker}"
        body = {"step": args.step, "reason": args.reason}
        r = await http.post(url, json=body, headers=headers)
        if r.status_code != 202:
            raise KioskError(_refusal(r))
    print(f"工人 / worker {args.worker}: {JOB_WORDS[args.step]} (sent)")
    return 0


DIRECT = {"post": post, "cancel": cancel}
THROUGH_GATEWAY = {"post": post_http, "cancel": cancel_http, "job": job_http}


def _run(args: argparse.Namespace, settings: Settings) -> int:
    """The command through the gateway, or straight to Kafka with ``--direct``."""
    if getattr(args, "direct", False):
        require(settings, "kafka")
        return asyncio.run(DIRECT[args.command](args, settings))
    require_url("the gateway", gateway_url(args, settings), START_GATEWAY)
    return asyncio.run(THROUGH_GATEWAY[args.command](args, settings))


def markets(args: argparse.Namespace) -> int:
    """The markets (of one prefecture): id, kind, place, Chinese and English names."""
    code = (
        None
        if args.prefecture is None
        else find_prefecture(args.prefecture, load_prefectures()).code
    )
    for m in load_markets():
        if code in (None, m.prefecture_code):
            print(f"{m.market_id}\t{m.kind}\t{m.lon:.4f},{m.lat:.4f}\t{m.name_zh}\t{m.name_en}")
    return 0


def skills(_: argparse.Namespace) -> int:
    """The skills: code, Chinese and English name."""
    for skill, zh in SKILL_NAMES_ZH.items():
        print(f"{skill}\t{zh}\t{skill_en(skill)}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gig-kiosk",
        description="Station kiosk: post instant-hire requests and watch them fill.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    po = sub.add_parser("post", help="post a request and follow it until it ends")
    po.add_argument("--market", required=True, help="your market id, e.g. G4301001")
    po.add_argument("--skill", required=True, type=skill_arg, metavar="SKILL",
                    help="code, English or Chinese name, e.g. bricklayer or 瓦工 "
                         "(`gig-kiosk skills` lists them)")  # fmt: skip
    po.add_argument("--headcount", type=int, default=1, help="workers wanted (1-50)")
    po.add_argument("--wage", type=float, default=250.0, help="yuan per day (250)")
    po.add_argument("--deadline-min", type=float, default=10.0, help="minutes to fill it (10)")
    po.add_argument("--start-in-min", type=float, default=0.0, help="minutes until work starts")
    po.add_argument("--lon", type=float, help="work place, if not at the market")
    po.add_argument("--lat", type=float, help="work place, if not at the market")
    po.add_argument("--address", default="", help="where to go, if not the market")
    po.add_argument("--contact", default="", help="the station's phone or desk")
    po.add_argument("--request", help="request id (default: a new one)")
    po.add_argument("--note", default="", help="a note for the workers")
    po.add_argument("--no-watch", action="store_true", help="post, then exit without following")
    ca = sub.add_parser("cancel", help="cancel a request; live offers are withdrawn")
    ca.add_argument("--market", required=True)
    ca.add_argument("--request", required=True)
    ca.add_argument("--reason", default="")
    jo = sub.add_parser("job", help="a hired worker arrived, is done, did not come, or the "
                                    "job is cancelled")  # fmt: skip
    jo.add_argument("--market", required=True)
    jo.add_argument("--request", required=True)
    jo.add_argument("--worker", required=True)
    jo.add_argument("--step", required=True, choices=JOB_STEPS)
    jo.add_argument("--reason", default="", help="why (a no-show or a cancellation)")
    for sp in (po, ca, jo):
        sp.add_argument("--key", help=f"station key (or {KEY_ENV}): gig-token station M --key")
        sp.add_argument("--gateway", help=f"gateway URL (or {GATEWAY_ENV}; settings' host:port)")
    for sp in (po, ca):
        sp.add_argument("--direct", action="store_true",
                        help="operators only: publish straight to Kafka, bypassing the gateway's "
                             "checks (no key needed)")  # fmt: skip
    mk = sub.add_parser("markets", help="list markets (id, kind, place, Chinese, English name)")
    mk.add_argument("--prefecture", help="code or name: 4301, Changsha or 长沙")
    sub.add_parser("skills", help="list skills (code, Chinese, English name)")
    return p


def _command(args: argparse.Namespace) -> int:
    if args.command == "markets":
        return markets(args)
    if args.command == "skills":
        return skills(args)
    try:
        return _run(args, get_settings())
    except ValidationError as e:
        wrong = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
        raise KioskError(f"the request is not valid: {wrong}") from None


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``gig-kiosk``."""
    args = parser().parse_args(argv)
    run_cli("gig-kiosk", lambda: _command(args), expected=(KioskError,))


if __name__ == "__main__":
    main()
