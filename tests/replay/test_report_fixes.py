"""The report fixes of the command line: Chinese names, clear refusals of empty and reversed
windows, unknown policies and markets, readable plots at any number of markets, labelled
rejections; and the bureau's indicators they report."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from replay import cli, report, reporting
from replay import outcomes as oc
from replay.breakdown import OTHERS, UNREGISTERED, Registry
from replay.counties import counties
from replay.reporting import ReportData, WindowError
from schemas import events as ev

pytestmark = pytest.mark.unit
T0 = 1_795_000_000_000  # 2026-11-18, in the small hours of China Standard Time


def _req(rid: str, market: str, headcount: int = 1, at: int = T0, wage: float = 200.0,
         skill: str = "cook") -> ev.HireRequested:  # fmt: skip
    return ev.HireRequested(event_id=f"hr:{rid}", at_ms=at, request_id=rid, market_id=market,
                            skill=skill, headcount=headcount, wage_yuan_per_day=wage,
                            start_at_ms=at, deadline_at_ms=at + 60_000)  # fmt: skip


def _checkin(wid: str, market: str | None, at: int = T0, skills: tuple[str, ...] = ("cook",),
             lon: float = 112.94, lat: float = 28.23) -> ev.WorkerCheckedIn:  # fmt: skip
    return ev.WorkerCheckedIn(event_id=f"ci:{wid}:{at}", at_ms=at, worker_id=wid,
                              market_id=market, lon=lon, lat=lat, skills=skills)  # fmt: skip


def _offer(rid: str, wid: str, at: int) -> ev.OfferMade:
    return ev.OfferMade(event_id=f"om:{rid}:{wid}", at_ms=at, offer_id=f"{rid}:{wid}",
                        request_id=rid, worker_id=wid, market_id="M", skill="cook",
                        wage_yuan_per_day=200.0, lon=112.0, lat=28.0, distance_km=1.0, score=1.0,
                        wave=1, expires_at_ms=at + 15_000)  # fmt: skip


def _assigned(rid: str, wid: str, at: int, n: int, of: int) -> ev.WorkerAssigned:
    return ev.WorkerAssigned(event_id=f"wa:{rid}:{wid}", at_ms=at, request_id=rid, worker_id=wid,
                             offer_id=f"{rid}:{wid}", assigned=n, headcount=of)  # fmt: skip


def _args(*argv: str) -> argparse.Namespace:
    return cli.parser().parse_args(list(argv))


# --- Chinese names ---------------------------------------------------------------------------


def test_markets_prefectures_and_skills_are_named_in_chinese_and_english() -> None:
    reg = Registry()
    assert reg.names()["G4301001"] == "长沙市第1零工市场 Changsha Gig Market 1 (G4301001)"
    assert reg.names()["4301"].startswith("长沙市 Changsha")
    assert reg.grouping("prefecture").name("4301") == "长沙市 Changsha"
    assert reg.grouping("skill").name("general_labourer") == "普工 general labourer"
    assert reg.grouping("market").label("G4301001") == ("长沙市第1零工市场 (G4301001)",
                                                        "Changsha Gig Market 1")  # fmt: skip


def test_tables_with_chinese_names_stay_aligned() -> None:
    reg = Registry()
    g = reg.grouping("market")
    rows = oc.outcomes([_req("A", "G4301001"), _req("B", "M43010001")], [], g.request)
    text = report.by_group(rows, {o.group: g.name(o.group) for o in rows})
    assert "长沙市第1零工市场" in text and "求人倍率" in text
    assert len({report.width(line) for line in text.splitlines()}) == 1


def test_every_market_has_a_county_replayed_from_the_registry_generator() -> None:
    c = counties()
    assert c.exact == len(c.of_market) == 5095
    assert c.of_market["G4301001"].startswith("4301-")
    zh, _ = Registry().grouping("county").label(c.of_market["G4301001"])
    assert zh.startswith("长沙市·")


# --- windows ---------------------------------------------------------------------------------


def test_a_reversed_window_is_refused_in_one_line_before_any_service(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as ended:
        cli.main(["report", "--from", "2026-11-26T09:00", "--to", "2026-11-26T08:00"])
    assert ended.value.code != 0
    said = capsys.readouterr().err.strip()
    assert said.count("\n") == 0 and "ends before it starts" in said
    assert "IndexError" not in said and "Traceback" not in said


def test_an_empty_window_is_refused_with_a_sentence() -> None:
    with pytest.raises(WindowError, match="the window is empty"):
        reporting.check_window(T0, T0)
    with pytest.raises(WindowError, match=r"nothing archived from .* no requests and no check-ins"):
        ReportData(T0, T0 + 3_600_000).require_some()
    with pytest.raises(WindowError, match="cannot read the time"):
        reporting.when("yesterday")


async def test_report_on_a_window_with_nothing_archived_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def empty(args: argparse.Namespace, _: Any) -> ReportData:
        return ReportData(cli.when(args.start), cli.when(args.end))

    monkeypatch.setattr(cli, "report_data", empty)
    args = _args("report", "--from", "2026-11-26T07:00", "--to", "2026-11-26T08:00")
    with pytest.raises(WindowError, match="nothing archived from 2026-11-26 07:00"):
        await cli.report_cmd(args, None)  # type: ignore[arg-type]


def test_outcomes_of_no_requests_still_have_a_total() -> None:
    rows = oc.outcomes([], [], lambda r: r.market_id)
    assert [o.group for o in rows] == ["all"] and rows[0].requests == 0


# --- unknown names ---------------------------------------------------------------------------


def test_an_unknown_policy_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(cli.Refused, match="unknown policy 'fastest': give recorded, greedy, batch"):
        cli.check(_args("run", "--from", "1", "--to", "2", "--policy", "fastest"), Registry())
    with pytest.raises(cli.Refused, match=r"no policy file 'mine\.toml'"):
        cli.check(_args("run", "--from", "1", "--to", "2", "--policy", "mine.toml"), Registry())
    cli.check(_args("run", "--from", "1", "--to", "2", "--policy", "batch"), Registry())


def test_a_policy_file_is_still_read(tmp_path: Path) -> None:
    path = tmp_path / "slow.toml"
    path.write_text('[policy]\nname = "greedy"\noffer_ttl_s = 30\n')
    from dispatch.model import Policy

    assert cli.load_policy(str(path), Policy()).offer_ttl_ms == 30_000


def test_an_unknown_market_or_prefecture_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["timeline", "--market", "G9999998"])
    said = capsys.readouterr().err
    assert "unknown market 'G9999998'" in said and "None" not in said
    with pytest.raises(cli.Refused, match="unknown prefecture '4399'"):
        cli.check(_args("report", "--from", "1", "--to", "2", "--prefecture", "4399"), Registry())


# --- plots -----------------------------------------------------------------------------------


def test_charts_keep_the_top_markets_and_fold_the_rest_into_others(tmp_path: Path) -> None:
    reg = Registry()
    markets = [m for m in reg.markets if m.startswith("M4301")][:40]
    reqs = [_req(f"R{i}", m, headcount=1 + i % 5) for i, m in enumerate(markets)]
    data = ReportData(T0, T0 + 1, reqs, [], [])
    g = reg.grouping("market")
    rows = reporting.indicators(data, g)
    chart = reporting.for_chart(data, g, rows)
    assert len(chart) == reporting.CHART_GROUPS + 1 and chart[-1].group == OTHERS
    assert sum(o.positions for o in chart) == rows[-1].positions
    assert sum(o.requests for o in chart) == 40
    png = tmp_path / "by-market.png"
    report.plot(png, [("recorded", chart)], {o.group: g.name(o.group) for o in chart}, "t")
    from PIL import Image

    with Image.open(png) as im:
        assert im.width <= report.MAX_WIDTH_IN * 110 + 1


# --- rejected requests -----------------------------------------------------------------------


def test_a_rejected_request_for_an_unknown_market_is_labelled() -> None:
    reg = Registry()
    rejected = ev.RequestRejected(event_id="rr", at_ms=T0 + 5, request_id="X",
                                  reason="unknown market G9999998")  # fmt: skip
    data = ReportData(T0, T0 + 10, [_req("X", "G9999998"), _req("A", "G4301001")], [rejected])
    for by in ("prefecture", "county", "market"):
        g = reg.grouping(by)
        rows = reporting.indicators(data, g)
        bad = next(o for o in rows if o.rejected)
        assert bad.requests == 1
        zh, en = g.label(bad.group)
        assert "未登记市场" in zh and "rejected" in en
        text = report.by_group(rows, {o.group: g.name(o.group) for o in rows})
        assert "| ? " not in text and "rejected" in text
    assert reg.prefecture_of("G9999998") == UNREGISTERED


# --- the bureau's indicators -----------------------------------------------------------------


def test_job_seekers_positions_per_seeker_wages_and_endings() -> None:
    reg = Registry()
    reqs = [
        _req("A", "G4301001", headcount=3, wage=200.0),
        _req("B", "G4301001", headcount=1, wage=400.0, skill="driver"),
        _req("C", "G4302001", headcount=2, wage=300.0),
    ]
    decisions: list[BaseModel] = [
        _offer("A", "W1", T0 + 1000), _offer("A", "W2", T0 + 3000),
        _assigned("A", "W1", T0 + 2000, 1, 3), _assigned("A", "W1", T0 + 2000, 1, 3),  # twice
        ev.RequestExpired(event_id="re", at_ms=T0 + 60_000, request_id="A", assigned=1,
                          headcount=3, offers_made=2),
        ev.RequestCancelled(event_id="rc", at_ms=T0 + 500, request_id="B", assigned=0),
    ]  # fmt: skip
    checkins = [
        _checkin("W1", "G4301001", skills=("cook", "driver")),
        _checkin("W1", "G4301001", at=T0 + 10),  # checked in twice: one seeker
        _checkin("W2", None, lon=112.94, lat=28.23),  # by location: the nearest market
        _checkin("W3", "G4302001"),
    ]
    data = ReportData(T0, T0 + 100_000, reqs, decisions, checkins)
    by = {o.group: o for o in reporting.indicators(data, reg.grouping("prefecture"))}
    cs = by["4301"]
    assert (cs.requests, cs.positions, cs.job_seekers) == (2, 4, 2)
    assert cs.positions_per_seeker == 2.0 and cs.assignments == 1 and cs.workers_served == 1
    assert (cs.expired, cs.cancelled, cs.rejected) == (1, 1, 0)
    assert cs.wage_mean == pytest.approx((3 * 200 + 400) / 4) and cs.wage_median == 200.0
    assert cs.first_offer_p50_s == 1.0
    total = by["all"]
    assert total.job_seekers == 3 and total.positions == 6 and total.positions_per_seeker == 2.0
    skills = {o.group: o for o in reporting.indicators(data, reg.grouping("skill"))}
    assert skills["driver"].job_seekers == 1 and skills["cook"].job_seekers == 3
    days = reporting.indicators(data, reg.grouping("day"))
    assert [o.group for o in days] == ["2026-11-18", "all"]


def test_the_json_document_has_every_indicator_and_nulls_for_nothing_measured() -> None:
    reg = Registry()
    data = ReportData(T0, T0 + 10, [_req("A", "G4301001")], [], [_checkin("W1", "G4301001")])
    doc = reporting.document(data, reg, "market")
    keys = {d["key"] for d in doc["indicators"]}
    row = doc["rows"][0]
    assert keys <= set(row) and row["fill_p50_s"] is None and row["positions_per_seeker"] == 1.0
    assert row["name_zh"] == "长沙市第1零工市场 (G4301001)"
    lines = reporting.csv_lines([*doc["rows"], doc["total"]])
    assert lines[0][:3] == ["group", "name_zh", "name_en"] and lines[-1][0] == "all"


def test_timelines_name_markets_and_skills_in_chinese() -> None:
    from replay.timeline import Context, render

    text = render("t", [_req("A", "G4301001", skill="bricklayer")], Context(Registry().names()))
    assert "长沙市第1零工市场 Changsha Gig Market 1 (G4301001) asks for 1 × 瓦工 bricklayer" in text
