"""The CZII challenge score: per-type F-beta (beta = 4), weighted over particle types.

Follows the challenge's public metric (Kaggle ``czi-cryoet-84969``, ``score`` and
``compute_metrics``), with the differences below:

* Picks of experiments that have no ground truth at all are ignored.
* Per experiment and type, a pick matches a truth point within ``0.5 * radius_A``
  (``<=``, as ``KDTree.query_ball_tree``). TP = truth points paired one-to-one with
  picks (maximum bipartite matching); FP = picks - TP (duplicate picks on one particle
  are FP); FN = truth points - TP.
* TP, FP and FN are summed over experiments per type; precision = TP / (TP + FP),
  recall = TP / (TP + FN) (0 when the denominator is 0), and
  F-beta = (1 + b^2) P R / (b^2 P + R), 0 when P + R = 0.
* score = sum(weight * F-beta) / sum of all six weights (7).

Differences from the Kaggle code: it counts every truth point some pick reaches, so one
pick near two truth points counts twice (FP < 0, precision 2, score > 1); the one-to-one
matching here cannot, and agrees whenever no pick reaches two truth points of its type
(always for non-overlapping particles). Truth files are read through
:func:`cryopick.io.picks.read_truth`, which merges duplicate truth points with a warning
(:func:`merge_duplicate_truth`).
A type without truth counts F = 0 with its weight in the denominator (Kaggle averages
over the types present: the same whenever every type has truth).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from cryopick.core.particles import PARTICLES, TOTAL_WEIGHT, get_particle
from cryopick.core.picks import group_rows, validate_picks

log = logging.getLogger(__name__)

DISTANCE_MULTIPLIER = 0.5
"""A pick matches a truth point within this fraction of the particle radius."""

DEFAULT_TUNE_TOLERANCE = 0.02
"""F-beta given up on the tuning data for a lower, more robust threshold (tune_thresholds)."""

PER_CLASS_COLUMNS = ("particle_type", "tp", "fp", "fn", "precision", "recall", "fbeta", "weight")


def compute_fbeta(tp: float, fp: float, fn: float, beta: float = 4.0) -> tuple[float, float, float]:
    """Precision, recall and F-beta from counts, with the challenge's zero conventions."""
    precision = tp / (tp + fp) if tp + fp > 0 else 0.0
    recall = tp / (tp + fn) if tp + fn > 0 else 0.0
    b2 = beta * beta
    fbeta = (
        (1 + b2) * precision * recall / (b2 * precision + recall) if precision + recall > 0 else 0.0
    )
    return float(precision), float(recall), float(fbeta)


@dataclass
class ScoreResult:
    """Result of :func:`score_picks`.

    Attributes
    ----------
    per_class : pandas.DataFrame
        One row per particle type: particle_type, tp, fp, fn, precision, recall,
        fbeta, weight.
    score : float
        Weighted F-beta over all six types (weights sum to 7).
    beta : float
        The beta used.
    """

    per_class: pd.DataFrame
    score: float
    beta: float = 4.0

    def to_dict(self) -> dict:
        """JSON-ready dict: ``score``, ``beta`` and ``per_class`` (type -> counts and rates)."""
        per_class = {
            row["particle_type"]: {
                k: int(row[k]) if k in ("tp", "fp", "fn") else float(row[k])
                for k in PER_CLASS_COLUMNS[1:]
            }
            for row in self.per_class.to_dict("records")
        }
        return {"score": float(self.score), "beta": float(self.beta), "per_class": per_class}


def _groups(df: pd.DataFrame) -> dict[tuple[str, str], np.ndarray]:
    """(experiment, particle_type) -> positions (N, 3) in Å."""
    xyz = df[["x", "y", "z"]].to_numpy(dtype=np.float64)
    return {
        (str(e), str(t)): xyz[idx]
        for (e, t), idx in group_rows(df, ["experiment", "particle_type"], sort=False).items()
    }


def _matched_truth(
    truth_xyz: np.ndarray, picks_xyz: np.ndarray, radius_A: float
) -> list[list[int]]:
    """For each pick, the indices of truth points within ``radius_A`` (inclusive)."""
    if len(truth_xyz) == 0 or len(picks_xyz) == 0:
        return [[] for _ in range(len(picks_xyz))]
    hits: list[list[int]] = cKDTree(truth_xyz).query_ball_point(picks_xyz, r=radius_A).tolist()
    return hits


def _augment(pick: int, hits: Sequence[Sequence[int]], owner: list[int]) -> bool:
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


def _count(truth_xyz: np.ndarray, picks_xyz: np.ndarray, radius_A: float) -> tuple[int, int, int]:
    hits = _matched_truth(truth_xyz, picks_xyz, radius_A)
    owner = [-1] * len(truth_xyz)
    tp = sum(_augment(i, hits, owner) for i in range(len(hits)))
    return tp, len(picks_xyz) - tp, len(truth_xyz) - tp


