"""``cryopick convert``: picks from one format to another (CSV, Kaggle, STAR, copick), in Å.

Reads what ``evaluate`` reads (a CSV, a Kaggle submission, a RELION-5 / RELION-4 / Warp
STAR file, a copick pick file or project) and writes CSV, a Kaggle submission or a STAR
file: RELION-5 (Å from the tomogram centre; the shapes come from ``--tomograms``) or, with
``--to-pixel-A``, RELION-4 / Warp positions in pixels of that size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cryopick.cli.app import (
    PicksSessionOption,
    PicksUserOption,
    StarPixelOption,
    TomoTypeOption,
    app,
    report_input_errors,
)
from cryopick.core.errors import InputError


@app.command()
@report_input_errors
def convert(
    source: Annotated[
        Path, typer.Argument(help="Picks: CSV, Kaggle CSV, STAR, copick file or project.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output file (.csv or .star).")],
    format: Annotated[
        str | None, typer.Option(help="csv, kaggle or star (default: from the extension).")
    ] = None,
    tomograms: Annotated[
        Path | None,
        typer.Option(help="Tomograms giving shapes and voxel sizes (RELION-5 STAR in or out)."),
    ] = None,
    tomo_type: TomoTypeOption = "denoised",
    star_pixel_A: StarPixelOption = None,
    to_pixel_A: Annotated[
        float | None,
        typer.Option(
            "--to-pixel-A",
            min=0.01,
            help="Write STAR positions in pixels of this size (rlnCoordinateX/Y/Z, as RELION-4 "
            "and Warp read them) instead of RELION-5's Å from the tomogram centre.",
        ),
    ] = None,
    particle_type: Annotated[
        str | None,
        typer.Option(help="Particle type of every pick of a STAR file not written by cryopick."),
    ] = None,
    picks_user: PicksUserOption = None,
    picks_session: PicksSessionOption = None,
) -> None:
    """Convert picks between formats (CSV, Kaggle, STAR in Å or pixels), positions checked."""
    from cryopick.io.atomic import check_output_file
    from cryopick.io.picks import read_picks, write_picks

    fmt = format or ("star" if output.suffix.lower() == ".star" else "csv")
    if fmt not in ("csv", "kaggle", "star"):
        raise InputError(None, f"--format {fmt!r}: convert writes csv, kaggle or star")
    if to_pixel_A is not None and fmt != "star":
        raise InputError(None, "--to-pixel-A applies to STAR output only")
    check_output_file(output, [source], (".star",) if fmt == "star" else (".csv",))
    shapes = None
    if tomograms is not None:
        from cryopick.io.tomograms import read_tomograms

        shapes = {t.name: (t.shape, t.spacing_A) for t in read_tomograms(tomograms, tomo_type)}
    picks = read_picks(
        source,
        tomogram_shapes=shapes,
        particle_type=particle_type,
        user_id=picks_user,
        session_id=picks_session,
        single_source=True,
        star_pixel_A=star_pixel_A,
    )
    if fmt == "star":
        write_picks(picks, output, format=fmt, tomogram_shapes=shapes, pixel_A=to_pixel_A)
    else:
        write_picks(picks, output, format=fmt)
    typer.echo(f"wrote {len(picks)} picks ({fmt}) to {output}")
