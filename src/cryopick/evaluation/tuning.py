"""Re-tuning a model's per-class thresholds on a user's annotated runs (``cryopick tune``).

Every run is predicted keeping all peaks above a low floor (scored candidates, raw peak
values); per class of the model card's particle set the threshold maximising F-beta
(beta = 4) against the annotations (read and scored in that set: its names, radii and
weights) is chosen and scored with :func:`cryopick.evaluation.thresholds.tune_and_score`
(as training validation does), the score calibration is refitted on the same candidates
(:func:`cryopick.evaluation.calibration.fit_calibration`), and a copy of the model is
written with those thresholds, that calibration and the validation metrics in its card.
Optionally a rescorer is fitted first on other annotated projects
(:mod:`cryopick.training.rescorer`) and the candidates are re-scored by it.
:func:`calibrate_model` refits only the calibration, on annotated runs of one or more
projects (e.g. validation simulations), and keeps the thresholds.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from cryopick.core.errors import InputError
from cryopick.core.particles import ParticleSet
from cryopick.evaluation.calibration import fit_calibration
from cryopick.evaluation.metric import DEFAULT_TUNE_TOLERANCE
from cryopick.evaluation.thresholds import ThresholdRule, TunedScore, tune_and_score
from cryopick.inference.picking import candidate_thresholds
from cryopick.inference.pipeline import LoadedModel, PredictConfig, predict_tomograms
from cryopick.io.atomic import atomic_path, write_text_atomic
from cryopick.io.picks import read_truth
from cryopick.io.runs import read_inputs
from cryopick.io.tomograms import DEFAULT_TOMO_TYPE
from cryopick.model import (
    CARD_FILENAME,
    WEIGHTS_FILENAME,
    ModelCard,
    ScoreCalibration,
    check_model_folder,
    load_model,
    read_model_card,
)
from cryopick.model.rescorer import FeatureSet
from cryopick.training.rescorer import DEFAULT_MEMBERS, fit_rescorer_on_projects

log = logging.getLogger(__name__)

RESCORED_TUNE_TOLERANCE = 0.0
"""Tuning tolerance for re-scored candidates: their false ones crowd near 0, so any
tolerance buys many of them for little F-beta on the tuning runs, and on held-out
simulations the best threshold (0) scored 0.873 against 0.860 with 0.02
(docs/benchmarks.md, "Rescorer")."""


def tune_model(
    model_dir: str | Path,
    data: str | Path,
    out_dir: str | Path,
    config: PredictConfig | None = None,
    *,
    tomo_type: str = DEFAULT_TOMO_TYPE,
    runs: list[str] | None = None,
    truth: str | Path | None = None,
    truth_user: str | None = None,
    truth_session: str | None = None,
    beta: float = 4.0,
    tolerance: float | None = None,
    show_progress: bool = False,
    overwrite: bool = False,
    model: LoadedModel | None = None,
    rescorer_data: Sequence[str | Path] = (),
    rescorer_features: FeatureSet = "map+density+shape",
    rule: ThresholdRule | None = None,
    rescorer_floor: float | None = None,
    rescorer_tomo_types: Sequence[str] = (),
    rescorer_members: int = DEFAULT_MEMBERS,
) -> dict[str, float]:
    """Re-tune per-class thresholds and calibration on annotated runs; write the new model.

    Writes a copy of ``model.pt`` and the card with the thresholds, calibration and
    metrics tuned on every candidate of ``data`` (see the module docstring; with
    ``config.tta``: ``thresholds_tta``, ``calibration_tta``) to ``out_dir``; returns the
    thresholds by name.

    Parameters
    ----------
    model_dir, data, out_dir : str or Path
        Model to tune; annotated runs (copick config or Kaggle root); where the tuned model
        goes (not ``model_dir``; a folder holding a model only with ``overwrite``).
    config : PredictConfig, optional
        Prediction settings (its thresholds, min_score and min_precision are replaced).
    tomo_type, runs, truth, truth_user, truth_session : optional
        Reconstruction type; only these runs (default all); annotations if not the picks
        in ``data``; copick: only this user / session.
    beta, tolerance : float
        F-beta's beta; ``"best-fbeta"`` rule: the lowest threshold within ``tolerance`` of
        the best (default 0.02, 0 for re-scored candidates).
    show_progress, overwrite, model
        Show progress bars; replace a model in ``out_dir``; ``model_dir`` already loaded.
    rescorer_data, rescorer_features
        Annotated projects (not ``data``'s runs) on which a rescorer reading these features
        is fitted first (same truth user and session; not with TTA) and put in the card;
        empty: the card's rescorer, if any, is kept.
    rule : {"best-fbeta", "probability"}, optional
        How thresholds are chosen; default ``"probability"`` for re-scored candidates.
    rescorer_floor : float, optional
        Set the rescorer's ``candidate_floor`` (raw peak value above which predictions
        re-score candidates; higher is faster) before tuning; it is still fitted on every
        peak above the default floor.
    rescorer_tomo_types : sequence of str
        Reconstructions of the rescorer's runs, taken in turn from one run to the next
        (:func:`cryopick.training.rescorer.collect_project_candidates`); default
        ``tomo_type``.
    rescorer_members : int
        Networks the fitted rescorer averages (more: steadier scores, a slower fit).
    """
    model_dir, out_dir = _check_out_dir(model_dir, out_dir, overwrite)
    card = read_model_card(model_dir) if model is None else model[1]
    particles = card.particle_set
    tomograms = read_inputs(data, tomo_type, runs, prefer_spacing_A=float(card.spacing_A))
    truth_df = _read_tuning_truth(
        truth or data, {t.name for t in tomograms}, truth_user, truth_session, particles
    )
    config = config or PredictConfig()
    loaded = model or load_model(model_dir, device="cpu")
    if rescorer_data:
        source = (truth_user, truth_session)
        kinds = tuple(rescorer_tomo_types) or (tomo_type,)
        loaded = _add_rescorer(
            loaded, rescorer_data, config, kinds, source, rescorer_features, rescorer_members
        )
    if rescorer_floor is not None:
        loaded = _with_rescorer_floor(loaded, rescorer_floor, model_dir)
    card = loaded[1]
    config = _candidate_config(config, card)
    raw = _raw_scores_model(loaded)
    candidates = predict_tomograms(tomograms, None, config, model=raw, show_progress=show_progress)
    rule, tolerance = _tuning_rule(card, config, rule, tolerance)
    tuned = tune_and_score(truth_df, candidates, beta, tolerance, particles, rule)
    calibration = fit_calibration(truth_df, candidates, particles)  # the same candidates
    described = f"{data} ({len(tomograms)} runs, {tomo_type}; tuned)"
    card = _tuned_card(card, tuned, config.tta, described)
    _write_tuned_model(model_dir, out_dir, _calibrated_card(card, calibration, config.tta))
    log.info("tuned thresholds written to %s (score %.4f)", out_dir, tuned.score)
    return tuned.thresholds


def calibrate_model(
    model_dir: str | Path,
    projects: Sequence[str | Path],
    out_dir: str | Path,
    config: PredictConfig | None = None,
    *,
    tomo_type: str = DEFAULT_TOMO_TYPE,
    truth_user: str | None = None,
    truth_session: str | None = None,
    show_progress: bool = False,
    overwrite: bool = False,
    model: LoadedModel | None = None,
) -> dict[str, ScoreCalibration]:
    """Fit a model's score calibration on annotated runs; write a copy with it in its card.

    Every run of every project is predicted keeping all peaks above the candidate floor
    (raw scores); the calibration is fitted on all of them together
    (:func:`cryopick.evaluation.calibration.fit_calibration`) and stored in the card's
    ``calibration`` (``calibration_tta`` with ``config.tta``). Thresholds, metrics and the
    rest of the card are kept. For the bundled model, pass simulated validation projects
    (truth user ``simulation``), never the held-out runs it is measured on.

    Parameters
    ----------
    model_dir : str or Path
        Model to calibrate.
    projects : sequence of str or Path
        Annotated copick projects (configs) or Kaggle roots; runs of equal names in two
        projects are kept apart.
    out_dir : str or Path
        Where the calibrated copy goes (a new folder, unless ``overwrite``).
    config : PredictConfig, optional
        Prediction settings (``tta``, device...); thresholds and min_precision are replaced.
    tomo_type, truth_user, truth_session : str
        Reconstruction type read; whose annotations are the truth (e.g. ``simulation``).
    show_progress, overwrite : bool
        Show progress bars; replace a model already in ``out_dir``.
    model : (torch.nn.Module, ModelCard), optional
        ``model_dir``'s network and card, already loaded (its weights file is still what
        is copied).

    Returns
    -------
    dict of str to ScoreCalibration
        The fitted calibration, by particle name.
    """
    model_dir, out_dir = _check_out_dir(model_dir, out_dir, overwrite)
    card = read_model_card(model_dir) if model is None else model[1]
    loaded = _raw_scores_model(model or load_model(model_dir, device="cpu"))
    particles = card.particle_set
    config = _candidate_config(config, card)
    truths, candidates = [], []
    for i, project in enumerate(projects):
        tomograms = read_inputs(project, tomo_type, None)
        names = {t.name for t in tomograms}
        truth = _read_tuning_truth(project, names, truth_user, truth_session, particles)
        found = predict_tomograms(
            tomograms, None, config, model=loaded, show_progress=show_progress
        )
        truths.append(truth.assign(experiment=[f"{i}:{r}" for r in truth["experiment"]]))
        candidates.append(found.assign(experiment=[f"{i}:{r}" for r in found["experiment"]]))
    calibration = fit_calibration(
        pd.concat(truths, ignore_index=True), pd.concat(candidates, ignore_index=True), particles
    )
    _write_tuned_model(model_dir, out_dir, _calibrated_card(card, calibration, config.tta))
    log.info("calibrated model written to %s", out_dir)
    return calibration


def _tuning_rule(
    card: ModelCard, config: PredictConfig, rule: ThresholdRule | None, tolerance: float | None
) -> tuple[ThresholdRule, float]:
    """Return the threshold rule and tolerance, defaulting by whether a rescorer scores.

    The card's rescorer, if any, scores the candidates (TTA ones too); its scores are
    probabilities (rule ``"probability"``) and its false ones crowd near 0 (tolerance
    :data:`RESCORED_TUNE_TOLERANCE` for the ``"best-fbeta"`` rule).
    """
    rescored = card.rescorer is not None
    if tolerance is None:
        tolerance = RESCORED_TUNE_TOLERANCE if rescored else DEFAULT_TUNE_TOLERANCE
    return rule or ("probability" if rescored else "best-fbeta"), tolerance


def _check_out_dir(
    model_dir: str | Path, out_dir: str | Path, overwrite: bool
) -> tuple[Path, Path]:
    """Refuse an output folder that is the input model's, or holds a model (no ``overwrite``)."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if out_dir.resolve() == model_dir.resolve():
        raise InputError(out_dir, "the new model must go to a new folder, not the input model")
    check_model_folder(out_dir, overwrite=overwrite)
    return model_dir, out_dir


