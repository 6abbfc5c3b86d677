"""``cryopick evaluate``: score picks against ground truth with the CZII metric.

The particle types scored, their radii (a pick matches within half the radius) and their
weights come from ``--particles FILE``, else from the truth project's copick config
(:func:`cryopick.io.picks.copick_config.read_particle_set`), else the CZII six.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cryopick.cli.app import (
    TRUTH_USER_HELP,
    PicksSessionOption,
    PicksUserOption,
    SpacingOption,
    StarPixelOption,
    TruthSessionOption,
    app,
    report_input_errors,
)
from cryopick.core.errors import InputError

if TYPE_CHECKING:
    from cryopick.core.particles import ParticleSet

log = logging.getLogger(__name__)

_TYPE_HELP = "Particle type of every pick of a {} STAR file not written by cryopick."
_PICKS_SOURCE_HELP = (
    "CSV (Kaggle submission or experiment,particle_type,x,y,z[,score] in Å), RELION-5 STAR "
    "(needs --tomograms) or RELION-4 / Warp STAR (pixels: --star-pixel-A), copick pick "
    "file or config JSON, or Kaggle root / overlay folder."
)


@app.command()
@report_input_errors
def evaluate(
    truth: Annotated[Path, typer.Option("--truth", help=f"Ground truth: {_PICKS_SOURCE_HELP}")],
    picks: Annotated[Path, typer.Option("--picks", help=f"Picks to score: {_PICKS_SOURCE_HELP}")],
    json_output: Annotated[
        bool, typer.Option("--json", help="Print machine-readable JSON only.")
    ] = False,
    beta: Annotated[float, typer.Option("--beta", min=0.0, help="F-beta's beta.")] = 4.0,
    tomograms: Annotated[
        Path | None,
        typer.Option(help="Tomograms (project, folder, file) giving shapes for STAR inputs."),
    ] = None,
    tomo_type: Annotated[
        str, typer.Option("--tomo-type", help="Tomogram type read from --tomograms projects.")
    ] = "denoised",
    spacing_A: SpacingOption = None,
    truth_user: Annotated[str | None, typer.Option(help=TRUTH_USER_HELP)] = None,
    truth_session: TruthSessionOption = None,
    picks_user: PicksUserOption = None,
    picks_session: PicksSessionOption = None,
    particle_type: Annotated[
        str | None, typer.Option("--particle-type", help=_TYPE_HELP.format("--picks"))
    ] = None,
    truth_particle_type: Annotated[
        str | None, typer.Option("--truth-particle-type", help=_TYPE_HELP.format("--truth"))
    ] = None,
    star_pixel_A: StarPixelOption = None,
    particles: Annotated[
        Path | None,
        typer.Option(
            "--particles",
            help="Particles file (JSON) giving the types, radii (radius_A) and weights scored; "
            "default: the truth project's copick config, else the CZII six.",
        ),
    ] = None,
) -> None:
    """Score picks against ground truth with the CZII metric (per-type F-beta, weighted)."""
    import json

    from cryopick.console import format_score_table
    from cryopick.evaluation.metric import score_picks
    from cryopick.io.picks import check_experiments, check_position_scale, read_picks, read_truth

    particle_set = evaluation_particle_set(truth, particles)
    from cryopick.io.tomograms import read_tomogram_shapes

    shapes = None if tomograms is None else read_tomogram_shapes(tomograms, tomo_type, spacing_A)
    truth_df = read_truth(
        truth,
        tomogram_shapes=shapes,
        particle_type=truth_particle_type,
        user_id=truth_user,
        session_id=truth_session,
        particles=particle_set,
        star_pixel_A=star_pixel_A,
    )
    picks_df = read_picks(
        picks,
        tomogram_shapes=shapes,
        particle_type=particle_type,
        user_id=picks_user,
        session_id=picks_session,
        single_source=True,
        particles=particle_set,
        star_pixel_A=star_pixel_A,
    )
    if truth_df.empty:
        raise InputError(truth, "no ground-truth picks found")
    check_experiments(truth_df, picks_df, truth, picks)
    check_position_scale(truth_df, picks_df, picks)
    result = score_picks(truth_df, picks_df, beta=beta, particles=particle_set)
    if json_output:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        typer.echo(format_score_table(result), nl=False)


def evaluation_particle_set(truth: Path, particles_file: Path | None) -> ParticleSet:
    """Return the set scored: ``particles_file``'s, else the truth project's, else CZII.

    Radii a particles file leaves out come from the truth project's config (same types),
    else from the densities. When the truth project's config declares another set, a
    warning names the differences.

    Raises
    ------
    InputError
        For a particles file that cannot be used, or a truth project config whose objects
        cannot form a set.
    """
    from cryopick.core.particles import default_particle_set
    from cryopick.core.particles_file import complete_radii, load_particles_file
    from cryopick.io.picks.copick_read import project_particle_set

    declared = project_particle_set(truth) if truth.exists() else None
    if particles_file is None:
        return declared or default_particle_set()
    particle_set = complete_radii(load_particles_file(particles_file, check_maps=False), [declared])
    if declared is not None and (differences := particle_set.describe_differences(declared)):
        log.warning(
            "%s: the truth project declares another particle set (%s); scoring with %s",
            truth,
            differences,
            particles_file,
        )
    return particle_set
