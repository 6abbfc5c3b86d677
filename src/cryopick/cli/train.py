"""``cryopick train``: train the 3D U-Net on annotated and/or simulated tomograms."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cryopick.cli.app import OverwriteModelOption, QuietOption, app, report_input_errors
from cryopick.core.errors import InputError, squeeze_error


def _build_train_config(config_file: Path | None, settings: list[str], **given: Any) -> Any:
    """Build a TrainConfig from a JSON file, ``--set FIELD=VALUE`` items and the options given.

    Values of ``--set`` are parsed as JSON when they parse (numbers, lists, booleans), else
    taken as strings; dotted names reach nested settings (``architecture.widths=[8,16,32,64]``).
    """
    import json

    from cryopick.training.config import TrainConfig

    data: dict[str, Any] = {}
    if config_file is not None:
        try:
            data = json.loads(config_file.read_text())
        except (OSError, ValueError) as err:
            raise InputError(
                config_file, f"not a valid training config: {squeeze_error(err)}"
            ) from None
    for item in settings:
        key, sep, text = item.partition("=")
        if not sep:
            raise InputError(None, f"--set expects FIELD=VALUE, got {item!r}")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        *parents, leaf = key.strip().split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    data.update({k: v for k, v in given.items() if v is not None})
    try:
        return TrainConfig.model_validate(data)
    except ValueError as err:
        raise InputError(config_file, f"invalid training settings: {squeeze_error(err)}") from None


@app.command()
@report_input_errors
def train(
    out: Annotated[Path, typer.Option("--out", help="Output folder (model + checkpoint).")],
    data: Annotated[
        list[str] | None,
        typer.Option("--data", help="Training source (copick config, Kaggle root); repeatable."),
    ] = None,
    val: Annotated[
        list[str] | None,
        typer.Option("--val", help="Held-out validation source; repeatable."),
    ] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Optimiser steps.")] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda.")] = None,
    simulate: Annotated[
        int | None, typer.Option("--simulate", help="Simulate N fresh training runs first.")
    ] = None,
    particles: Annotated[
        Path | None,
        typer.Option(
            "--particles",
            help="Particles file (JSON) of the types to learn, and to simulate with --simulate "
            "(default: the types the training data's copick configs declare).",
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from OUT/checkpoint.pt exactly.")
    ] = False,
    init_from: Annotated[
        str | None,
        typer.Option(
            "--init-from", help="Fine-tune: start from this model folder ('bundled': ours)."
        ),
    ] = None,
    config_file: Annotated[
        Path | None, typer.Option("--config", help="TrainConfig JSON (e.g. a saved one).")
    ] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option("--set", help="Any TrainConfig field: FIELD=VALUE (see --show-config)."),
    ] = None,
    show_config: Annotated[
        bool, typer.Option("--show-config", help="Print the resulting TrainConfig and exit.")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Progress bar (--no-progress = -q).")] = True,
    overwrite: OverwriteModelOption = False,
    quiet: QuietOption = False,
) -> None:
    """Train the 3D U-Net on annotated and/or simulated tomograms.

    The network learns the particle types the training data declare (every --data and
    --val source must declare the same), or those of --particles.
    """
    config = _build_train_config(
        config_file,
        settings or [],
        data=data or None,
        val=val or None,
        steps=steps,
        device=device,
        simulate=simulate,
        particles=None if particles is None else str(particles),
        init_from=init_from,
    )
    if show_config:
        typer.echo(config.model_dump_json(indent=2))
        return
    if not config.data and not config.simulate and not resume:
        raise InputError(None, "no training data: give --data and/or --simulate N")
    from cryopick.training.trainer import train as run_training

    show = progress and not quiet
    card = run_training(config, out, resume=resume, progress=show, overwrite=overwrite)
    score = "n/a" if card.score is None else f"{card.score:.4f}"
    typer.echo(f"model written to {out} (step {card.steps}, validation F4 {score})")
