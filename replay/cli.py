"""``replay``: timelines, what-if replays and reports from the archived event log.

Examples::

    replay timeline --request R1700000000-000042
    replay timeline --worker W0000123 --from 2026-11-26T07:00 --to 2026-11-26T09:00
    replay run --from 2026-11-26T07:00 --to 2026-11-26T08:00 --prefecture 4301
    replay run --from … --to … --policy batch --plot morning.png --csv morning.csv
    replay report --from … --to … --by prefecture --plot report.png
    replay status
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import tomllib
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from archive.store import PgEventStore
from dispatch.batch import BATCH
from dispatch.model import Policy
from infra.clients import policy_from
from infra.process import require, run_cli
from infra.settings import PolicySettings, Settings, get_settings
from replay import report, reporting, results, runner
from replay.breakdown import BY, Grouping, Registry
from replay.recording import Recording, Window, from_kafka, from_store, parse
from replay.reporting import ReportData, when
from replay.timeline import LOCAL, Context, render
from schemas import events as ev

HOUR_MS = 3_600_000
POLICIES = ("recorded", "greedy", BATCH)  # or a TOML/JSON file of policy settings
__all__ = ["Registry", "main", "parser", "when"]


class Refused(ValueError):
    """An argument that names nothing we know, said in one line."""


def check(args: argparse.Namespace, reg: Registry) -> None:
    """Refuse, before touching any service, what cannot be right: a reversed or empty window,
    an unknown policy, market or prefecture."""
    if getattr(args, "start", None) and getattr(args, "end", None):
        reporting.check_window(when(args.start), when(args.end))
    for spec in getattr(args, "policy", None) or ():
        policy_spec(spec)
    market = getattr(args, "market", None)
    if market and market not in reg.markets:
        raise Refused(
            f"unknown market {market!r}: not in the registry (market ids look like G4301001 "
            "or M43010001)"
        )
    code = getattr(args, "prefecture", None)
    if code and code not in reg.prefectures:
        known = ", ".join(f"{c} {p.name_en}" for c, p in reg.prefectures.items())
        raise Refused(f"unknown prefecture {code!r}: one of {known}")


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def progress(done: int, total: int, now_ms: int) -> None:
    say(f"  … {done:,} / {total:,} at {datetime.fromtimestamp(now_ms / 1000, LOCAL):%H:%M:%S}")


# --- timeline --------------------------------------------------------------------------------


async def timeline(args: argparse.Namespace, settings: Settings) -> str:
    reg = Registry()
    start, end = when(args.start) if args.start else 0, when(args.end) if args.end else 2**62
    if args.source == "kafka":
        rec = await from_kafka(settings, Window(start, end, start, settle_ms(args)))
        msgs = _pick(
            args,
            rec.requests
            + rec.cancels
            + rec.presence
            + rec.answers
            + rec.offers
            + rec.request_events,
        )
    else:
        msgs = await _from_store(args, settings, start, end)
    requested = {m.request_id: m.at_ms for m in msgs if isinstance(m, ev.HireRequested)}
    ctx = Context(reg.names(), args.worker, requested)
    what = (
        f"request {args.request}"
        if args.request
        else f"worker {args.worker}"
        if args.worker
        else f"market {reg.names()[args.market]}"
    )
    return render(f"Timeline of {what}", msgs, ctx)


def settle_ms(args: argparse.Namespace) -> int:
    """How long after the window the events of its requests are still read (``--settle-min``)."""
    return int(args.settle_min * 60_000)


def _pick(args: argparse.Namespace, msgs: list[Any]) -> list[Any]:
    if args.request:
        return [m for m in msgs if getattr(m, "request_id", None) == args.request]
    if args.worker:
        w = args.worker
        return [
            m
            for m in msgs
            if getattr(m, "worker_id", None) == w
            or (isinstance(m, ev.WaveSent) and any(c.worker_id == w for c in m.candidates))
        ]
    rids = {
        m.request_id for m in msgs if isinstance(m, ev.HireRequested) and m.market_id == args.market
    }
    return [
        m
        for m in msgs
        if getattr(m, "request_id", None) in rids or getattr(m, "market_id", None) == args.market
    ]


async def _from_store(args: argparse.Namespace, settings: Settings, start: int, end: int) -> Any:
    import asyncpg

    conn = await asyncpg.connect(settings.pg_dsn)
    try:
        store = PgEventStore(conn)
        if args.request:
            stored = await store.of_request(args.request)
        elif args.worker:
            stored = await store.of_worker(args.worker, start, end)
        else:
            stored = await store.of_market(args.market, start, end)
    finally:
        await conn.close()
    return [m for _, m in parse(stored)]


# --- run -------------------------------------------------------------------------------------


def policy_spec(spec: str) -> Path | str:
    """A policy file's path, or a known policy's name; anything else is refused."""
    if spec in POLICIES:
        return spec
    path = Path(spec)
    if path.is_file():
        return path
    if path.suffix in (".toml", ".json"):
        raise Refused(f"no policy file {spec!r}")
    raise Refused(f"unknown policy {spec!r}: give {', '.join(POLICIES)} or a TOML/JSON policy file")


def load_policy(spec: str, recorded: Policy) -> Policy:
    """A policy from a TOML/JSON file of policy settings, or a name ("greedy", "batch")."""
    found = policy_spec(spec)
    if isinstance(found, Path):
        text = found.read_text()
        data = tomllib.loads(text) if found.suffix == ".toml" else json.loads(text)
        return policy_from(PolicySettings(**data.get("policy", data)))
    return replace(recorded, name=found)


async def recording(args: argparse.Namespace, settings: Settings) -> Recording:
    start, end = when(args.start), when(args.end)
    window = Window(start, end, start - int(args.lookback_h * HOUR_MS), settle_ms(args))
    say(f"loading the recording from {'Kafka' if args.source == 'kafka' else 'the archive'} …")
    t0 = time.perf_counter()
    load = (
        from_kafka(settings, window)
        if args.source == "kafka"
        else from_store(settings.pg_dsn, window)
    )
    rec = await load
    say(
        f"  {len(rec.requests):,} requests, {len(rec.presence):,} worker events, "
        f"{len(rec.journal):,} dispatcher batches in {time.perf_counter() - t0:.1f} s"
    )
    return rec


async def run(args: argparse.Namespace, settings: Settings) -> str:
    reg = Registry()
    rec = await recording(args, settings)
    scope = reg.scope(args.market, args.prefecture)
    data = reporting.from_recording(rec).scoped(scope, reg)
    data.require_some()
    recorded_policy = runner.recorded_policy(rec)
    responses = runner.learned_responses(
        rec, use_recorded=args.responses == "recorded", seed=args.seed
    )
    if args.responses == "model":
        responses = replace(responses, accept=args.accept, silent=args.silent)
    runs: list[tuple[str, list[BaseModelList]]] = [("recorded", rec.decisions())]
    policies = [recorded_policy.name]
    notes = []
    for spec in args.policy or ["recorded"]:
        if spec == "recorded":
            say(f"replaying {len(rec.journal):,} recorded batches exactly …")
            r = await runner.replay_journal(rec, progress)
            cmp = runner.compare(rec.decisions(), r.decisions)
            notes.append(_exactness(cmp))
        else:
            policy = load_policy(spec, recorded_policy)
            say(f"replaying {len(data.requests):,} requests under policy {policy.name} …")
            r = await runner.simulate(rec, policy, responses, reg.places(), scope, progress)
        notes.append(
            f"{r.label}: {r.batches:,} batches in {r.wall_s:.2f} s, {r.speedup:,.0f}× real time"
        )
        runs.append((r.label, r.decisions))
        policies.append(r.policy.name)
    return _present(args, reg, data, list(zip(policies, runs, strict=True)), notes)


BaseModelList = Any


def _exactness(cmp: runner.Comparison) -> str:
    if cmp.identical:
        return f"exact replay: all {cmp.recorded:,} recorded decisions reproduced identically"
    first = (cmp.only_recorded or cmp.only_replayed)[0]
    return (
        f"exact replay: {len(cmp.only_recorded)} recorded and {len(cmp.only_replayed)} "
        f"replayed decisions differ (of {cmp.recorded:,}); first: {first}"
    )


Labelled = tuple[str, tuple[str, Any]]  # (policy, (label, decisions))


def _present(
    args: argparse.Namespace,
    reg: Registry,
    data: ReportData,
    runs: list[Labelled],
    notes: list[str],
) -> str:
    grouping = reg.grouping(args.by)
    per = [(label, reporting.indicators(data, grouping, d)) for _, (label, d) in runs]
    overall = [(label, rows[-1]) for label, rows in per]
    names = _names(grouping, per)
    out = [report.side_by_side(overall), *notes]
    for label, rows in per:
        out.append(f"\n{label}, by {args.by}:\n{report.by_group(rows[:-1], names, short=True)}")
    charts = [(lb, reporting.for_chart(data, grouping, rows, decisions=d))
              for (_, (lb, d)), (_, rows) in zip(runs, per, strict=True)]  # fmt: skip
    saved = results.save(_result(args, grouping, runs, per, charts), _folder(args))
    out.append(f"results saved to {saved} (the console's what-if tab shows the latest)")
    return "\n".join(out + _files(args, per, charts, names))


def _names(grouping: Grouping, per: list[tuple[str, list[Any]]]) -> dict[str, str]:
    return {o.group: grouping.name(o.group) for _, rows in per for o in rows}


def _folder(args: argparse.Namespace) -> Path | None:
    return Path(args.results) if getattr(args, "results", None) else None


def _result(
    args: argparse.Namespace,
    grouping: Grouping,
    runs: list[Labelled],
    per: list[tuple[str, list[Any]]],
    charts: list[tuple[str, list[Any]]],
) -> dict[str, Any]:
    """What the console's what-if tab shows: every run's indicators per group and overall."""
    return {
        "at_ms": int(time.time() * 1000),
        "from_ms": when(args.start),
        "to_ms": when(args.end),
        "scope": {"market": args.market, "prefecture": args.prefecture},
        "by": args.by,
        "responses": args.responses,
        "runs": [
            {
                "label": label,
                "policy": policy,
                "rows": [reporting.as_row(o, grouping) for o in rows],
                "chart": [reporting.as_row(o, grouping) for o in chart],
            }
            for (policy, _), (label, rows), (_, chart) in zip(runs, per, charts, strict=True)
        ],
    }


def _files(
    args: argparse.Namespace,
    per: list[tuple[str, list[Any]]],
    charts: list[tuple[str, list[Any]]],
    names: dict[str, str],
) -> list[str]:
    out = []
    if args.csv:
        report.write_csv(Path(args.csv), per, names)
        out.append(f"table written to {args.csv}")
    if args.plot:
        title = f"即时快招 Instant hire, {args.start} – {args.end}"
        report.plot(Path(args.plot), charts, names | _fixed_names(), title)
        out.append(f"chart written to {args.plot}")
    return out


def _fixed_names() -> dict[str, str]:
    from replay.breakdown import FIXED_LABELS

    return {k: f"{zh} {en}" for k, (zh, en) in FIXED_LABELS.items()}


async def report_data(args: argparse.Namespace, settings: Settings) -> ReportData:
    """The window's report data: from the archive, or from Kafka (``--source kafka``)."""
    if args.source == "kafka":
        return reporting.from_recording(await recording(args, settings))
    import asyncpg

    conn = await asyncpg.connect(settings.pg_dsn)
    try:
        return await reporting.load(PgEventStore(conn), when(args.start), when(args.end))
    finally:
        await conn.close()


