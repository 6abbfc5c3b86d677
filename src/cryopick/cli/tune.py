"""``cryopick tune``: re-tune a model's per-class thresholds and score calibration."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast, get_args

import typer

from cryopick.cli.app import (
    DeviceOption,
    OverwriteModelOption,
    PredictConfigOption,
    QuietOption,
    TomoTypeOption,
    app,
    load_predict_config,
    report_input_errors,
)

if TYPE_CHECKING:  # imported where used: they load pandas and torch
    from cryopick.evaluation.thresholds import ThresholdRule
    from cryopick.model.rescorer import FeatureSet


ToleranceOption = Annotated[
    float | None,
    typer.Option(
        min=0.0,
        help="Take the lowest threshold within this F-beta of the best [default: 0.02; "
        "0 for a model with a rescorer].",
    ),
]
ThresholdRuleOption = Annotated[
    str | None,
    typer.Option(
        "--threshold-rule",
        help="best-fbeta (where F-beta peaks on --data) or probability (F*/(1+beta^2) "
        "on the rescorer's probabilities) [default: probability with a rescorer].",
    ),
]
RescorerFloorOption = Annotated[
    float | None,
    typer.Option(
        min=0.0,
        max=1.0,
        help="Re-score only candidates whose raw peak value is above this (faster "
        "predictions; the rescorer is fitted on every peak above 0.05).",
    ),
]


@app.command()
@report_input_errors
def tune(
    data: Annotated[
        Path, typer.Option("--data", help="Annotated runs: copick config or Kaggle root.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for the tuned model copy.")],
    model: Annotated[
        Path | None,
        typer.Option("--model", help="Trained model folder to tune; default: the bundled model."),
    ] = None,
    tomo_type: TomoTypeOption = "denoised",
    truth: Annotated[
        Path | None, typer.Option(help="Annotations if not the picks in --data.")
    ] = None,
    truth_user: Annotated[str | None, typer.Option(help="copick: annotation user_id.")] = None,
    truth_session: Annotated[
        str | None, typer.Option(help="copick: annotation session_id.")
    ] = None,
    beta: Annotated[float, typer.Option(min=0.0, help="F-beta's beta.")] = 4.0,
    tolerance: ToleranceOption = None,
    device: DeviceOption = None,
    config: PredictConfigOption = None,
    quiet: QuietOption = False,
    overwrite: OverwriteModelOption = False,
    rescorer_data: Annotated[
        list[Path] | None,
        typer.Option(
            "--rescorer-data",
            help="Annotated projects (not --data's runs) to fit a rescorer on first: a "
            "second look at each candidate; repeat for several.",
        ),
    ] = None,
    rescorer_features: Annotated[
        str,
        typer.Option(
            help="Rescorer features: map, map+density (also the tomogram's density "
            "profile) or map+density+shape (also the density's shape)."
        ),
    ] = "map+density+shape",
    rule: ThresholdRuleOption = None,
    rescorer_floor: RescorerFloorOption = None,
    rescorer_tomo_type: Annotated[
        list[str] | None,
        typer.Option(
            help="Reconstruction of the rescorer's runs, in turn from run to run (repeat: "
            "e.g. denoised, wbp, ctfdeconvolved); default --tomo-type."
        ),
    ] = None,
    rescorer_members: Annotated[
        int,
        typer.Option(
            min=1,
            help="Networks the rescorer averages: more give steadier scores and a slower "
            "fit (about 10 s each on 2 cores for 250 000 candidates).",
        ),
    ] = 9,
) -> None:
    """Re-tune per-class thresholds (F-beta) and score calibration on annotated runs.

    Writes a tuned model copy; its picks' scores are calibrated probabilities. With
    --rescorer-data, a rescorer is fitted first and the thresholds apply to its scores.
    """
    from cryopick.evaluation.tuning import tune_model
    from cryopick.model import bundled_model_dir

    thresholds = tune_model(
        model or bundled_model_dir(),
        data,
        out,
        load_predict_config(config, device=device),
        tomo_type=tomo_type,
        truth=truth,
        truth_user=truth_user,
        truth_session=truth_session,
        beta=beta,
        tolerance=tolerance,
        show_progress=not quiet,
        overwrite=overwrite,
        rescorer_data=rescorer_data or [],
        rescorer_features=check_feature_set(rescorer_features),
        rule=None if rule is None else check_threshold_rule(rule),
        rescorer_floor=rescorer_floor,
        rescorer_tomo_types=rescorer_tomo_type or [],
        rescorer_members=rescorer_members,
    )
    for name, value in thresholds.items():
        typer.echo(f"{name:>20s}  {value:.4f}")
    typer.echo(f"tuned model (thresholds and score calibration) written to {out}")


def check_feature_set(name: str) -> FeatureSet:
    """Return ``name`` as a rescorer feature set (a one-line error for anything else)."""
    from cryopick.model.rescorer import FeatureSet

    return cast(FeatureSet, _check_choice(name, get_args(FeatureSet), "--rescorer-features"))


def check_threshold_rule(name: str) -> ThresholdRule:
    """Return ``name`` as a threshold rule (a one-line error for anything else)."""
    from cryopick.evaluation.thresholds import ThresholdRule

    return cast(ThresholdRule, _check_choice(name, get_args(ThresholdRule), "--threshold-rule"))


def _check_choice(name: str, choices: tuple[str, ...], option: str) -> str:
    """Return ``name`` if it is one of ``choices`` (a Literal's values), else a usage error."""
    if name in choices:
        return name
    raise typer.BadParameter(f"{name!r}: use {' or '.join(choices)}", param_hint=option)
