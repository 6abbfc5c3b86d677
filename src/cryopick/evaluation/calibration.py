"""Calibrated pick scores: fit them on annotated runs, measure how well they are calibrated.

A model card's calibration (:class:`cryopick.model.calibration.ScoreCalibration`, one per
class) maps a raw peak value to the probability that the pick is a true particle of its
type. It is fitted here on scored candidates of annotated runs (every peak above a low
floor, as threshold tuning uses them):

1. :func:`mark_correct` labels each candidate: correct when it is paired with a truth
   centre of its type within ``0.5 * radius`` (the CZII metric's distance), one-to-one,
   strongest candidate first, so a second pick on one particle is a false pick, as the
   metric counts it (:func:`cryopick.evaluation.matching.augment`; each prefix of the
   candidates by score keeps the metric's TP count).
2. :func:`fit_score_calibration` fits, per class, the isotonic (non-decreasing) regression
   of correct (0/1) on the raw score (:func:`scipy.optimize.isotonic_regression`). Ties:
   candidates are first pooled, strongest first, into groups of at least
   :data:`MIN_GROUP_CANDIDATES` consecutive scores, tied scores never split, each group
   one point weighted by its count (so a lone top candidate cannot make its score certain,
   and equal scores get one value); the fitted blocks are then merged, lightest first,
   until the table has at most :data:`MAX_FIT_KNOTS` knots. Each block keeps its first and
   last raw score as knots with its fraction correct, so :func:`numpy.interp` reproduces
   the isotonic step function, linear across the gaps between blocks.
3. :func:`fit_calibration` does so for every class of the set. **Fallback**: a class with
   fewer than :data:`MIN_CANDIDATES` candidates gets the map fitted on the candidates of
   all classes together (``method="pooled"``); when even those are fewer, the raw score is
   kept (``method="identity"``).

To measure it: :func:`expected_calibration_error` (10 equal-width bins) and
:func:`reliability_table`; :func:`expected_counts` sums calibrated scores per class (the
expected number of true particles among the picks). :func:`apply_calibration` and
:func:`select_for_min_precision` live in :mod:`cryopick.model.calibration` (prediction uses
them) and are re-exported here. ``cryopick tune`` refits the calibration with the thresholds
(:func:`cryopick.evaluation.tuning.tune_model`), and
:func:`cryopick.evaluation.tuning.calibrate_model` fits it alone, e.g. on validation
simulations.
"""

from __future__ import annotations

import itertools
from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import isotonic_regression

from cryopick.core.particles import ParticleSet, resolve_particle_set
from cryopick.core.picks import group_rows, validate_picks
from cryopick.evaluation.matching import augment, reachable_truth
from cryopick.evaluation.metric import match_radius_A
from cryopick.model.calibration import (
    Calibration,
    ScoreCalibration,
    apply_calibration,
    select_for_min_precision,
)

__all__ = [
    "MAX_FIT_KNOTS",
    "MIN_CANDIDATES",
    "MIN_GROUP_CANDIDATES",
    "Calibration",
    "ScoreCalibration",
    "apply_calibration",
    "expected_calibration_error",
    "expected_counts",
    "fit_calibration",
    "fit_score_calibration",
    "mark_correct",
    "reliability_table",
    "select_for_min_precision",
]

MIN_CANDIDATES = 30
"""Fewer candidates of a class than this: it gets the pooled map (see the module doc)."""

MIN_GROUP_CANDIDATES = 10
"""Candidates are pooled, strongest first, into groups of at least this many before the fit."""

MAX_FIT_KNOTS = 64
"""Most knots of a fitted table (two per block at most)."""


