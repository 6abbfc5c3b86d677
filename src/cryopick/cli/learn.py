"""``cryopick learn``: from a particles file to a trained, tuned picker in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cryopick.cli.app import OverwriteModelOption, QuietOption, app, report_input_errors
from cryopick.core.errors import InputError, squeeze_error


@app.command()
@report_input_errors
def learn(
    particles_file: Annotated[
        Path, typer.Argument(help="Particles file (JSON) naming each type's map or model.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Model folder to write.")],
    minutes: Annotated[
        float, typer.Option("--minutes", help="Total time budget (simulate + train + tune).")
    ] = 20.0,
    spacing_A: Annotated[
        float, typer.Option("--spacing-A", help="Voxel size (Å) of your tomograms.")
    ] = 10.0,
    train_runs: Annotated[int, typer.Option("--train-runs", help="Simulated tomograms.")] = 8,
    val_runs: Annotated[int, typer.Option("--val-runs", help="Simulated validation ones.")] = 2,
    shape: Annotated[
        tuple[int, int, int] | None,
        typer.Option("--shape", help="Simulated size Z Y X in voxels (default: 1840x3840x3840 Å)."),
    ] = None,
    distractors: Annotated[
        str, typer.Option("--distractors", help="default, none, or a particles-format FILE.")
    ] = "default",
    init_from: Annotated[
        str,
        typer.Option("--init-from", help="bundled (fine-tune ours), none, or a model folder."),
    ] = "bundled",
    preset: Annotated[
        str, typer.Option("--preset", help="Simulator preset: czii or easy.")
    ] = "czii",
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    resume: Annotated[
        bool, typer.Option("--resume", help="Keep finished simulations, continue training.")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Progress bars (--no-progress = -q).")] = True,
    overwrite: OverwriteModelOption = False,
    quiet: QuietOption = False,
) -> None:
    """Simulate your particles, train a picker within --minutes, tune it, write the model."""
    from pydantic import ValidationError

    from cryopick.learn import LearnSettings, learn_particles

    try:
        settings = LearnSettings(
            minutes=minutes,
            spacing_A=spacing_A,
            train_runs=train_runs,
            val_runs=val_runs,
            shape=shape,
            preset=preset,
            distractors=distractors,
            init_from=None if init_from == "none" else init_from,
            seed=seed,
            device=device,
        )
    except ValidationError as err:
        raise InputError(None, f"invalid option: {squeeze_error(err)}") from None
    card = learn_particles(
        particles_file,
        out,
        settings,
        resume=resume,
        overwrite=overwrite,
        progress=progress and not quiet,
    )
    score = "n/a" if card.score is None else f"{card.score:.3f}"
    per_type = ", ".join(f"{m.particle_type} {m.fbeta:.3f}" for m in card.validation)
    typer.echo(f"model written to {out}: validation F4 {score} ({per_type})")
