"""``cryopick simulate``: tomograms with exact truth, as a new copick project."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cryopick.cli.app import QuietOption, app, report_input_errors
from cryopick.core.errors import InputError
from cryopick.core.particles import SIMULATION_SPACING_RANGE_A


@app.command()
@report_input_errors
def simulate(
    out: Annotated[Path, typer.Argument(help="Folder of the copick project to write.")],
    runs: Annotated[int, typer.Option("--runs", min=1, help="Number of tomograms.")] = 1,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same data).")] = 0,
    shape: Annotated[
        tuple[int, int, int], typer.Option("--shape", help="Tomogram size Z Y X in voxels.")
    ] = (184, 630, 630),
    spacing_A: Annotated[float, typer.Option("--spacing-A", help="Voxel size in Å.")] = 10.0,
    preset: Annotated[
        str,
        typer.Option(
            "--preset",
            help="czii (realistic), varied (domain randomisation: imaging drawn per run "
            "from wide ranges) or easy (high SNR, fast tests).",
        ),
    ] = "czii",
    config: Annotated[
        Path | None,
        typer.Option("--config", help="JSON file of simulator settings overriding the preset."),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="Replace an earlier cryopick simulation in OUT."),
    ] = False,
    particles: Annotated[
        Path | None,
        typer.Option(
            "--particles",
            help="Particles file (JSON, see docs/own_particles.md): simulate these types "
            "instead of the six CZII ones.",
        ),
    ] = None,
    distractors: Annotated[
        str,
        typer.Option(
            "--distractors",
            help="Crowding proteins: default (packaged maps, plus the CZII maps not "
            "simulated), none, or a particles file of distractor maps/models.",
        ),
    ] = "default",
    quiet: QuietOption = False,
) -> None:
    """Simulate tomograms with ground-truth picks and labels as a copick project."""
    from cryopick.core.particles_file import load_particles_file
    from cryopick.simulate.project import simulate_project
    from cryopick.simulate.settings_file import load_config

    settings = load_config(preset, config)
    particle_set = None if particles is None else load_particles_file(particles)
    if min(shape) < 16:
        raise InputError(None, f"--shape must be at least 16 voxels per axis, got {shape}")
    low_A, high_A = SIMULATION_SPACING_RANGE_A
    if not low_A <= spacing_A <= high_A:
        raise InputError(None, f"--spacing-A must lie in {low_A:g}..{high_A:g} Å, got {spacing_A}")
    path = simulate_project(
        out,
        runs,
        seed=seed,
        shape=shape,
        spacing_A=spacing_A,
        preset=settings,
        overwrite=overwrite,
        particles=particle_set,
        distractors=distractors,
        progress=not quiet,
    )
    typer.echo(f"wrote {runs} simulated run(s): {path}")
