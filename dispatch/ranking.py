"""Ranking candidates for a job: a pure, documented score (lower is better).

``score = distance_km`` (as the index reports it, to a tenth of a metre)

Nearest first keeps travel short. Workers already offered this request, whatever they answered,
are never offered it again: they are filtered out before ranking, which also spreads a job's
offers over more workers. Ties break on worker id, so the order never depends on
the order Redis returned members in.
"""

from __future__ import annotations

from collections.abc import Iterable

from dispatch.model import Candidate


def score(candidate: Candidate) -> float:
    """The candidate's score: the distance in kilometres."""
    return candidate.distance_km


def _key(candidate: Candidate) -> tuple[float, str]:
    return (candidate.distance_km, candidate.worker_id)  # score, then worker id


def rank(candidates: Iterable[Candidate]) -> list[Candidate]:
    """Candidates best first, deterministic whatever order they came in."""
    return sorted(candidates, key=_key)
