"""Timelines say why each candidate was chosen or passed over."""

from __future__ import annotations

import pytest

from replay import cli
from replay.timeline import Context, render
from schemas import events as ev

pytestmark = pytest.mark.unit


def test_a_wave_explains_every_candidate() -> None:
    wave = ev.WaveSent(event_id="ws", at_ms=1_790_000_000_000, request_id="R1", wave=1,
                       radius_km=3.0, candidates=(
                           ev.CandidateNote(worker_id="W1", distance_km=0.5, score=0.5,
                                            outcome="offered"),
                           ev.CandidateNote(worker_id="W2", distance_km=0.9, score=0.9,
                                            outcome="taken"),
                           ev.CandidateNote(worker_id="W3", distance_km=1.9, score=1.9,
                                            outcome="not_needed"),
                       ))  # fmt: skip
    text = render("Timeline of request R1", [wave], Context({}))
    assert "wave 1 within 3 km: 3 candidates considered, 1 offered" in text
    assert "W2" in text and "another request held this worker first" in text
    assert "enough nearer workers" in text
    mine = render("Timeline of worker W2", [wave], Context({}, focus_worker="W2"))
    assert "considered for R1 in wave 1 (0.90 km" in mine and "W3" not in mine


def test_withdrawals_give_their_reason() -> None:
    w = ev.OfferWithdrawn(event_id="ow", at_ms=1, offer_id="R1:W1", request_id="R1",
                          worker_id="W1", reason="expired")  # fmt: skip
    assert "lapsed: no answer within the offer window" in render("t", [w], Context({}))


def test_the_settle_window_after_to_is_an_option_of_every_windowed_command() -> None:
    """``--settle-min`` (15 by default) is how long after ``--to`` a request's events are read."""
    default = cli.parser().parse_args(["timeline", "--request", "R1", "--source", "kafka"])
    assert cli.settle_ms(default) == 15 * 60_000
    run = cli.parser().parse_args(["run", "--from", "1", "--to", "2", "--settle-min", "2.5"])
    assert cli.settle_ms(run) == 150_000
