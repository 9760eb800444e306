"""Replay speed: a busy prefecture's hour, recorded, then replayed exactly and under batch.

It synthesises the hour in memory (workers checked in around the prefecture's markets,
requests at a steady rate, workers answering by the response model), records it the way the
live dispatcher does (decisions and journal), then times the replays. Run it with::

    .venv/bin/python -m replay.bench --prefecture 4301 --workers 20000 --rate 1.0
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import Sequence
from pathlib import Path

from dispatch.model import Policy
from infra.markets import load_markets
from producers.load import make_request
from producers.population import MarketPicker
from producers.workers import check_ins
from replay import outcomes as oc
from replay import report, runner
from replay.recording import Recording, Window
from schemas import events as ev

T0 = 1_790_000_000_000  # a fixed morning, so runs compare


def synthesise(prefecture: str, workers: int, rate: float, hours: float, seed: int) -> Recording:
    """The hour's inputs: check-ins a minute before it starts, then requests at ``rate``/s."""
    markets = [m for m in load_markets() if m.prefecture_code == prefecture]
    crowd = [c.model_copy(update={"at_ms": T0 - 60_000}) for c in check_ins(workers, markets, seed)]
    rng, pick = random.Random(seed), MarketPicker(markets)
    n = int(hours * 3600 * rate)
    requests = [make_request(rng, pick, i, T0 + int(i * 1000 / rate), 120.0, "B") for i in range(n)]
    window = Window(T0, T0 + int(hours * 3_600_000), T0 - 3_600_000)
    return Recording(window, requests=requests, presence=list(crowd))


def places() -> dict[str, tuple[float, float]]:
    """Every market's (lon, lat)."""
    return {m.market_id: (m.lon, m.lat) for m in load_markets()}


async def bench(args: argparse.Namespace) -> str:
    where = places()
    rec = synthesise(args.prefecture, args.workers, args.rate, args.hours, args.seed)
    model = runner.Responses(use_recorded=False, seed=args.seed)
    t = time.perf_counter()
    live = await runner.simulate(rec, Policy(), model, where)
    print(
        f"recorded the hour: {len(rec.requests):,} requests, {live.batches:,} dispatcher "
        f"batches, {len(live.decisions):,} decisions ({time.perf_counter() - t:.1f} s)"
    )
    rec.journal, rec.answers = live.journal, live.answers
    offer_types = ev.OfferMade | ev.OfferWithdrawn
    rec.offers = [d for d in live.decisions if isinstance(d, offer_types)]
    rec.request_events = [d for d in live.decisions if not isinstance(d, offer_types)]  # type: ignore[misc]
    exact = await runner.replay_journal(rec)
    same = runner.compare(rec.decisions(), exact.decisions).identical
    batch = await runner.simulate(rec, Policy(name="batch"), runner.learned_responses(rec), where)
    hour = args.hours * 3600
    lines = [
        f"exact replay : {exact.wall_s:6.2f} s for {hour:,.0f} s recorded = "
        f"{hour / exact.wall_s:,.0f}× real time; decisions identical: {same}",
        f"batch what-if: {batch.wall_s:6.2f} s = {hour / batch.wall_s:,.0f}× real time",
    ]
    runs = [("recorded (greedy)", live.decisions), ("replay: batch", batch.decisions)]
    rows = [(label, oc.outcomes(rec.requests, d, lambda _: "all")[-1]) for label, d in runs]
    if args.plot:
        kind = {m.market_id: f"{m.kind} markets" for m in load_markets()}
        per = [
            (label, oc.outcomes(rec.requests, d, lambda r: kind[r.market_id])) for label, d in runs
        ]
        report.plot(Path(args.plot), per, {}, f"A busy hour in prefecture {args.prefecture}")
        lines.append(f"chart written to {args.plot}")
    return "\n".join([*lines, report.side_by_side(rows)])


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m replay.bench", description=__doc__)
    p.add_argument("--prefecture", default="4301", help="prefecture code (4301, Changsha)")
    p.add_argument("--workers", type=int, default=20_000, help="workers checked in (20000)")
    p.add_argument("--rate", type=float, default=1.0, help="requests per second (1.0)")
    p.add_argument("--hours", type=float, default=1.0, help="hours recorded (1)")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--plot", metavar="FILE", help="also draw recorded vs batch as a PNG")
    print(asyncio.run(bench(p.parse_args(argv))))


if __name__ == "__main__":
    main()
