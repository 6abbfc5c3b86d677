"""Validation during training: the real picking pipeline on held-out runs.

Full-volume inference (:func:`cryopick.inference.window.predict_probability_map`), picks
(:func:`cryopick.inference.picking.pick_particles`, every peak above ``val_min_score``),
per-class thresholds tuned for F-beta and the weighted score at them
(:func:`cryopick.evaluation.thresholds.tune_and_score`, as ``cryopick tune`` does), and the
score calibration fitted on the same candidates
(:func:`cryopick.evaluation.calibration.fit_calibration`, :func:`validate_and_calibrate`).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch

from cryopick.core.particles import ParticleSet
from cryopick.evaluation.calibration import fit_calibration
from cryopick.evaluation.thresholds import TunedScore, tune_and_score
from cryopick.model import ScoreCalibration
from cryopick.training.config import TrainConfig
from cryopick.training.sampling import TrainRun


def validate(
    model: torch.nn.Module,
    runs: Sequence[TrainRun],
    config: TrainConfig,
    device: torch.device,
    particles: ParticleSet | None = None,
) -> TunedScore:
    """Score the model on held-out runs with per-class thresholds tuned for F-beta (beta=4).

    Every peak above ``config.val_min_score`` is a candidate; thresholds are tuned on the
    candidates of all runs together. ``particles`` is the set the model learns (its
    channels' types, radii and score weights); default the CZII set.

    Returns
    -------
    TunedScore
        Tuned thresholds, the weighted F-beta and per-class metrics at them.
    """
    truth, candidates = _candidates(model, runs, config, device, particles)
    return tune_and_score(truth, candidates, particles=particles)


def validate_and_calibrate(
    model: torch.nn.Module,
    runs: Sequence[TrainRun],
    config: TrainConfig,
    device: torch.device,
    particles: ParticleSet | None = None,
) -> tuple[TunedScore, dict[str, ScoreCalibration]]:
    """As :func:`validate`, and the score calibration fitted on the same candidates.

    Returns
    -------
    (TunedScore, dict of str to ScoreCalibration)
        The tuned score, and the calibration for the model card's ``calibration``.
    """
    truth, candidates = _candidates(model, runs, config, device, particles)
    tuned = tune_and_score(truth, candidates, particles=particles)
    return tuned, fit_calibration(truth, candidates, particles)


def _candidates(
    model: torch.nn.Module,
    runs: Sequence[TrainRun],
    config: TrainConfig,
    device: torch.device,
    particles: ParticleSet | None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return the truth and the candidates (peaks above ``val_min_score``) of all runs."""
    from cryopick.inference.picking import PickSettings, pick_particles
    from cryopick.inference.window import predict_probability_map

    settings = PickSettings.for_candidates(config.target_spec, config.val_min_score, particles)
    candidates, truths = [], []
    for i, run in enumerate(runs):
        # runs from different sources may share names: key them by position for scoring
        key = f"{i}:{run.name}"
        truths.append(run.picks.assign(experiment=key))
        volume = run.volumes.get(config.val_tomo_type, next(iter(run.volumes.values())))
        prob_map = predict_probability_map(
            model,
            volume,
            patch_size=config.patch_size,
            overlap=config.val_overlap,
            device=device,
            precision=config.precision,
            channels_last=config.channels_last,
            upsample=False,
        )
        candidates.append(
            pick_particles(
                prob_map.probs,
                settings,
                spacing_A=run.spacing_A,
                stride=prob_map.stride,
                experiment=key,
            )
        )
    return pd.concat(truths, ignore_index=True), pd.concat(candidates, ignore_index=True)