async def report_cmd(args: argparse.Namespace, settings: Settings) -> str:
    reg = Registry()
    data = (await report_data(args, settings)).scoped(reg.scope(args.market, args.prefecture), reg)
    data.require_some()
    grouping = reg.grouping(args.by)
    rows = reporting.indicators(data, grouping)
    per = [("recorded", rows)]
    names = _names(grouping, per)
    out = [report.by_group(rows, names)]
    if args.by == "county":
        out.append(reporting.COUNTY_NOTE)
    charts = [("recorded", reporting.for_chart(data, grouping, rows))]
    return "\n".join(out + _files(args, per, charts, names))


async def status(_: argparse.Namespace, settings: Settings) -> str:
    import asyncpg

    conn = await asyncpg.connect(settings.pg_dsn)
    try:
        store = PgEventStore(conn)
        counts, lag = await store.counts(), await store.progress()
    finally:
        await conn.close()
    rows = [f"  {c['topic']:<28} {c['n']:>10,} rows ({c['invalid']:,} not valid)" for c in counts]
    lags = [f"  {g['consumer']:<20} {g['topic']:<28} lag {g['lag'] or 0:>8,} records" for g in lag]
    return "\n".join(["The archive:", *rows, "Archivers:", *lags])


# --- arguments -------------------------------------------------------------------------------