def _add_rescorer(
    model: LoadedModel,
    projects: Sequence[str | Path],
    config: PredictConfig,
    tomo_types: Sequence[str],
    truth_source: tuple[str | None, str | None],
    features: FeatureSet,
    members: int,
) -> LoadedModel:
    """Return the network with a card holding a rescorer fitted on ``projects``.

    ``truth_source`` is the annotations' (user, session); ``members`` the networks the
    rescorer averages. Refused with TTA (a rescorer reads plain maps).
    """
    if config.tta:
        raise InputError(None, "a rescorer is fitted for plain predictions, not with TTA")
    rescorer = fit_rescorer_on_projects(
        model,
        projects,
        config,
        tomo_types=tomo_types,
        truth_user=truth_source[0],
        truth_session=truth_source[1],
        features=features,
        members=members,
    )
    return model[0], model[1].model_copy(update={"rescorer": rescorer})


def _with_rescorer_floor(model: LoadedModel, floor: float, model_dir: Path) -> LoadedModel:
    """Return the network with its card's rescorer re-scoring only peaks above ``floor``."""
    network, card = model
    if card.rescorer is None:
        raise InputError(model_dir, "has no rescorer to set a floor for: add --rescorer-data")
    if not 0.0 <= floor < 1.0:
        raise InputError(None, f"rescorer floor {floor} must be in [0, 1)")
    rescorer = card.rescorer.model_copy(update={"candidate_floor": floor})
    return network, card.model_copy(update={"rescorer": rescorer})


