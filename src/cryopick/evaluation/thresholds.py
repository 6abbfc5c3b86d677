"""Per-class thresholds: tune them on scored candidates, keep the picks they pass, score those.

:func:`tune_and_score` is what training validation (:func:`cryopick.training.trainer.validate`)
and ``cryopick tune`` (:func:`cryopick.evaluation.tuning.tune_model`) both do with the
candidates of their runs: tune a threshold per class for F-beta
(:func:`cryopick.evaluation.metric.tune_thresholds`), keep the candidates at or above them
(:func:`select_picks`) and score what is kept (:func:`cryopick.evaluation.metric.score_picks`),
per class as the model card stores it (:class:`cryopick.model.ClassMetrics`).

Two rules choose a class's threshold. ``"best-fbeta"`` takes where F-beta peaks on the tuning
runs (:func:`cryopick.evaluation.metric.tune_thresholds`). ``"probability"``
(:func:`probability_thresholds`) is for scores that estimate the probability that a
candidate is right, as a rescorer's do: the threshold maximising expected F-beta is then
``F* / (1 + beta^2)``, with ``F*`` the best F-beta reached (Lipton, Elkan and
Narayanaswamy 2014 show it for F1; the F-beta form follows the same way). The tuning runs
enter only through ``F*``, which moves less between sets of runs than where the peak of a
flat F4 curve falls (docs/benchmarks.md, "Thresholds from the rescorer's probabilities").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import pandas as pd

from cryopick.core.particles import ParticleSet, resolve_particle_set
from cryopick.evaluation.metric import (
    DEFAULT_TUNE_TOLERANCE,
    ScoreResult,
    fbeta_curve,
    score_picks,
    tune_thresholds,
)
from cryopick.model import ClassMetrics

ThresholdRule = Literal["best-fbeta", "probability"]
"""How a class's threshold is chosen on tuning candidates (see the module docstring)."""


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


def probability_thresholds(
    truth: pd.DataFrame,
    scored_picks: pd.DataFrame,
    beta: float = 4.0,
    particles: ParticleSet | None = None,
) -> dict[str, float]:
    """Per class, ``F* / (1 + beta^2)``: the threshold of expected F-beta for probabilities.

    Parameters
    ----------
    truth, scored_picks : pandas.DataFrame
        Ground truth and candidates whose ``score`` estimates the probability that each is
        a true particle of its type (a rescorer's output, before calibration).
    beta : float
        F-beta's beta.
    particles : ParticleSet, optional
        The types (every type of the set) and their radii; default CZII.

    Returns
    -------
    dict of str to float
        Type name -> threshold. ``F*`` is the best F-beta over the candidates' thresholds;
        a type without candidates, or whose best F-beta is 0, gets what
        :func:`cryopick.evaluation.metric.tune_thresholds` gives it (keep nothing).
    """
    particle_set = resolve_particle_set(particles)
    best = {}
    for particle in particle_set:
        curve = fbeta_curve(truth, scored_picks, particle.name, beta, particle_set)
        best[particle.name] = float(curve.fbeta.max()) if len(curve.fbeta) else 0.0
    if all(f > 0 for f in best.values()):
        return {name: f / (1.0 + beta**2) for name, f in best.items()}
    fallback = tune_thresholds(truth, scored_picks, beta, tolerance=0.0, particles=particle_set)
    return {name: f / (1.0 + beta**2) if f > 0 else fallback[name] for name, f in best.items()}


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
    rule: ThresholdRule = "best-fbeta",
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
    rule : {"best-fbeta", "probability"}
        Where F-beta peaks (within ``tolerance``), or :func:`probability_thresholds` for
        scores that are probabilities (``tolerance`` unused).

    Returns
    -------
    TunedScore
        The thresholds, the weighted score and the per-class metrics at them.
    """
    if rule == "probability":
        thresholds = probability_thresholds(truth, candidates, beta, particles)
    else:
        thresholds = tune_thresholds(
            truth, candidates, beta=beta, tolerance=tolerance, particles=particles
        )
    kept = select_picks(candidates, thresholds)
    result = score_picks(truth, kept, beta=beta, particles=particles)
    return TunedScore(thresholds, float(result.score), to_class_metrics(result))