def _window_args(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument(
        "--from",
        dest="start",
        required=required,
        metavar="T",
        help="start: 2026-11-26T07:00 (China Standard Time) or epoch ms",
    )
    p.add_argument("--to", dest="end", required=required, metavar="T", help="end, likewise")
    p.add_argument(
        "--source",
        choices=("pg", "kafka"),
        default="pg",
        help="read the PostgreSQL archive (default) or Kafka from the first offset",
    )
    p.add_argument(
        "--settle-min",
        type=float,
        default=15.0,
        metavar="MIN",
        help="also read the events of the window's requests this many minutes after --to (15)",
    )


def _scope_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--market", help="one market id, e.g. G4301001")
    g.add_argument("--prefecture", help="one prefecture code, e.g. 4301 (Changsha)")
    p.add_argument(
        "--by",
        choices=BY,
        default="prefecture",
        help="group the tables and charts by (prefecture); county: the county-town centre "
        "a market lies around",
    )
    p.add_argument(
        "--lookback-h",
        type=float,
        default=12.0,
        help="fold worker presence from this many hours before --from (12)",
    )
    p.add_argument("--csv", metavar="FILE", help="also write the indicators as CSV")
    p.add_argument("--plot", metavar="FILE", help="also draw them as a PNG chart")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="replay",
        description="Audit and replay the archived instant-hire event log.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("timeline", help="every event of a request, worker or market, in words")
    who = t.add_mutually_exclusive_group(required=True)
    who.add_argument("--request", help="a request id")
    who.add_argument("--worker", help="a worker id (use --from/--to)")
    who.add_argument("--market", help="a market id (use --from/--to)")
    _window_args(t, required=False)
    r = sub.add_parser("run", help="replay a window: exactly, or under another policy")
    _window_args(r, required=True)
    _scope_args(r)
    r.add_argument(
        "--policy",
        action="append",
        metavar="FILE|NAME",
        help="'recorded' (exact replay, the default), 'greedy', 'batch', or a "
        "TOML/JSON file of policy settings; repeat to compare several",
    )
    r.add_argument(
        "--responses",
        choices=("recorded", "model"),
        default="recorded",
        help="workers answer as recorded where they got the same offer (default), "
        "or always by the model",
    )
    r.add_argument("--accept", type=float, default=0.8, help="model: acceptance rate (0.8)")
    r.add_argument("--silent", type=float, default=0.05, help="model: no-answer rate (0.05)")
    r.add_argument("--seed", type=int, default=7, help="model: random seed (7)")
    r.add_argument(
        "--results",
        metavar="DIR",
        help="where to keep the results for the console ($GIG_REPLAY_RESULTS or .stack/replays)",
    )
    rp = sub.add_parser(
        "report", help="the bureau's indicators per prefecture, county, market, skill, day, month"
    )
    _window_args(rp, required=True)
    _scope_args(rp)
    sub.add_parser("status", help="what the archive holds and how far behind the archiver is")
    return p


COMMANDS = {"timeline": timeline, "run": run, "report": report_cmd, "status": status}


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``replay``."""
    args = parser().parse_args(argv)
    run_cli("replay", lambda: _command(args, get_settings()), expected=(OSError, ValueError))
    # ValueError covers WindowError and Refused: one line on stderr, exit code 64.


def _command(args: argparse.Namespace, settings: Settings) -> None:
    check(args, Registry())
    require(settings, "kafka" if getattr(args, "source", "pg") == "kafka" else "postgres")
    print(asyncio.run(COMMANDS[args.command](args, settings)))


if __name__ == "__main__":
    main()
