"""The report's numbers: each pick's match status (for drawing) and the per-class table.

:func:`classify_picks` labels picks true / false positive and lists missed truth particles,
with the counts of :func:`cryopick.evaluation.metric.score_picks`;
:func:`summarise_picks_per_class` makes the summary table (picks, score distribution and,
with truth, the CZII metric) of ``cryopick report``. Both take the particle set shown
(names, radii, weights), which :func:`choose_report_particles` picks.

Calibrated scores: a picks file does not say whether its scores are calibrated, so the
report takes them as calibrated when it is given the model (``--model``) and the model's
card has a score calibration (:func:`scores_are_calibrated`): ``cryopick predict`` with that
model writes calibrated probabilities. The table then has an ``expected_particles``
column (the sum of the class's scores, the expected number of true particles among its
picks) and the model's thresholds are marked in calibrated units
(:func:`marked_thresholds`). Without a model, or with a card without calibration, the
table is as before.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from cryopick.core.particles import ParticleSet, resolve_particle_set

if TYPE_CHECKING:
    from cryopick.model import ModelCard, ScoreCalibration

log = logging.getLogger(__name__)


def classify_picks(
    picks: pd.DataFrame, truth: pd.DataFrame | None, particles: ParticleSet | None = None
) -> pd.DataFrame:
    """Label each pick true / false positive and list missed truth particles, for drawing.

    A pick within ``DISTANCE_MULTIPLIER * radius_A`` of a truth particle of its class and
    run is a true positive, as in the CZII metric (:mod:`cryopick.evaluation.metric`). Each truth
    particle takes one pick (the highest-scoring, then the nearest), so extra picks on one
    particle are false positives and the counts equal those of
    :func:`cryopick.evaluation.metric.score_picks` (this greedy pairing can pair fewer only where
    one pick reaches two truth points). Picks of runs without truth keep status ``"pick"``,
    as the metric ignores them.

    Parameters
    ----------
    picks : pandas.DataFrame
        Picks table.
    truth : pandas.DataFrame or None
        Truth picks table; without it every pick has status ``"pick"``.
    particles : ParticleSet, optional
        The set the names belong to; its radii set the match distance (default CZII).

    Returns
    -------
    pandas.DataFrame
        Columns ``experiment``, ``particle_type``, ``x``, ``y``, ``z``, ``score``, ``status``
        (``"pick"``, ``"tp"``, ``"fp"`` for picks; ``"fn"`` for missed truth particles).
    """
    from scipy.spatial import cKDTree

    from cryopick.evaluation.metric import DISTANCE_MULTIPLIER

    cols = ["experiment", "particle_type", "x", "y", "z", "score"]
    out = picks[cols].copy()
    out["status"] = "pick"
    if truth is None:
        return out
    particle_set = resolve_particle_set(particles)
    truth = truth[cols].copy()
    out.loc[out["experiment"].isin(set(truth["experiment"])), "status"] = "fp"
    missed = []
    for (run, name), ref in truth.groupby(["experiment", "particle_type"]):
        cand = out[(out["experiment"] == run) & (out["particle_type"] == name)]
        matched = np.zeros(len(ref), dtype=bool)
        if len(cand):
            radius_A = DISTANCE_MULTIPLIER * particle_set.radius_A(str(name))
            ref_xyz = ref[["x", "y", "z"]].to_numpy(float)
            cand_xyz = cand[["x", "y", "z"]].to_numpy(float)
            score = cand["score"].fillna(-np.inf).to_numpy()
            used = np.zeros(len(cand), dtype=bool)
            for i, near in enumerate(cKDTree(cand_xyz).query_ball_point(ref_xyz, r=radius_A)):
                near = [j for j in near if not used[j]]
                if near:
                    dist = np.linalg.norm(cand_xyz[near] - ref_xyz[i], axis=1)
                    best = near[np.lexsort((dist, -score[near]))[0]]
                    used[best] = matched[i] = True
            out.loc[cand.index[used], "status"] = "tp"
        missed.append(ref[~matched].assign(status="fn"))
    return pd.concat([out, *missed], ignore_index=True)


def summarise_picks_per_class(
    picks: pd.DataFrame,
    truth: pd.DataFrame | None = None,
    beta: float = 4.0,
    particles: ParticleSet | None = None,
    *,
    calibrated: bool = False,
) -> tuple[pd.DataFrame, float | None]:
    """Per-class table: picks and score distribution; with truth, the CZII metric.

    Parameters
    ----------
    picks, truth : pandas.DataFrame
        Picks tables; ``truth`` optional.
    beta : float
        F-beta's beta.
    particles : ParticleSet, optional
        The types, one row each in label order, and the metric's radii and weights
        (default the CZII set).
    calibrated : bool
        The scores are calibrated probabilities: add ``expected_particles``.

    Returns
    -------
    table : pandas.DataFrame
        One row per particle type: ``particle_type``, ``n_picks``, (calibrated:
        ``expected_particles``, the sum of the class's scores), ``score_min``,
        ``score_median``, ``score_max``; with truth also ``n_truth`` and the columns of
        ``score_picks(...).per_class`` (``tp``, ``fp``, ``fn``, ``precision``, ``recall``,
        ``fbeta``, ``weight``).
    score : float or None
        Weighted F-beta (None without truth).
    """
    particle_set = resolve_particle_set(particles)
    rows = []
    for name in particle_set.names:
        s = picks.loc[picks["particle_type"] == name, "score"].to_numpy(float)
        s = s[np.isfinite(s)]
        rows.append(
            {
                "particle_type": name,
                "n_picks": int((picks["particle_type"] == name).sum()),
                "score_min": float(s.min()) if s.size else np.nan,
                "score_median": float(np.median(s)) if s.size else np.nan,
                "score_max": float(s.max()) if s.size else np.nan,
            }
        )
    table = pd.DataFrame(rows)
    if calibrated:
        from cryopick.evaluation.calibration import expected_counts

        expected = expected_counts(picks, particle_set)
        table.insert(2, "expected_particles", table["particle_type"].map(expected))
    if truth is None:
        return table, None
    from cryopick.evaluation.metric import score_picks

    result = score_picks(truth, picks, beta=beta, particles=particle_set)
    n_truth = truth.groupby("particle_type").size()
    table["n_truth"] = table["particle_type"].map(n_truth).fillna(0).astype(int)
    table = table.merge(result.per_class, on="particle_type", how="left")
    return table, float(result.score)


def choose_report_particles(
    card: ModelCard | None, picks_path: str | Path, particles: ParticleSet | None = None
) -> ParticleSet:
    """Return the particle set a report shows.

    The model card's when there is one; else the one the picks project's copick config
    declares (:func:`cryopick.io.picks.copick_read.project_particle_set`); else
    ``particles`` (a particles file); else the CZII set. A ``particles`` set that is
    overridden by a different one is named in a warning.
    """
    from cryopick.io.picks.copick_read import project_particle_set

    chosen, source = None, ""
    if card is not None:
        chosen, source = card.particle_set, "the model's"
    elif (declared := project_particle_set(picks_path)) is not None:
        chosen, source = declared, f"the picks project's ({picks_path})"
    if chosen is None:
        return resolve_particle_set(particles)
    if particles is not None and (differences := particles.describe_differences(chosen)):
        log.warning("--particles is not used: %s particle set differs (%s)", source, differences)
    return chosen


def scores_are_calibrated(card: ModelCard | None) -> bool:
    """Tell whether the report takes the picks' scores as calibrated: a card with a calibration."""
    return card is not None and bool(card.calibration or card.calibration_tta)


def marked_thresholds(card: ModelCard | None, name: str) -> tuple[float | None, float | None]:
    """Return the model's threshold and TTA threshold of a class, in the picks' score units.

    Thresholds apply to raw peak values; where the card calibrates the class's scores they
    are shown as the calibrated score they map to (the TTA threshold and calibration those
    ``predict --tta`` takes: :func:`cryopick.inference.picking.choose_thresholds`).
    """
    if card is None:
        return None, None
    from cryopick.inference.picking import choose_calibration, choose_thresholds

    plain_map = card.calibration.get(name)
    tta_map = choose_calibration(card, tta=True).get(name)
    tta_threshold = choose_thresholds(card, tta=True).get(name) if card.thresholds_tta else None
    return (
        _in_score_units(card.thresholds.get(name), plain_map),
        _in_score_units(tta_threshold, tta_map),
    )


def _in_score_units(threshold: float | None, calibration: ScoreCalibration | None) -> float | None:
    """``threshold`` mapped by ``calibration`` (unchanged without one)."""
    if threshold is None or calibration is None:
        return threshold
    return float(calibration.apply(threshold))