def merge_duplicate_truth(truth_df: pd.DataFrame, source: str | Path | None = None) -> pd.DataFrame:
    """Merge truth points of one run and type that lie within the match distance.

    Such points are one particle annotated twice (or two annotation sets merged). Each
    group linked by such distances keeps its first point; a warning names the source
    and how many points were merged.

    Parameters
    ----------
    truth_df : pandas.DataFrame
        Ground-truth picks table.
    source : str or Path, optional
        Where the table came from, named in the warning.

    Returns
    -------
    pandas.DataFrame
        The validated table without the duplicates.
    """
    truth = validate_picks(truth_df, source=source)
    xyz = truth[["x", "y", "z"]].to_numpy(dtype=np.float64)
    drop, runs = [], set()
    for (exp, name), idx in group_rows(truth, ["experiment", "particle_type"]).items():
        radius_A = get_particle(name).radius_A * DISTANCE_MULTIPLIER
        pairs = cKDTree(xyz[idx]).query_pairs(radius_A, output_type="ndarray")
        if len(pairs):
            graph = coo_matrix((np.ones(len(pairs)), pairs.T), shape=(len(idx), len(idx)))
            labels = connected_components(graph, directed=False)[1]
            keep = np.zeros(len(idx), dtype=bool)
            keep[np.unique(labels, return_index=True)[1]] = True
            drop.append(idx[~keep])
            runs.add(str(exp))
    if not drop:
        return truth
    dropped = np.concatenate(drop)
    log.warning(
        "%s: merged %d duplicate truth point(s) (same run and type, within the match "
        "distance of another) in run(s) %s",
        source or "truth",
        len(dropped),
        ", ".join(sorted(runs)[:5]),
    )
    return truth.drop(index=truth.index[dropped]).reset_index(drop=True)