def mark_correct(
    truth: pd.DataFrame, picks: pd.DataFrame, particles: ParticleSet | None = None
) -> pd.DataFrame:
    """Label each pick correct or not, as the CZII metric pairs picks with truth.

    A pick is correct when it is paired with a truth centre of its type and run within
    ``0.5 * radius_A``; pairs are one-to-one, built strongest pick first along augmenting
    paths, so the correct picks among the ``k`` strongest are as many as the metric's TP
    for those ``k`` picks, and a second pick on one particle is not correct.

    Parameters
    ----------
    truth, picks : pandas.DataFrame
        Truth and scored picks tables (Å); types of ``particles``.
    particles : ParticleSet, optional
        The set (radii); default CZII.

    Returns
    -------
    pandas.DataFrame
        The picks of runs that have truth (validated, index reset), with a boolean column
        ``correct``; picks of other runs are left out (nothing to label them with).
    """
    particle_set = resolve_particle_set(particles)
    truth = validate_picks(truth, particles=particle_set)
    picks = validate_picks(picks, particles=particle_set)
    picks = picks[picks["experiment"].isin(set(truth["experiment"]))].reset_index(drop=True)
    correct = np.zeros(len(picks), dtype=bool)
    truth_rows = group_rows(truth, ["experiment", "particle_type"], sort=False)
    truth_xyz = truth[["x", "y", "z"]].to_numpy(dtype=np.float64)
    pick_xyz = picks[["x", "y", "z"]].to_numpy(dtype=np.float64)
    scores = picks["score"].to_numpy(dtype=np.float64)
    for key, rows in group_rows(picks, ["experiment", "particle_type"], sort=False).items():
        ref = truth_xyz[truth_rows.get(key, np.empty(0, dtype=np.intp))]
        order = rows[np.argsort(-np.nan_to_num(scores[rows], nan=-np.inf), kind="stable")]
        hits = reachable_truth(ref, pick_xyz[order], match_radius_A(particle_set, key[1]))
        owner = [-1] * len(ref)
        correct[order] = [augment(i, hits, owner) for i in range(len(order))]
    return picks.assign(correct=correct)


def _group_from_top(counts: NDArray[np.intp], min_group: int) -> NDArray[np.intp]:
    """Group index of each distinct score (ascending): groups of >= ``min_group`` from the top.

    Consecutive distinct scores are gathered, strongest first, until a group holds at least
    ``min_group`` candidates (tied scores are never split); a short remainder at the bottom
    joins the group above it.
    """
    group = np.zeros(len(counts), dtype=np.intp)
    current, filled = 0, 0
    for i in range(len(counts) - 1, -1, -1):
        group[i] = current
        filled += int(counts[i])
        if filled >= min_group and i > 0:
            current, filled = current + 1, 0
    if filled < min_group and current > 0:  # a short bottom group joins the one above
        group[group == current] = current - 1
    return np.asarray(group.max() - group, dtype=np.intp)  # ascending: 0 holds the weakest


def _pair_to_merge(values: list[float], weights: list[float]) -> tuple[int, int]:
    """(left, right) blocks to merge: the lightest and its neighbour nearer in value."""
    i = min(range(len(values)), key=lambda k: weights[k])
    if i == 0:
        return 0, 1
    if i + 1 == len(values):
        return i - 1, i
    to_right = (abs(values[i + 1] - values[i]), weights[i + 1])
    to_left = (abs(values[i] - values[i - 1]), weights[i - 1])
    return (i, i + 1) if to_right < to_left else (i - 1, i)


def _merge_blocks(
    values: list[float], weights: list[float], spans: list[list[int]], max_knots: int
) -> None:
    """Merge adjacent isotonic blocks in place, lightest first, until few enough knots.

    A block is merged with the neighbour nearer in value (the lighter one on a tie); the
    merged value is the weighted mean of two neighbours, so the sequence stays monotone.
    """
    while len(values) > 1 and sum(1 if lo == hi else 2 for lo, hi in spans) > max_knots:
        left, right = _pair_to_merge(values, weights)
        total = weights[left] + weights[right]
        values[left] = (values[left] * weights[left] + values[right] * weights[right]) / total
        weights[left] = total
        spans[left] = [spans[left][0], spans[right][1]]
        del values[right], weights[right], spans[right]


