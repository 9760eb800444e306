"""Ranking candidates for a job: a pure, documented score (lower is better).

``score = distance_km`` (rounded to the metre)

Nearest first keeps travel short. Workers already offered this request, whatever they answered,
are never offered it again: they are filtered out before ranking, which also spreads a job's
offers over more workers. Ties break on worker id, so the order never depends on
the order Redis returned members in.
"""

from __future__ import annotations

from collections.abc import Iterable

from dispatch.model import Candidate


def score(candidate: Candidate) -> float:
    """The candidate's score: distance in kilometres, rounded to the metre."""
    return round(candidate.distance_km, 3)


def rank(candidates: Iterable[Candidate]) -> list[Candidate]:
    """Candidates best first, deterministic whatever order they came in."""
    return sorted(candidates, key=lambda c: (score(c), c.worker_id))
