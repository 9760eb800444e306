"""What the dispatcher publishes is valid on its topic, whatever the core decided."""

from __future__ import annotations

import json

import pytest

from consumers import effects
from dispatch import core
from dispatch.model import Candidate, Job, Policy
from schemas import events as ev
from schemas.topics import OFFERS, REQUEST_EVENTS

pytestmark = pytest.mark.unit

ADAPTERS = {OFFERS: ev.OFFER_EVENT, REQUEST_EVENTS: ev.REQUEST_EVENT}
POLICY = Policy(radii_km=(3.0, 6.0))
JOB = Job("R1", "G4301001", "mover", 2, 250.0, 112.9, 28.2, 0, 0, 60_000)


def test_every_published_message_validates_against_its_topic() -> None:
    state = core.open_request(JOB, 0, POLICY).state
    found = [Candidate("w1", 0.5), Candidate("w2", 1.25), Candidate("w3", 2.0)]
    wave = core.apply_wave(state, found, frozenset({"w1"}), frozenset({"w2"}), 0, POLICY)
    filled = core.on_answer(wave.state, "R1:w1", True, 100, POLICY)
    widened = core.apply_wave(filled.state, [], frozenset(), frozenset(), 200, POLICY)
    ended = core.on_tick(widened.state, 60_000, POLICY)
    lapsed = core.on_tick(wave.state, 60_000, POLICY)  # w1's offer still live: withdrawn
    out = [effects.offer_made(JOB, o) for o in wave.made]
    for d in (wave, filled, widened, ended, lapsed):
        out += [effects.happened(d.state, h, 300) for h in d.happened]
        out += [effects.offer_withdrawn(JOB, w, 300) for w in d.withdrawn]
    out.append(effects.rejected("R2", "unknown market 'X'", 300))
    kinds = set()
    for o in out:
        raw = o.message.model_dump_json()
        parsed = ADAPTERS[o.topic].validate_json(raw)
        assert json.loads(parsed.model_dump_json()) == json.loads(raw)
        kinds.add(type(parsed).__name__)
    assert kinds >= {"OfferMade", "WaveSent", "WorkerAssigned", "RadiusWidened", "RequestExpired",
                     "OfferWithdrawn", "RequestRejected"}  # fmt: skip
