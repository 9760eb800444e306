"""Batch assignment: gather a short window of requests, then match them all at once.

Greedy nearest-first serves requests one by one: each takes its nearest free workers, and a
request that arrives a moment later may find its own nearest worker gone to a request that had
others close by. The batch policy (``Policy.name == "batch"``) waits until the window closes
(``WINDOW_MS``, windows aligned to the clock), then solves every waiting request of the shard
as one minimum-cost assignment (the Hungarian method, ``scipy.optimize.linear_sum_assignment``):
each request has as many slots as offers it wants, each worker fills at most one slot, and the
total distance is as small as possible among the assignments that fill the most slots.

Rules:
- a request opened or declined during a window waits until the window closes;
- a request woken by its timer (the window closed, an offer lapsed) is matched in that batch;
- requests are solved in independent groups (same skill, sharing at least one candidate), which
  gives the same answer as one big matrix, only faster;
- everything is deterministic: rows follow the request order given, columns the worker id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Final

import numpy as np
from scipy.optimize import linear_sum_assignment

from dispatch.core import fresh_candidates, wanted
from dispatch.model import Candidate, Policy, RequestState
from dispatch.ranking import rank, score

BATCH: Final = "batch"
WINDOW_MS: Final = 1_500
NO_EDGE: Final = 1e9  # the cost of a pair that is not allowed: never part of a real match


def is_batch(policy: Policy) -> bool:
    """Whether the policy matches in windows rather than request by request."""
    return policy.name == BATCH


def window_end(now_ms: int, window_ms: int = WINDOW_MS) -> int:
    """The close of the window that holds ``now_ms`` (a multiple of ``window_ms``)."""
    return -(-now_ms // window_ms) * window_ms


def defer(state: RequestState, now_ms: int, window_ms: int = WINDOW_MS) -> RequestState:
    """The request, set to search when the current window closes."""
    return replace(state, next_search_at_ms=window_end(now_ms, window_ms))


Wave = tuple[RequestState, Sequence[Candidate]]


def groups(options: Sequence[Sequence[Candidate]]) -> list[list[int]]:
    """Requests (by index) that share candidates, transitively; each group in index order."""
    parent = list(range(len(options)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[str, int] = {}
    for i, cands in enumerate(options):
        for c in cands:
            j = owner.setdefault(c.worker_id, i)
            parent[root(i)] = root(j)
    out: dict[int, list[int]] = {}
    for i in range(len(options)):
        out.setdefault(root(i), []).append(i)
    return list(out.values())


def solve(slots: Sequence[int], options: Sequence[Sequence[Candidate]]) -> list[list[Candidate]]:
    """Min-cost assignment of workers to request slots; the chosen candidates per request."""
    workers = sorted({c.worker_id for cands in options for c in cands})
    rows = [i for i, n in enumerate(slots) for _ in range(min(n, len(options[i])))]
    chosen: list[list[Candidate]] = [[] for _ in options]
    if not rows or not workers:
        return chosen
    col = {w: j for j, w in enumerate(workers)}
    cost = np.full((len(rows), len(workers)), NO_EDGE)
    for r, i in enumerate(rows):
        for c in options[i]:
            cost[r, col[c.worker_id]] = score(c)
    for r, j in zip(*linear_sum_assignment(cost), strict=True):
        if cost[r, j] < NO_EDGE:
            i = rows[r]
            chosen[i].append(next(c for c in options[i] if c.worker_id == workers[j]))
    return [rank(c) for c in chosen]


def plan_batch(
    waves: Sequence[Wave], policy: Policy, taken: frozenset[str]
) -> list[list[Candidate]]:
    """Whom to hold for each request of the batch, matched jointly (see the module rules)."""
    options = [fresh_candidates(state, found, taken) for state, found in waves]
    slots = [wanted(state, policy) for state, _ in waves]
    plans: list[list[Candidate]] = [[] for _ in waves]
    for group in groups(options):
        picked = solve([slots[i] for i in group], [options[i] for i in group])
        for i, plan in zip(group, picked, strict=True):
            plans[i] = plan
    return plans
