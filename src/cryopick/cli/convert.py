"""``cryopick convert``: picks from one format to another (CSV, Kaggle, STAR, copick), in Å.

Reads what ``evaluate`` reads (a CSV, a Kaggle submission, a RELION-5 / RELION-4 / Warp
STAR file, a copick pick file or project) and writes CSV, a Kaggle submission, a STAR
file (RELION-5: Å from the tomogram centre, the shapes from ``--tomograms``; or, with
``--to-pixel-A``, RELION-4 / Warp positions in pixels of that size), or copick pick files
of one user and session into a project (refused where that user and session already have
pick files there, unless ``--overwrite``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cryopick.cli.app import (
    PicksSessionOption,
    PicksUserOption,
    SpacingOption,
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
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Output file (.csv, .star) or copick project.")
    ],
    format: Annotated[
        str | None,
        typer.Option(help="csv, kaggle, star or copick (default: from the extension)."),
    ] = None,
    tomograms: Annotated[
        Path | None,
        typer.Option(help="Tomograms giving shapes and voxel sizes (RELION-5 STAR in or out)."),
    ] = None,
    tomo_type: TomoTypeOption = "denoised",
    spacing_A: SpacingOption = None,
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
    user_id: Annotated[str, typer.Option(help="copick output: the picks' user_id.")] = "converted",
    session_id: Annotated[str, typer.Option(help="copick output: the picks' session_id.")] = "0",
    overwrite: Annotated[
        bool, typer.Option(help="copick output: replace this user and session's pick files.")
    ] = False,
) -> None:
    """Convert picks between formats (CSV, Kaggle, STAR in Å or pixels), positions checked."""
    from cryopick.io.atomic import check_output_file
    from cryopick.io.picks import read_picks, write_picks

    fmt = format or ("star" if output.suffix.lower() == ".star" else "csv")
    if fmt not in ("csv", "kaggle", "star", "copick"):
        raise InputError(None, f"--format {fmt!r}: convert writes csv, kaggle, star or copick")
    if to_pixel_A is not None and fmt != "star":
        raise InputError(None, "--to-pixel-A applies to STAR output only")
    if fmt == "copick":
        check_copick_output(output, user_id, session_id, overwrite)
    else:
        check_output_file(output, [source], (".star",) if fmt == "star" else (".csv",))
    from cryopick.io.tomograms import read_tomogram_shapes

    shapes = None if tomograms is None else read_tomogram_shapes(tomograms, tomo_type, spacing_A)
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
    elif fmt == "copick":
        write_picks(picks, output, format=fmt, user_id=user_id, session_id=session_id)
    else:
        write_picks(picks, output, format=fmt)
    typer.echo(f"wrote {len(picks)} picks ({fmt}) to {output}")


def check_copick_output(project: Path, user_id: str, session_id: str, overwrite: bool) -> None:
    """Refuse to replace pick files of ``user_id`` / ``session_id`` in ``project``.

    Raises
    ------
    InputError
        If ``project`` is not a copick project (or a new folder), or holds pick files of
        that user and session and ``overwrite`` is not set.
    """
    from cryopick.io.picks.copick_read import list_pick_files
    from cryopick.io.picks.copick_write import resolve_copick_target

    prefix = f"{user_id}_{session_id}_"
    existing = [
        f for f in list_pick_files(resolve_copick_target(project)) if f.name.startswith(prefix)
    ]
    if existing and not overwrite:
        raise InputError(
            project,
            f"holds {len(existing)} pick file(s) of user {user_id!r}, session {session_id!r} "
            f"(e.g. {existing[0]}): choose another --user-id / --session-id, or --overwrite",
        )
