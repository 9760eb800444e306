"""``gig-load``: a morning of instant-hire requests across the province.

Requests come from markets in proportion to their traffic, with the province's skill mix and
headcounts, at a steady rate; progress is printed as the broker acknowledges them, and what it
refused is counted with the reasons.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Sequence

from aiokafka.errors import KafkaError

from infra.backoff import describe
from infra.clock import now_ms
from infra.kafka import make_producer
from infra.markets import Market, load_markets
from infra.process import require, run_cli, setup_logging, stop_on_signals
from infra.publish import Outgoing, Publisher
from infra.settings import get_settings
from producers.population import MarketPicker, pick_headcount, pick_skill
from schemas import events as ev
from schemas.topics import HIRE_REQUESTS

log = logging.getLogger("load")


def make_request(
    rng: random.Random, pick: MarketPicker, n: int, at_ms: int, deadline_s: float, tag: str
) -> ev.HireRequested:
    market = pick(rng)
    rid = f"R{tag}-{n:06d}"
    return ev.HireRequested(
        event_id=f"hr:{rid}",
        at_ms=at_ms,
        request_id=rid,
        market_id=market.market_id,
        skill=pick_skill(rng),
        headcount=pick_headcount(rng),
        wage_yuan_per_day=float(rng.choice((180, 200, 220, 250, 280, 300, 350))),
        start_at_ms=at_ms + 30 * 60_000,
        deadline_at_ms=at_ms + int(deadline_s * 1000),
    )


async def post_morning(
    publisher: Publisher,
    markets: Sequence[Market],
    *,
    count: int,
    rate_per_s: float,
    deadline_s: float,
    seed: int,
    tag: str,
    stop: asyncio.Event | None = None,
) -> list[ev.HireRequested]:
    """Post ``count`` requests at ``rate_per_s``; return those the broker acknowledged."""
    rng, pick = random.Random(seed), MarketPicker(markets)
    acked: list[ev.HireRequested] = []
    failures: Counter[str] = Counter()
    started = time.monotonic()
    tick = max(1, int(rate_per_s / 20))  # about 20 sends a second, each a small burst
    for n in range(0, count, tick):
        if stop is not None and stop.is_set():
            break
        burst = [
            make_request(rng, pick, i, now_ms(), deadline_s, tag)
            for i in range(n, min(count, n + tick))
        ]
        acked += await _post(publisher, burst, failures)
        done = n + len(burst)
        if done % max(1, count // 10) < tick:
            log.info(
                "%d / %d requests acknowledged, %d failed", len(acked), count, failures.total()
            )
        await asyncio.sleep(max(0.0, started + done / rate_per_s - time.monotonic()))
    for reason, times in failures.most_common():
        log.warning("%d requests not acknowledged: %s", times, reason)
    return acked


async def _post(
    publisher: Publisher, burst: list[ev.HireRequested], failures: Counter[str]
) -> list[ev.HireRequested]:
    """Send a burst; the requests the broker acknowledged (failures counted by reason)."""
    try:
        delivery = await publisher.deliver(
            [Outgoing(HIRE_REQUESTS, r.request_id, r) for r in burst]
        )
    except KafkaError as e:  # the producer would not even take them
        failures[describe(e)] += len(burst)
        return []
    failures.update(reason for _, reason in delivery.failed)
    return [m.message for m in delivery.acknowledged if isinstance(m.message, ev.HireRequested)]


async def run(args: argparse.Namespace) -> None:
    settings = get_settings()
    producer = make_producer(settings.kafka_slice())
    await producer.start()
    try:
        acked = await post_morning(
            Publisher(producer),
            load_markets(),
            count=args.requests,
            rate_per_s=args.rate,
            deadline_s=args.deadline_s,
            seed=args.seed,
            tag=args.tag,
            stop=stop_on_signals(),
        )
        log.info("the broker acknowledged %d of %d requests", len(acked), args.requests)
    finally:
        await producer.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``gig-load``."""
    p = argparse.ArgumentParser(
        prog="gig-load", description="Post a morning of instant-hire requests from many markets."
    )
    p.add_argument("--requests", type=int, default=1000, help="how many requests (1000)")
    p.add_argument("--rate", type=float, default=50.0, help="requests per second (50)")
    p.add_argument(
        "--deadline-s", type=float, default=120.0, help="each request's lifetime (120 s)"
    )
    p.add_argument("--seed", type=int, default=11, help="random seed (11)")
    p.add_argument("--tag", default=str(int(time.time())), help="request id tag (a timestamp)")
    args = p.parse_args(argv)
    run_cli("gig-load", lambda: _load(args))


def _load(args: argparse.Namespace) -> None:
    require(get_settings(), "kafka")
    setup_logging()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
