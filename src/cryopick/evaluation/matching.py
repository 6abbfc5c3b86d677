"""One-to-one matching of picks to truth points within a distance (the metric's TP count).

Each pick may take one truth point it reaches and each truth point one pick; the number of
pairs is a maximum bipartite matching, grown one pick at a time along augmenting paths
(Kuhn's algorithm), so a prefix of picks sorted by score always holds a maximum matching of
that prefix (:func:`cryopick.evaluation.metric.fbeta_curve` relies on it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.spatial import cKDTree


def reachable_truth(
    truth_xyz: np.ndarray, picks_xyz: np.ndarray, radius_A: float
) -> list[list[int]]:
    """Return, for each pick, the indices of truth points within ``radius_A`` (inclusive)."""
    if len(truth_xyz) == 0 or len(picks_xyz) == 0:
        return [[] for _ in range(len(picks_xyz))]
    hits: list[list[int]] = cKDTree(truth_xyz).query_ball_point(picks_xyz, r=radius_A).tolist()
    return hits


def augment(pick: int, hits: Sequence[Sequence[int]], owner: list[int]) -> bool:
    """Match ``pick`` to a truth point, re-pairing others along an augmenting path (Kuhn).

    ``hits[p]`` lists the truth points pick ``p`` reaches; ``owner[j]`` is the pick
    holding truth point ``j`` (-1: free). Returns True when the matching grew by one.
    Adding picks one at a time keeps the matching maximum for the picks added so far.
    """
    for free in hits[pick]:  # fast path: a free truth point in reach
        if owner[free] < 0:
            owner[free] = pick
            return True
    visited: set[int] = set()
    chosen: list[int] = []  # chosen[k]: the truth point stack[k]'s pick would take
    stack = [(pick, iter(hits[pick]))]
    while stack:
        j = next((k for k in stack[-1][1] if k not in visited), None)
        if j is None:
            stack.pop()
            if chosen:
                chosen.pop()
            continue
        visited.add(j)
        chosen.append(j)
        if owner[j] < 0:
            for (p, _), t in zip(stack, chosen, strict=True):
                owner[t] = p
            return True
        stack.append((owner[j], iter(hits[owner[j]])))
    return False


def count_matches(
    truth_xyz: np.ndarray, picks_xyz: np.ndarray, radius_A: float
) -> tuple[int, int, int]:
    """Return (TP, FP, FN) of picks against truth points matched one-to-one within ``radius_A``."""
    hits = reachable_truth(truth_xyz, picks_xyz, radius_A)
    owner = [-1] * len(truth_xyz)
    tp = sum(augment(i, hits, owner) for i in range(len(hits)))
    return tp, len(picks_xyz) - tp, len(truth_xyz) - tp