def _candidate_config(config: PredictConfig | None, card: ModelCard) -> PredictConfig:
    """``config`` keeping every candidate: raw peaks above the candidate floor.

    With the card's rescorer, every peak above the rescorer's own
    floor is a candidate, whatever its new score: the tuned threshold can then lie between
    a class's true and false candidates (:func:`cryopick.evaluation.metric.tune_thresholds`).
    """
    config = config or PredictConfig()
    thresholds = candidate_thresholds(card.particle_set)
    if card.rescorer is not None:
        thresholds = dict.fromkeys(thresholds, 0.0)
    floor = {"thresholds": thresholds, "min_score": 0.0}
    return config.model_copy(update={**floor, "min_precision": None})


def _raw_scores_model(model: LoadedModel) -> LoadedModel:
    """Return the network with its card stripped of calibration: candidates keep raw scores."""
    network, card = model
    return network, card.without_calibration()


def _tuned_card(card: ModelCard, tuned: TunedScore, tta: bool, data: str) -> ModelCard:
    """Return ``card`` with the tuned thresholds (TTA: only ``thresholds_tta``) and metrics."""
    if tta:  # TTA maps score differently: keep the plain thresholds and metrics
        rescored = card.rescorer is not None
        return card.model_copy(
            update={"thresholds_tta": tuned.thresholds, "tta_rescored": rescored}
        )
    update = {
        "thresholds": tuned.thresholds,
        "validation": tuned.per_class,
        "score": tuned.score,
        "validation_data": [data],
    }
    return card.model_copy(update=update)


