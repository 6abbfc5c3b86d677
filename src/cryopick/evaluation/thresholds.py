"""Per-class thresholds: tune them on scored candidates, keep the picks they pass, score those.

:func:`tune_and_score` is what training validation (:func:`cryopick.training.trainer.validate`)
and ``cryopick tune`` (:func:`cryopick.evaluation.tuning.tune_model`) both do with the
candidates of their runs: tune a threshold per class for F-beta
(:func:`cryopick.evaluation.metric.tune_thresholds`), keep the candidates at or above them
(:func:`select_picks`) and score what is kept (:func:`cryopick.evaluation.metric.score_picks`),
per class as the model card stores it (:class:`cryopick.model.ClassMetrics`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from cryopick.core.particles import ParticleSet
from cryopick.evaluation.metric import (
    DEFAULT_TUNE_TOLERANCE,
    ScoreResult,
    score_picks,
    tune_thresholds,
)
from cryopick.model import ClassMetrics


@dataclass(frozen=True)
class TunedScore:
    """Thresholds tuned on candidates and the score of the picks they keep.

    Attributes
    ----------
    thresholds : dict of str to float
        Particle name (of the set) -> tuned threshold.
    score : float
        Weighted F-beta of the kept picks.
    per_class : list of ClassMetrics
        Per-class precision, recall, F-beta and counts of the kept picks.
    """

    thresholds: dict[str, float]
    score: float
    per_class: list[ClassMetrics]


def select_picks(picks: pd.DataFrame, thresholds: Mapping[str, float]) -> pd.DataFrame:
    """Keep the picks scoring at or above their class's threshold (none of other classes)."""
    limit = picks["particle_type"].map(thresholds).fillna(math.inf)
    return picks[picks["score"] >= limit]


def to_class_metrics(result: ScoreResult) -> list[ClassMetrics]:
    """Return the per-class rows of a :class:`ScoreResult` as model-card metrics."""
    return [
        ClassMetrics(
            particle_type=str(row["particle_type"]),
            precision=float(row["precision"]),
            recall=float(row["recall"]),
            fbeta=float(row["fbeta"]),
            tp=int(row["tp"]),
            fp=int(row["fp"]),
            fn=int(row["fn"]),
        )
        for row in result.per_class.to_dict("records")
    ]


def tune_and_score(
    truth: pd.DataFrame,
    candidates: pd.DataFrame,
    beta: float = 4.0,
    tolerance: float = DEFAULT_TUNE_TOLERANCE,
    particles: ParticleSet | None = None,
) -> TunedScore:
    """Tune per-class thresholds on scored candidates and score the picks they keep.

    Parameters
    ----------
    truth : pandas.DataFrame
        Ground-truth picks of the runs the candidates come from.
    candidates : pandas.DataFrame
        Scored picks, e.g. every peak above a low floor.
    beta : float
        F-beta's beta.
    tolerance : float
        F-beta given up for a lower threshold (see
        :func:`cryopick.evaluation.metric.tune_thresholds`).
    particles : ParticleSet, optional
        The classes (the model card's set); default the CZII six.

    Returns
    -------
    TunedScore
        The thresholds, the weighted score and the per-class metrics at them.
    """
    thresholds = tune_thresholds(
        truth, candidates, beta=beta, tolerance=tolerance, particles=particles
    )
    kept = select_picks(candidates, thresholds)
    result = score_picks(truth, kept, beta=beta, particles=particles)
    return TunedScore(thresholds, float(result.score), to_class_metrics(result))