def fit_score_calibration(
    raw_scores: ArrayLike,
    correct: ArrayLike,
    *,
    min_group: int = MIN_GROUP_CANDIDATES,
    max_knots: int = MAX_FIT_KNOTS,
    method: Literal["isotonic", "pooled"] = "isotonic",
) -> ScoreCalibration:
    """Fit a monotone map from raw score to P(correct) by isotonic regression.

    Parameters
    ----------
    raw_scores : array_like, shape (N,)
        Raw peak values of candidates, in [0, 1] (NaN rows are ignored).
    correct : array_like of bool, shape (N,)
        Whether each candidate is right (see :func:`mark_correct`).
    min_group : int
        Candidates, strongest first, are pooled into groups of at least this many (ties
        kept together) before the regression.
    max_knots : int
        Most knots in the table (>= 2).
    method : str
        Recorded in the result (``"isotonic"``, or ``"pooled"`` for a fallback map).

    Returns
    -------
    ScoreCalibration
        Knots at the first and last raw score of each block, valued at its fraction
        correct; the identity map when there is no candidate.
    """
    raw = np.asarray(raw_scores, dtype=np.float64).ravel()
    hit = np.asarray(correct, dtype=np.float64).ravel()
    if raw.shape != hit.shape:
        raise ValueError(f"{raw.size} scores but {hit.size} correct flags")
    keep = np.isfinite(raw)
    raw, hit = np.clip(raw[keep], 0.0, 1.0), hit[keep]
    if not raw.size:
        return ScoreCalibration.identity()
    unique, inverse, counts = np.unique(raw, return_inverse=True, return_counts=True)
    group = _group_from_top(counts, min_group)
    n_groups = int(group.max()) + 1
    weights_g = np.bincount(group, weights=counts, minlength=n_groups)
    hits_g = np.bincount(group[inverse], weights=hit, minlength=n_groups)
    fit = isotonic_regression(hits_g / weights_g, weights=weights_g, increasing=True)
    first = np.searchsorted(group, np.arange(n_groups))  # first distinct score of each group
    last = np.append(first[1:], len(unique)) - 1
    starts = np.asarray(fit.blocks)
    values = [float(fit.x[b]) for b in starts[:-1]]
    weights = [float(w) for w in fit.weights]
    spans = [[int(first[a]), int(last[b - 1])] for a, b in itertools.pairwise(starts)]
    _merge_blocks(values, weights, spans, max(2, max_knots))
    knots: list[float] = []
    probs: list[float] = []
    for value, (lo, hi) in zip(values, spans, strict=True):
        for index in (lo, hi) if lo != hi else (lo,):
            knots.append(float(unique[index]))
            probs.append(min(1.0, max(0.0, value)))
    return ScoreCalibration(
        raw_scores=knots, probabilities=probs, method=method, n_candidates=int(raw.size)
    )


def fit_calibration(
    truth: pd.DataFrame,
    candidates: pd.DataFrame,
    particles: ParticleSet | None = None,
    *,
    min_candidates: int = MIN_CANDIDATES,
) -> dict[str, ScoreCalibration]:
    """Fit every class's score calibration on scored candidates of annotated runs.

    Parameters
    ----------
    truth : pandas.DataFrame
        Truth picks of the runs the candidates come from.
    candidates : pandas.DataFrame
        Picks with raw scores: every peak above a low floor (as for threshold tuning).
    particles : ParticleSet, optional
        The model's set (classes, radii); default CZII.
    min_candidates : int
        Fewer candidates of a class: it gets the map of all classes' candidates pooled
        (``method="pooled"``); fewer pooled candidates too: the identity map.

    Returns
    -------
    dict of str to ScoreCalibration
        Every particle name of the set -> its map (for ``ModelCard.calibration``).
    """
    particle_set = resolve_particle_set(particles)
    labelled = mark_correct(truth, candidates, particle_set)
    raw = labelled["score"].to_numpy(dtype=np.float64)
    hit = labelled["correct"].to_numpy()
    types = labelled["particle_type"].to_numpy()
    pooled = None
    calibration: dict[str, ScoreCalibration] = {}
    for name in particle_set.names:
        rows = (types == name) & np.isfinite(raw)
        n = int(rows.sum())
        if n >= min_candidates:
            calibration[name] = fit_score_calibration(raw[rows], hit[rows])
            continue
        if pooled is None:
            finite = np.isfinite(raw)
            pooled = (
                fit_score_calibration(raw[finite], hit[finite], method="pooled")
                if finite.sum() >= min_candidates
                else ScoreCalibration.identity()
            )
        calibration[name] = pooled.model_copy(update={"n_candidates": n})
    return calibration