def _prepare(truth_df: pd.DataFrame, picks_df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    truth = validate_picks(truth_df)
    picks = validate_picks(picks_df)
    return truth, picks[picks["experiment"].isin(set(truth["experiment"]))]


def score_picks(truth_df: pd.DataFrame, picks_df: pd.DataFrame, beta: float = 4.0) -> ScoreResult:
    """Score picks against ground truth with the CZII challenge metric.

    Parameters
    ----------
    truth_df : pandas.DataFrame
        Ground-truth picks table (Å).
    picks_df : pandas.DataFrame
        Picks to score (Å); ``score`` is ignored (threshold beforehand).
    beta : float
        F-beta's beta (the challenge uses 4: recall weighs 16 times precision).

    Returns
    -------
    ScoreResult
        Per-type counts and rates, and the weighted score.

    Raises
    ------
    InputError
        If either table has an unknown particle type or non-finite coordinates.
    """
    truth, picks = _prepare(truth_df, picks_df)
    truth_groups, pick_groups = _groups(truth), _groups(picks)
    experiments = sorted(set(truth["experiment"]))
    empty = np.empty((0, 3))
    rows = []
    for particle in PARTICLES:
        radius_A = particle.radius_A * DISTANCE_MULTIPLIER
        tp = fp = fn = 0
        for exp in experiments:
            counts = _count(
                truth_groups.get((exp, particle.name), empty),
                pick_groups.get((exp, particle.name), empty),
                radius_A,
            )
            tp, fp, fn = tp + counts[0], fp + counts[1], fn + counts[2]
        precision, recall, fbeta = compute_fbeta(tp, fp, fn, beta)
        rows.append((particle.name, tp, fp, fn, precision, recall, fbeta, particle.weight))
    per_class = pd.DataFrame(rows, columns=list(PER_CLASS_COLUMNS))
    score = float((per_class["fbeta"] * per_class["weight"]).sum() / TOTAL_WEIGHT)
    return ScoreResult(per_class=per_class, score=score, beta=beta)


class FbetaCurve(NamedTuple):
    """Precision, recall and F-beta when keeping picks with ``score >= threshold``.

    One entry per distinct pick score, thresholds descending (keeping more picks).
    """

    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    fbeta: np.ndarray


def _iter_matches(
    truth: pd.DataFrame, picks: pd.DataFrame, particle_type: str
) -> Iterator[tuple[np.ndarray, list[list[int]]]]:
    radius_A = get_particle(particle_type).radius_A * DISTANCE_MULTIPLIER
    t = truth[truth["particle_type"] == particle_type]
    p = picks[picks["particle_type"] == particle_type]
    offset = 0
    for exp in sorted(set(truth["experiment"])):
        t_xyz = t.loc[t["experiment"] == exp, ["x", "y", "z"]].to_numpy(dtype=np.float64)
        sel = p["experiment"] == exp
        hits = _matched_truth(
            t_xyz, p.loc[sel, ["x", "y", "z"]].to_numpy(dtype=np.float64), radius_A
        )
        yield p.loc[sel, "score"].to_numpy(), [[offset + i for i in h] for h in hits]
        offset += len(t_xyz)


def fbeta_curve(
    truth_df: pd.DataFrame, scored_picks_df: pd.DataFrame, particle_type: str, beta: float = 4.0
) -> FbetaCurve:
    """F-beta of one particle type as a function of the pick score threshold.

    Sorts the picks by score once and counts TP incrementally: keeping one more pick
    grows the one-to-one matching by at most one (an augmenting path from it), so each
    prefix keeps a maximum matching. Counts equal those of :func:`score_picks` on the
    kept picks (picks of experiments without truth ignored).

    Parameters
    ----------
    truth_df : pandas.DataFrame
        Ground-truth picks table.
    scored_picks_df : pandas.DataFrame
        Picks with a finite ``score``.
    particle_type : str
        The type (name or alias).
    beta : float
        F-beta's beta.

    Returns
    -------
    FbetaCurve
        ``thresholds`` (distinct scores, descending) and precision, recall, fbeta when
        keeping the picks with ``score >= threshold``.
    """
    particle_type = get_particle(particle_type).name
    truth, picks = _prepare(truth_df, scored_picks_df)
    scores, hits = [], []
    for s, h in _iter_matches(truth, picks, particle_type):
        scores.append(s)
        hits.extend(h)
    score_arr = np.concatenate(scores) if scores else np.empty(0)
    if np.isnan(score_arr).any():
        raise ValueError("fbeta_curve needs scored picks: some picks have no score (NaN)")
    n_truth = int((truth["particle_type"] == particle_type).sum())
    order = np.argsort(-score_arr, kind="stable")
    owner = [-1] * n_truth
    tp_after = np.cumsum([_augment(int(i), hits, owner) for i in order], dtype=np.int64)
    sorted_scores = score_arr[order]
    # evaluate only after the last pick of each run of tied scores
    last = (
        np.flatnonzero(np.append(sorted_scores[1:] != sorted_scores[:-1], True))
        if len(order)
        else np.empty(0, int)
    )
    n_kept = (last + 1).astype(np.float64)  # = TP + FP
    tps = tp_after[last].astype(np.float64)
    precision = np.divide(tps, n_kept, out=np.zeros_like(tps), where=n_kept > 0)
    recall = tps / n_truth if n_truth > 0 else np.zeros_like(tps)
    b2 = beta * beta
    fbeta = np.divide(
        (1 + b2) * precision * recall,
        b2 * precision + recall,
        out=np.zeros_like(tps),
        where=(precision + recall) > 0,
    )
    return FbetaCurve(sorted_scores[last], precision, recall, fbeta)


def tune_thresholds(
    truth_df: pd.DataFrame,
    scored_picks_df: pd.DataFrame,
    beta: float = 4.0,
    tolerance: float = DEFAULT_TUNE_TOLERANCE,
) -> dict[str, float]:
    """Per particle type, the lowest score threshold within ``tolerance`` of the best F-beta.

    Taking the lowest threshold whose F-beta is at most ``tolerance`` below the maximum
    (rather than the arg-max itself) leans towards recall: on held-out runs, where scores
    shift a little, that generalised better under F4 (docs/benchmarks.md, "Peak
    settings"). ``tolerance=0`` gives a best threshold (the lowest, if several tie).

    Parameters
    ----------
    truth_df : pandas.DataFrame
        Ground-truth picks table.
    scored_picks_df : pandas.DataFrame
        Candidate picks with scores (e.g. peak probabilities).
    beta : float
        F-beta's beta.
    tolerance : float
        Accepted loss of F-beta on the tuning data, traded for a lower threshold.

    Returns
    -------
    dict of str to float
        Canonical type name -> threshold; keep picks with ``score >= threshold``. A type
        with no candidates gets 1.0; one whose best F-beta is 0 gets a threshold just
        above its highest score (keep nothing).
    """
    thresholds = {}
    for particle in PARTICLES:
        curve = fbeta_curve(truth_df, scored_picks_df, particle.name, beta)
        if len(curve.thresholds) == 0:
            thresholds[particle.name] = 1.0
        elif curve.fbeta.max() <= 0:
            thresholds[particle.name] = float(np.nextafter(curve.thresholds[0], np.inf))
        else:
            good = np.flatnonzero(curve.fbeta >= curve.fbeta.max() - tolerance)
            thresholds[particle.name] = float(curve.thresholds[good].min())
    return thresholds
