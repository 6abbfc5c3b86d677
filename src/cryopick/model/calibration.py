"""Calibrated pick scores: per-class maps from a raw peak value to P(true particle).

A network's peak value is no probability that the pick is right: an apo-ferritin peak of
1.0 is almost always a particle, a beta-galactosidase peak of 0.6 rarely is. A model card
may store, per particle type, a :class:`ScoreCalibration`: a monotone (non-decreasing)
piecewise-linear table from the raw peak value to the fraction of such picks that were
true particles on annotated validation runs (fitted by
:func:`cryopick.evaluation.calibration.fit_calibration`, isotonic regression).
:func:`apply_calibration` maps a picks table's ``score`` with it, and
:func:`select_for_min_precision` keeps, per class, the picks whose expected precision
reaches a target. Both are plain functions on picks tables (no evaluation code), so
prediction (:mod:`cryopick.inference.picking`) uses them directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

CalibrationMethod = Literal["isotonic", "pooled", "identity"]
"""How a class's map was made: fitted on its own candidates (``isotonic``), on the pooled
candidates of every class because it had too few of its own (``pooled``), or the raw
score kept (``identity``: not even the pooled candidates were enough)."""

MAX_KNOTS = 256
"""Most knots a stored table may have (fits write at most 64)."""


class ScoreCalibration(BaseModel):
    """One class's map from raw peak value to the probability that the pick is right.

    Applied with :func:`numpy.interp`: linear between knots, constant beyond the first
    and last (the fit covers the candidates' range, from the candidate floor up).

    Attributes
    ----------
    raw_scores : list of float
        Knots: raw peak values in [0, 1], strictly ascending.
    probabilities : list of float
        Calibrated score at each knot, in [0, 1], non-decreasing (a stronger peak is never
        less likely to be right), same length as ``raw_scores``.
    method : {"isotonic", "pooled", "identity"}
        How the map was made (see :data:`CalibrationMethod`).
    n_candidates : int
        Candidates of this class the fit saw (its own, also for ``pooled``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    raw_scores: list[float] = Field(min_length=1, max_length=MAX_KNOTS)
    probabilities: list[float] = Field(min_length=1, max_length=MAX_KNOTS)
    method: CalibrationMethod = "isotonic"
    n_candidates: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check_table(self) -> ScoreCalibration:
        raw, prob = np.asarray(self.raw_scores), np.asarray(self.probabilities)
        if len(raw) != len(prob):
            raise ValueError(f"raw_scores has {len(raw)} knots but probabilities has {len(prob)}")
        if not (np.isfinite(raw).all() and np.isfinite(prob).all()):
            raise ValueError("knots and probabilities must be finite numbers")
        if raw.min() < 0.0 or raw.max() > 1.0 or prob.min() < 0.0 or prob.max() > 1.0:
            raise ValueError("raw_scores and probabilities must lie in [0, 1]")
        if (np.diff(raw) <= 0).any():
            raise ValueError("raw_scores must be strictly ascending")
        if (np.diff(prob) < 0).any():
            raise ValueError("probabilities must not decrease (the map is monotone)")
        return self

    @classmethod
    def identity(cls, n_candidates: int = 0) -> ScoreCalibration:
        """Return the map that keeps the raw score (``method="identity"``)."""
        return cls(
            raw_scores=[0.0, 1.0],
            probabilities=[0.0, 1.0],
            method="identity",
            n_candidates=n_candidates,
        )

    def apply(self, raw: ArrayLike) -> NDArray[np.float64]:
        """Return the calibrated scores of raw peak values (NaN stays NaN)."""
        return np.interp(np.asarray(raw, dtype=np.float64), self.raw_scores, self.probabilities)


Calibration = Mapping[str, ScoreCalibration]
"""Particle name -> its map, as a model card stores it (``ModelCard.calibration``)."""


def apply_calibration(picks: pd.DataFrame, calibration: Calibration) -> pd.DataFrame:
    """Return a copy of ``picks`` whose ``score`` is the calibrated probability.

    Parameters
    ----------
    picks : pandas.DataFrame
        Picks table with raw scores (peak values), e.g. from
        :func:`cryopick.inference.peaks.find_peaks`.
    calibration : mapping of str to ScoreCalibration
        Per class (canonical particle name) its map; picks of classes without one keep
        their raw score.

    Returns
    -------
    pandas.DataFrame
        The same rows and columns; only ``score`` changed. The raw value is not kept in a
        column: a picks table has a fixed set of columns that every writer and the
        scale-out parts keep (:data:`cryopick.core.picks.PICKS_COLUMNS`), so an extra one
        would exist in memory and vanish in files.
    """
    out = picks.copy()
    if not len(out) or not calibration:
        return out
    scores = out["score"].to_numpy(dtype=np.float64, copy=True)
    types = out["particle_type"].astype(str).to_numpy()
    for name, calibration_map in calibration.items():
        rows = types == name
        if rows.any():
            scores[rows] = calibration_map.apply(scores[rows])
    out["score"] = scores
    return out


def count_for_min_precision(scores_descending: ArrayLike, min_precision: float) -> int:
    """Return how many of the strongest calibrated scores to keep for ``min_precision``.

    The largest ``k`` such that the mean of the ``k`` first scores (sorted descending) is at
    least ``min_precision``: the expected fraction of true picks among them. As the scores
    descend, that mean can only fall as ``k`` grows, so ``k`` is the number of prefixes
    whose mean reaches the target (0 when even the strongest score is below it).
    """
    scores = np.asarray(scores_descending, dtype=np.float64)
    if not len(scores):
        return 0
    means = np.cumsum(scores) / np.arange(1, len(scores) + 1)
    return int(np.count_nonzero(means >= min_precision - 1e-12))


def select_for_min_precision(picks: pd.DataFrame, min_precision: float) -> pd.DataFrame:
    """Per class, keep the largest strongest-first set of picks of expected precision >= P.

    Rule: the picks of each class are sorted by calibrated ``score``, strongest first (ties
    keep their order in ``picks``, which for a prediction is raw peak value, strongest
    first); the kept set is the longest prefix whose mean score, its expected precision,
    is at least ``min_precision`` (:func:`count_for_min_precision`). The selection is over
    all rows given, across runs: ``cryopick predict --min-precision`` applies it to each
    run's picks on its own. Picks without a score (NaN) are never kept.

    Parameters
    ----------
    picks : pandas.DataFrame
        Picks with calibrated scores (see :func:`apply_calibration`).
    min_precision : float
        Target expected precision P, in (0, 1].

    Returns
    -------
    pandas.DataFrame
        The kept picks, in their order in ``picks``, index reset.

    Raises
    ------
    ValueError
        If ``min_precision`` is not in (0, 1].
    """
    if not 0.0 < min_precision <= 1.0:
        raise ValueError(f"min_precision must be in (0, 1], not {min_precision}")
    scores = picks["score"].to_numpy(dtype=np.float64)
    types = picks["particle_type"].astype(str).to_numpy()
    keep = np.zeros(len(picks), dtype=bool)
    for name in pd.unique(types):
        rows = np.flatnonzero((types == name) & np.isfinite(scores))
        order = rows[np.argsort(-scores[rows], kind="stable")]
        keep[order[: count_for_min_precision(scores[order], min_precision)]] = True
    return picks[keep].reset_index(drop=True)