def _bin_index(probabilities: NDArray[np.float64], n_bins: int) -> NDArray[np.intp]:
    """Equal-width bin of each probability in [0, 1]; 1.0 falls in the last bin."""
    return np.clip((probabilities * n_bins).astype(np.intp), 0, n_bins - 1)


def _finite_pairs(
    probabilities: ArrayLike, correct: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    c = np.asarray(correct, dtype=np.float64).ravel()
    if p.shape != c.shape:
        raise ValueError(f"{p.size} probabilities but {c.size} correct flags")
    keep = np.isfinite(p)
    return np.clip(p[keep], 0.0, 1.0), c[keep]


def expected_calibration_error(
    probabilities: ArrayLike, correct: ArrayLike, n_bins: int = 10
) -> float:
    """Return the expected calibration error: mean |score - fraction correct| over bins.

    ``ECE = sum_b (n_b / N) * |mean score in b - fraction correct in b|`` with ``n_bins``
    bins of width ``1 / n_bins`` on [0, 1] (a score of 1.0 is in the last bin).

    Parameters
    ----------
    probabilities : array_like, shape (N,)
        Scores in [0, 1] (NaN ignored).
    correct : array_like of bool, shape (N,)
        Whether each pick is right.
    n_bins : int
        Number of bins.

    Returns
    -------
    float
        The ECE in [0, 1]; NaN when there is no finite score.
    """
    p, c = _finite_pairs(probabilities, correct)
    if not p.size:
        return float("nan")
    bins = _bin_index(p, n_bins)
    gap = np.bincount(bins, weights=p, minlength=n_bins) - np.bincount(
        bins, weights=c, minlength=n_bins
    )
    return float(np.abs(gap).sum() / p.size)


def reliability_table(
    probabilities: ArrayLike, correct: ArrayLike, n_bins: int = 10
) -> pd.DataFrame:
    """Per equal-width bin: its range, mean score, fraction correct and count.

    Returns
    -------
    pandas.DataFrame
        One row per bin: ``bin_low``, ``bin_high``, ``mean_score``, ``fraction_correct``
        (NaN for an empty bin) and ``count``.
    """
    p, c = _finite_pairs(probabilities, correct)
    bins = _bin_index(p, n_bins)
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_score = np.bincount(bins, weights=p, minlength=n_bins) / count
        fraction = np.bincount(bins, weights=c, minlength=n_bins) / count
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return pd.DataFrame(
        {
            "bin_low": edges[:-1],
            "bin_high": edges[1:],
            "mean_score": mean_score,
            "fraction_correct": fraction,
            "count": count.astype(int),
        }
    )


def expected_counts(picks: pd.DataFrame, particles: ParticleSet | None = None) -> dict[str, float]:
    """Return the expected number of true particles per class: its picks' summed scores.

    Parameters
    ----------
    picks : pandas.DataFrame
        Picks with calibrated scores (NaN scores count 0).
    particles : ParticleSet, optional
        When given, every type of the set is listed (0.0 without picks), in label order;
        else the types the picks have, by name.

    Returns
    -------
    dict of str to float
        Particle name -> expected count.
    """
    scores = pd.to_numeric(picks["score"], errors="coerce").fillna(0.0)
    sums = scores.groupby(picks["particle_type"].astype(str)).sum()
    names = list(particles.names) if particles is not None else sorted(sums.index)
    return {name: float(sums.get(name, 0.0)) for name in names}
