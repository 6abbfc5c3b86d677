"""``cryopick report``: one self-contained HTML page to check picks by eye."""

from __future__ import annotations

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

if TYPE_CHECKING:
    from cryopick.core.particles import ParticleSet


@app.command()
@report_input_errors
def report(
    input_path: Annotated[
        Path,
        typer.Argument(
            metavar="INPUT",
            help="Tomograms: copick config JSON, Kaggle root, folder of MRC/Zarr, one file.",
        ),
    ],
    picks: Annotated[Path, typer.Option("--picks", help="Picks to show (any picks format).")],
    out: Annotated[Path, typer.Option("--out", help="HTML file to write.")],
    truth: Annotated[
        Path | None,
        typer.Option("--truth", help="Ground truth: adds the metric, TP/FP/miss styles, curves."),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option("--model", help="Model folder (model.json): card, learning curve."),
    ] = None,
    particles: Annotated[
        Path | None,
        typer.Option(
            "--particles",
            help="Particles file (JSON) naming the picks' types, when neither --model nor "
            "the picks' copick config declares them.",
        ),
    ] = None,
    png_dir: Annotated[
        Path | None, typer.Option("--png-dir", help="Also write every figure here as PNG.")
    ] = None,
    tomo_type: Annotated[
        str | None, typer.Option("--tomo-type", help="Tomogram type (default: denoised).")
    ] = None,
    slices: Annotated[
        int | None,
        typer.Option("--slices", min=1, help="XY slices per tomogram, evenly spaced (default: 4)."),
    ] = None,
    z: Annotated[
        list[int] | None, typer.Option("--z", help="Show the XY slice at this z index (repeat).")
    ] = None,
    slab: Annotated[
        int | None,
        typer.Option("--slab", min=1, help="Average this many slices per panel (default: 1)."),
    ] = None,
    runs: Annotated[
        list[str] | None, typer.Option("--run", help="Only this run (repeat); default all.")
    ] = None,
    truth_user: Annotated[str | None, typer.Option(help=TRUTH_USER_HELP)] = None,
    truth_session: TruthSessionOption = None,
    picks_user: PicksUserOption = None,
    picks_session: PicksSessionOption = None,
    star_pixel_A: StarPixelOption = None,
    particle_type: Annotated[
        str | None,
        typer.Option(help="Particle type of every pick of a STAR file not written by cryopick."),
    ] = None,
    spacing_A: SpacingOption = None,
) -> None:
    """Write one self-contained HTML page to check picks by eye (slices, metrics, model)."""
    from cryopick.report import ReportConfig, write_report

    particle_set = None if particles is None else load_report_particles(particles)

    options = {
        "tomo_type": tomo_type,
        "n_xy_slices": slices,
        "xy_slices": z or None,
        "slab_voxels": slab,
        "runs": runs or None,
        "truth_user": truth_user,
        "truth_session": truth_session,
        "picks_user": picks_user,
        "picks_session": picks_session,
        "star_pixel_A": star_pixel_A,
        "particle_type": particle_type,
        "spacing_A": spacing_A,
    }
    config = ReportConfig(**{k: v for k, v in options.items() if v is not None})
    path = write_report(
        input_path, picks, out, truth, model, png_dir, config, particles=particle_set
    )
    typer.echo(f"wrote {path}")


def load_report_particles(path: Path) -> ParticleSet:
    """Read the particles file of ``report --particles``; missing radii are measured.

    Raises
    ------
    InputError
        As :func:`cryopick.core.particles_file.load_particles_file`.
    """
    from cryopick.core.particles_file import complete_radii, load_particles_file

    return complete_radii(load_particles_file(path, check_maps=False))