def _calibrated_card(
    card: ModelCard, calibration: dict[str, ScoreCalibration], tta: bool
) -> ModelCard:
    """Return ``card`` with ``calibration`` (TTA: as ``calibration_tta``).

    A TTA calibration of a card with a rescorer is fitted on re-scored candidates: the card
    is marked ``tta_rescored``, and TTA thresholds tuned earlier on raw peaks are dropped.
    """
    if not tta:
        return card.model_copy(update={"calibration": calibration})
    update: dict[str, object] = {"calibration_tta": calibration}
    if card.rescorer is not None and not card.tta_rescored:
        update.update(thresholds_tta={}, tta_rescored=True)
    return card.model_copy(update=update)


def _write_tuned_model(model_dir: Path, out_dir: Path, card: ModelCard) -> None:
    """Copy ``model_dir``'s weights into ``out_dir`` and write ``card`` beside them, atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / WEIGHTS_FILENAME) as tmp:
        shutil.copyfile(model_dir / WEIGHTS_FILENAME, tmp)
    write_text_atomic(out_dir / CARD_FILENAME, card.to_json())


def _read_tuning_truth(
    source: str | Path,
    runs: set[str],
    user_id: str | None,
    session_id: str | None,
    particles: ParticleSet,
) -> pd.DataFrame:
    """Annotations of ``runs`` from one source, duplicates merged (never cryopick's own picks).

    Only types of ``particles`` (the model's set) are read from a copick project.

    Raises
    ------
    InputError
        If there are none, or a CSV/STAR source names a type outside the set.
    """
    truth = read_truth(source, user_id=user_id, session_id=session_id, particles=particles)
    truth = truth[truth["experiment"].isin(runs)]
    if truth.empty:
        raise InputError(source, "no annotated picks for the runs found; cannot tune thresholds")
    return truth
