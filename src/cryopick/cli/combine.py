"""``cryopick combine``: several trained models as one ensemble model (logits averaged)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cryopick.cli.app import OverwriteModelOption, app, report_input_errors


@app.command()
@report_input_errors
def combine(
    models: Annotated[
        list[Path],
        typer.Option("--model", help="Trained model folder; repeat for each member (>= 2)."),
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for the combined model.")],
    average_weights: Annotated[
        bool,
        typer.Option(
            "--average-weights",
            help="Average the weights instead (one network, no slower): only for a model "
            "and its fine-tuned copies.",
        ),
    ] = False,
    flip_odd_members: Annotated[
        bool,
        typer.Option(
            "--flip-odd-members",
            help="Members 1, 3, ... see each window flipped in y and x (their logits flipped "
            "back): two views per window at no extra cost.",
        ),
    ] = False,
    overwrite: OverwriteModelOption = False,
) -> None:
    """Combine trained models into one ensemble whose logits are averaged.

    The models must share architecture, voxel size, normalisation, target and particle
    types. With --average-weights their weights are averaged instead, into one network of
    their architecture: for a model and copies fine-tuned from it, never for independently
    trained ones. With --flip-odd-members every second member sees each window flipped in
    y and x: the mean covers two views of the data for the time of one. The combined model
    has no thresholds yet: tune it with cryopick tune.
    """
    from cryopick.model import (
        average_model_weights,
        check_model_folder,
        combine_models,
        save_model,
    )

    given = [path.resolve() for path in models]
    if out.resolve() in given:
        raise typer.BadParameter("the combined model must go to a new folder", param_hint="--out")
    check_model_folder(out, overwrite=overwrite)
    if average_weights and flip_odd_members:
        raise typer.BadParameter(
            "is for an ensemble; --average-weights keeps the models' architecture",
            param_hint="--flip-odd-members",
        )
    if average_weights:
        network, card = average_model_weights(models)
        what = f"weight average of {len(models)} models"
    else:
        network, card = combine_models(models, flip_odd_members=flip_odd_members)
        what = f"ensemble of {card.architecture.members} networks"
    save_model(out, network, card)
    typer.echo(
        f"{what} written to {out}; "
        f"tune it before use: cryopick tune --model {out} --data ANNOTATED --out TUNED"
    )
