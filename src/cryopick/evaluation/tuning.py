"""Re-tuning a model's per-class thresholds on a user's annotated runs (``cryopick tune``).

Every run is predicted keeping all peaks above a low floor (scored candidates); per class the
threshold maximising F-beta (beta = 4) against the annotations is chosen with
:func:`cryopick.evaluation.metric.tune_thresholds`, and a copy of the model is written with those
thresholds and the validation metrics they give in its card.
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

from cryopick.core.errors import InputError
from cryopick.core.particles import PARTICLE_NAMES
from cryopick.evaluation.metric import DEFAULT_TUNE_TOLERANCE, score_picks, tune_thresholds
from cryopick.inference.pipeline import PredictConfig, predict_tomograms
from cryopick.io.atomic import atomic_path, write_text_atomic
from cryopick.io.picks import read_truth
from cryopick.io.runs import read_inputs
from cryopick.io.tomograms import DEFAULT_TOMO_TYPE
from cryopick.model import (
    CARD_FILENAME,
    WEIGHTS_FILENAME,
    ClassMetrics,
    check_model_folder,
    read_model_card,
)

log = logging.getLogger(__name__)

TUNING_MIN_SCORE = 0.02  # candidates for threshold tuning: every peak above this


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
    tolerance: float = DEFAULT_TUNE_TOLERANCE,
    show_progress: bool = False,
    overwrite: bool = False,
) -> dict[str, float]:
    """Re-tune per-class thresholds on annotated runs; write the model with the new card.

    Predicts every run of ``data`` keeping all peaks above a low floor, chooses per class
    the threshold maximising F-beta against the annotations
    (:func:`cryopick.evaluation.metric.tune_thresholds`), and writes ``out_dir/model.pt`` (a copy)
    and ``out_dir/model.json`` (the card with the new thresholds and validation metrics).
    With ``config.tta`` the maps are flip-averaged and the thresholds go to the card's
    ``thresholds_tta`` (used by ``predict --tta``); the rest of the card is kept.

    Parameters
    ----------
    model_dir : str or Path
        Model to tune.
    data : str or Path
        Annotated runs: a copick config or Kaggle root with tomograms and picks.
    out_dir : str or Path
        Where the tuned model goes (must differ from ``model_dir``; a folder already
        holding a model is refused unless ``overwrite``).
    config : PredictConfig, optional
        Prediction settings (its thresholds and min_score are replaced).
    tomo_type : str
        Reconstruction type to read.
    runs : list of str, optional
        Only these runs.
    truth : str or Path, optional
        Annotations, if not the picks in ``data`` (any source
        :func:`cryopick.io.picks.read_picks` reads); one user/session, duplicates merged.
    truth_user, truth_session : str, optional
        copick: read only annotations of this user / session (e.g. ``curation``).
    beta : float
        F-beta's beta.
    tolerance : float
        Take the lowest threshold within this F-beta of the best (see
        :func:`cryopick.evaluation.metric.tune_thresholds`).
    show_progress : bool
        Show progress bars.
    overwrite : bool
        Replace a model already in ``out_dir``.

    Returns
    -------
    dict of str to float
        The tuned thresholds.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if out_dir.resolve() == model_dir.resolve():
        raise InputError(out_dir, "the tuned model must go to a new folder, not the input model")
    check_model_folder(out_dir, overwrite=overwrite)
    card = read_model_card(model_dir)
    tomograms = read_inputs(data, tomo_type, runs)
    truth_source = truth if truth is not None else data
    # one annotation source, duplicates merged: cryopick's own picks never become truth
    truth_df = read_truth(truth_source, user_id=truth_user, session_id=truth_session)
    names = {t.name for t in tomograms}
    truth_df = truth_df[truth_df["experiment"].isin(names)]
    if truth_df.empty:
        raise InputError(
            truth_source, "no annotated picks for the runs found; cannot tune thresholds"
        )
    # every peak above a low floor is a candidate; tuning picks the threshold per class
    config = (config or PredictConfig()).model_copy(
        update={"thresholds": _floor_thresholds(), "min_score": 0.0}
    )
    candidates = predict_tomograms(tomograms, model_dir, config, show_progress=show_progress)
    thresholds = tune_thresholds(truth_df, candidates, beta=beta, tolerance=tolerance)
    kept = candidates[
        candidates["score"] >= candidates["particle_type"].map(thresholds).fillna(math.inf)
    ]
    result = score_picks(truth_df, kept, beta=beta)
    validation = [
        ClassMetrics(
            particle_type=row.particle_type,
            precision=float(row.precision),
            recall=float(row.recall),
            fbeta=float(row.fbeta),
            tp=int(row.tp),
            fp=int(row.fp),
            fn=int(row.fn),
        )
        for row in result.per_class.itertuples()
    ]
    if config.tta:  # TTA maps score differently: keep the plain thresholds and metrics
        update = {"thresholds_tta": thresholds}
    else:
        update = {
            "thresholds": thresholds,
            "validation": validation,
            "score": float(result.score),
            "validation_data": [f"{data} ({len(tomograms)} runs, {tomo_type}; tuned)"],
        }
    new_card = card.model_copy(update=update)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / WEIGHTS_FILENAME) as tmp:
        shutil.copyfile(model_dir / WEIGHTS_FILENAME, tmp)
    write_text_atomic(out_dir / CARD_FILENAME, new_card.to_json())
    log.info("tuned thresholds written to %s (score %.4f)", out_dir, result.score)
    return thresholds


def _floor_thresholds() -> dict[str, float]:
    return dict.fromkeys(PARTICLE_NAMES, TUNING_MIN_SCORE)
