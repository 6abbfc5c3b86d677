"""The CZII challenge score: per-type F-beta (beta = 4), weighted over particle types.

Follows the challenge's public metric (Kaggle ``czi-cryoet-84969``, ``score`` and
``compute_metrics``) for any particle set (:class:`cryopick.core.particles.ParticleSet`,
the CZII six by default), with the differences below:

* Picks of experiments that have no ground truth at all are ignored.
* Per experiment and type, a pick matches a truth point within ``0.5 * radius_A`` of
  the type's radius in the set (``<=``, as ``KDTree.query_ball_tree``). TP = truth
  points paired one-to-one with picks (maximum bipartite matching); FP = picks - TP
  (duplicate picks on one particle are FP); FN = truth points - TP.
* TP, FP and FN are summed over experiments per type; precision = TP / (TP + FP),
  recall = TP / (TP + FN) (0 when the denominator is 0), and
  F-beta = (1 + b^2) P R / (b^2 P + R), 0 when P + R = 0.
* score = sum(weight * F-beta) / the set's total weight (7 for the CZII six).

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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from cryopick.core.particles import ParticleSet, resolve_particle_set
from cryopick.core.picks import group_rows, validate_picks
from cryopick.evaluation.matching import augment, count_matches, reachable_truth

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
        One row per particle type of the set, in label order: particle_type, tp, fp,
        fn, precision, recall, fbeta, weight.
    score : float
        Weighted F-beta over all types of the set (divided by its total weight).
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


def match_radius_A(particle_set: ParticleSet, name: str) -> float:
    """Return the match distance of a type in Å: :data:`DISTANCE_MULTIPLIER` times its radius."""
    return particle_set.radius_A(name) * DISTANCE_MULTIPLIER


def merge_duplicate_truth(
    truth_df: pd.DataFrame,
    source: str | Path | None = None,
    particles: ParticleSet | None = None,
) -> pd.DataFrame:
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
    particles : ParticleSet, optional
        The set of the truth's types (their radii give the match distance); default CZII.

    Returns
    -------
    pandas.DataFrame
        The validated table without the duplicates.

    Raises
    ------
    InputError
        If a truth type is not in the set (the message lists the set's names).
    """
    particle_set = resolve_particle_set(particles)
    truth = validate_picks(truth_df, source=source, particles=particle_set)
    xyz = truth[["x", "y", "z"]].to_numpy(dtype=np.float64)
    drop, runs = [], set()
    for (exp, name), idx in group_rows(truth, ["experiment", "particle_type"]).items():
        radius_A = match_radius_A(particle_set, name)
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


def _prepare(
    truth_df: pd.DataFrame, picks_df: pd.DataFrame, particle_set: ParticleSet
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validate both tables against the set; keep the picks of runs that have truth."""
    truth = validate_picks(truth_df, particles=particle_set)
    picks = validate_picks(picks_df, particles=particle_set)
    return truth, picks[picks["experiment"].isin(set(truth["experiment"]))]


def score_picks(
    truth_df: pd.DataFrame,
    picks_df: pd.DataFrame,
    beta: float = 4.0,
    particles: ParticleSet | None = None,
) -> ScoreResult:
    """Score picks against ground truth with the CZII challenge metric.

    Parameters
    ----------
    truth_df : pandas.DataFrame
        Ground-truth picks table (Å).
    picks_df : pandas.DataFrame
        Picks to score (Å); ``score`` is ignored (threshold beforehand).
    beta : float
        F-beta's beta (the challenge uses 4: recall weighs 16 times precision).
    particles : ParticleSet, optional
        The particle types scored, their radii (match distance: half the radius) and
        weights; default the CZII six.

    Returns
    -------
    ScoreResult
        Per-type counts and rates, and the weighted score (0 when every weight is 0).

    Raises
    ------
    InputError
        If either table has a type not in the set (the message lists the set's names)
        or non-finite coordinates.
    """
    particle_set = resolve_particle_set(particles)
    truth, picks = _prepare(truth_df, picks_df, particle_set)
    truth_groups, pick_groups = _groups(truth), _groups(picks)
    experiments = sorted(set(truth["experiment"]))
    empty = np.empty((0, 3))
    rows = []
    for particle in particle_set:
        radius_A = match_radius_A(particle_set, particle.name)
        tp = fp = fn = 0
        for exp in experiments:
            counts = count_matches(
                truth_groups.get((exp, particle.name), empty),
                pick_groups.get((exp, particle.name), empty),
                radius_A,
            )
            tp, fp, fn = tp + counts[0], fp + counts[1], fn + counts[2]
        precision, recall, fbeta = compute_fbeta(tp, fp, fn, beta)
        rows.append((particle.name, tp, fp, fn, precision, recall, fbeta, particle.weight))
    per_class = pd.DataFrame(rows, columns=list(PER_CLASS_COLUMNS))
    total = particle_set.total_weight
    weighted = float((per_class["fbeta"] * per_class["weight"]).sum())
    score = weighted / total if total > 0 else 0.0
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
    truth: pd.DataFrame, picks: pd.DataFrame, particle_type: str, radius_A: float
) -> Iterator[tuple[np.ndarray, list[list[int]]]]:
    t = truth[truth["particle_type"] == particle_type]
    p = picks[picks["particle_type"] == particle_type]
    offset = 0
    for exp in sorted(set(truth["experiment"])):
        t_xyz = t.loc[t["experiment"] == exp, ["x", "y", "z"]].to_numpy(dtype=np.float64)
        sel = p["experiment"] == exp
        hits = reachable_truth(
            t_xyz, p.loc[sel, ["x", "y", "z"]].to_numpy(dtype=np.float64), radius_A
        )
        yield p.loc[sel, "score"].to_numpy(), [[offset + i for i in h] for h in hits]
        offset += len(t_xyz)


def fbeta_curve(
    truth_df: pd.DataFrame,
    scored_picks_df: pd.DataFrame,
    particle_type: str,
    beta: float = 4.0,
    particles: ParticleSet | None = None,
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
    particles : ParticleSet, optional
        The set of the tables' types (radius of ``particle_type``); default CZII.

    Returns
    -------
    FbetaCurve
        ``thresholds`` (distinct scores, descending) and precision, recall, fbeta when
        keeping the picks with ``score >= threshold``.
    """
    particle_set = resolve_particle_set(particles)
    particle_type = particle_set.resolve(particle_type)
    truth, picks = _prepare(truth_df, scored_picks_df, particle_set)
    radius_A = match_radius_A(particle_set, particle_type)
    scores, hits = [], []
    for s, h in _iter_matches(truth, picks, particle_type, radius_A):
        scores.append(s)
        hits.extend(h)
    score_arr = np.concatenate(scores) if scores else np.empty(0)
    if np.isnan(score_arr).any():
        raise ValueError("fbeta_curve needs scored picks: some picks have no score (NaN)")
    n_truth = int((truth["particle_type"] == particle_type).sum())
    order = np.argsort(-score_arr, kind="stable")
    owner = [-1] * n_truth
    tp_after = np.cumsum([augment(int(i), hits, owner) for i in order], dtype=np.int64)
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
    particles: ParticleSet | None = None,
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
    particles : ParticleSet, optional
        The types tuned (every type of the set) and their radii; default CZII.

    Returns
    -------
    dict of str to float
        Type name of the set -> threshold; keep picks with ``score >= threshold``. A type
        with no candidates gets 1.0; one whose best F-beta is 0 gets a threshold just
        above its highest score (keep nothing).
    """
    particle_set = resolve_particle_set(particles)
    thresholds = {}
    for particle in particle_set:
        curve = fbeta_curve(truth_df, scored_picks_df, particle.name, beta, particle_set)
        if len(curve.thresholds) == 0:
            thresholds[particle.name] = 1.0
        elif curve.fbeta.max() <= 0:
            thresholds[particle.name] = float(np.nextafter(curve.thresholds[0], np.inf))
        else:
            good = int(np.flatnonzero(curve.fbeta >= curve.fbeta.max() - tolerance).max())
            thresholds[particle.name] = _threshold_in_gap(curve.thresholds, good)
    return thresholds


def _threshold_in_gap(scores_descending: np.ndarray, index: int) -> float:
    """Return a threshold keeping the candidates down to ``index``, mid-way to the next one.

    The midpoint is taken in log-odds, so that a wide gap between a class's true
    candidates (e.g. re-scored near 1) and its false ones (near 0) puts the threshold in
    the middle, not at the weakest true candidate of the tuning runs; the same candidates
    are kept. Without a candidate below, the threshold is the candidate's score.
    """
    score = float(scores_descending[index])
    if index + 1 >= len(scores_descending):
        return score
    below = float(scores_descending[index + 1])
    low, high = np.clip([below, score], 1e-6, 1.0 - 1e-6)
    middle = 0.5 * (np.log(low / (1.0 - low)) + np.log(high / (1.0 - high)))
    threshold = float(1.0 / (1.0 + np.exp(-middle)))
    return threshold if below < threshold <= score else score
